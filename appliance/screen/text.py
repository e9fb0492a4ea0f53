"""Type for the status screen: fonts, a cache of rendered strings, wrapping and fitting.

Text is fitted before it is drawn: a block is wrapped to its width, and its type shrinks
until it fits its line limit, so a long German sentence stays inside its panel instead of
running over the edge. Every line drawn is recorded as a DrawnText for tests.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pygame

from appliance.screen.layout import Box
from appliance.screen.palette import RGB

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)
REGULAR, BOLD = "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"
TEXT_CACHE = 256
MIN_PX = 11
# No block on this screen holds more; a longer string (a code or a URL from another machine)
# is cut before wrapping, which measures it word by word.
MAX_TEXT = 1000


@dataclass(frozen=True, slots=True)
class DrawnText:
    role: str
    text: str
    rect: Box
    size: int
    bold: bool
    colour: RGB
    background: RGB


def _font_file(name: str) -> str | None:
    for d in FONT_DIRS:
        if (d / name).is_file():
            return str(d / name)
    return None


class Fonts:
    """DejaVu Sans where installed (fonts-dejavu-core: every Latin script the catalogue needs),
    else pygame's bundled font. Surfaces of rendered strings are cached (LRU)."""

    def __init__(self) -> None:
        if not pygame.font.get_init():
            pygame.font.init()
        self._files = {False: _font_file(REGULAR), True: _font_file(BOLD)}
        self._fonts: dict[tuple[int, bool], pygame.font.Font] = {}
        self._cache: OrderedDict[tuple[str, int, bool, RGB, RGB], pygame.Surface] = OrderedDict()

    def font(self, size: int, bold: bool = False) -> pygame.font.Font:
        key = (size, bold)
        font = self._fonts.get(key)
        if font is None:
            font = pygame.font.Font(self._files[bold], size)
            if self._files[bold] is None and bold:
                font.set_bold(True)
            self._fonts[key] = font
        return font

    def render(self, text: str, size: int, bold: bool, colour: RGB, background: RGB) -> pygame.Surface:
        """Antialiased text on an opaque background (blits faster than per-pixel alpha)."""
        key = (text, size, bold, colour, background)
        surf = self._cache.get(key)
        if surf is None:
            surf = self.font(size, bold).render(text, True, colour, background)
            self._cache[key] = surf
            if len(self._cache) > TEXT_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return surf


def displayable(text: str) -> str:
    """text without what a font cannot draw: control and format characters (a NUL makes
    pygame's render raise; an escape or a bidi override draws as a box), lone surrogates
    (not encodable). Whitespace stays: wrapping splits on it."""
    if text.isprintable():
        return text[:MAX_TEXT]
    return "".join(ch for ch in text[:MAX_TEXT] if ch.isprintable() or ch.isspace())


def _pieces(font: pygame.font.Font, word: str, width: int) -> list[str]:
    """word cut into pieces no wider than width (at least one character each)."""
    pieces: list[str] = []
    current = ""
    for ch in word:
        if current and font.size(current + ch)[0] > width:
            pieces.append(current)
            current = ch
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


def wrap(font: pygame.font.Font, text: str, width: int, *, break_words: bool = False) -> list[str]:
    """Greedy word wrap. A word wider than the line stays whole on its own line (so `fit`
    shrinks the type for it), or with break_words is cut to the width: a URL, or a sentence
    in a script written without spaces (Chinese, Japanese, Thai), is one "word"."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        if break_words and font.size(word)[0] > width:
            if current:
                lines.append(current)
            *whole, current = _pieces(font, word, width)
            lines.extend(whole)
            continue
        candidate = f"{current} {word}" if current else word
        if current and font.size(candidate)[0] > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


@dataclass(frozen=True, slots=True)
class Block:
    """A piece of text to fit: its role (for tests), its design size at 800x480, its limits."""

    role: str
    text: str
    px: float
    bold: bool = False
    max_lines: int = 3


@dataclass(frozen=True, slots=True)
class Fitted:
    block: Block
    lines: tuple[str, ...]
    size: int
    line_h: int

    @property
    def height(self) -> int:
        return self.line_h * len(self.lines)


def fit(fonts: Fonts, block: Block, width: int, px: int) -> Fitted:
    """Wrap block to width at px, shrinking the type until it fits max_lines lines; at the
    smallest size, words still wider than the line are cut, and lines past max_lines dropped."""
    size = max(MIN_PX, px)
    text = displayable(block.text)
    while True:
        font = fonts.font(size, block.bold)
        smallest = size <= MIN_PX
        lines = wrap(font, text, width, break_words=smallest)
        if (len(lines) <= block.max_lines and all(font.size(line)[0] <= width for line in lines)) or smallest:
            return Fitted(block, tuple(lines[: block.max_lines]), size, font.get_linesize())
        size = max(MIN_PX, round(size * 0.9))


def draw_fitted(
    surface: pygame.Surface,
    fonts: Fonts,
    fitted: Fitted,
    box: Box,
    colour: RGB,
    background: RGB,
    out: list[DrawnText],
    *,
    align: str = "center",
) -> int:
    """Draw fitted lines from box's top; returns the height used."""
    x, y, w, _ = box
    for i, line in enumerate(fitted.lines):
        surf = fonts.render(line, fitted.size, fitted.block.bold, colour, background)
        lx = x + (w - surf.get_width()) // 2 if align == "center" else x
        rect = surface.blit(surf, (lx, y + i * fitted.line_h))
        out.append(
            DrawnText(
                fitted.block.role,
                line,
                (rect.x, rect.y, rect.w, rect.h),
                fitted.size,
                fitted.block.bold,
                colour,
                background,
            )
        )
    return fitted.height
