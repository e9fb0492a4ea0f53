"""Where each region of the status screen sits, for any screen size (pure; no pygame).

Landscape (the 7" 800x480 panel, a 1280x720 monitor):

    +--------------------------------------------------+
    | status bar: call sign, "not paired", watching     |  top
    +------------------------+-------------------------+
    |  camera preview, 4:3   |  icon                   |
    |  + thermal overlay     |  title                  |  preview | panel
    |  + face guide   [pip]  |  body / reading / code  |
    +------------------------+-------------------------+
    | small print: not a medical device                 |  bottom
    +--------------------------------------------------+

Portrait (a screen mounted on its side) stacks the preview above the panel. Sizes are
in pixels; `unit` scales type and strokes from the 800x480 design size.
"""

from __future__ import annotations

from dataclasses import dataclass

Box = tuple[int, int, int, int]  # x, y, width, height (pygame.Rect takes it as is)

DESIGN_W, DESIGN_H = 800, 480


@dataclass(frozen=True, slots=True)
class Layout:
    width: int
    height: int
    unit: float
    top: Box
    preview: Box
    panel: Box
    bottom: Box
    pip: Box
    portrait: bool

    def font_px(self, design_px: float) -> int:
        """A type size given at the 800x480 design size, scaled to this screen."""
        return max(10, round(design_px * self.unit))


def _inset(box: Box, margin: int) -> Box:
    x, y, w, h = box
    return (x + margin, y + margin, max(1, w - 2 * margin), max(1, h - 2 * margin))


def _fit_4_3(box: Box) -> Box:
    """The largest 4:3 box centred in box."""
    x, y, w, h = box
    pw = min(w, h * 4 // 3)
    ph = pw * 3 // 4
    return (x + (w - pw) // 2, y + (h - ph) // 2, pw, ph)


def compute_layout(width: int, height: int) -> Layout:
    if width < 16 or height < 16:
        raise ValueError(f"screen {width}x{height} is too small to lay out")
    unit = min(width / DESIGN_W, height / DESIGN_H)
    portrait = height > width * 1.1
    top_h = max(24, round(0.09 * height if not portrait else 0.06 * height))
    bottom_h = max(18, round(0.07 * height if not portrait else 0.05 * height))
    top: Box = (0, 0, width, top_h)
    bottom: Box = (0, height - bottom_h, width, bottom_h)
    middle_y, middle_h = top_h, height - top_h - bottom_h
    margin = max(4, round(12 * unit))
    if portrait:
        preview_area: Box = (0, middle_y, width, min(middle_h // 2, width * 3 // 4 + 2 * margin))
        panel: Box = (0, middle_y + preview_area[3], width, middle_h - preview_area[3])
    else:
        preview_w = min(width // 2, (middle_h - 2 * margin) * 4 // 3 + 2 * margin)
        preview_area = (0, middle_y, preview_w, middle_h)
        panel = (preview_w, middle_y, width - preview_w, middle_h)
    preview = _fit_4_3(_inset(preview_area, margin))
    panel = _inset(panel, margin)
    px, py, pw, _ = preview
    pip_w = max(32, pw // 3)
    pip_h = pip_w * 3 // 4
    pip: Box = (px + pw - pip_w - margin // 2, py + margin // 2, pip_w, pip_h)
    return Layout(width, height, unit, top, preview, panel, bottom, pip, portrait)
