"""Draw a View: the status screen's one drawing function, View (+ frames) -> surface.

Two layers, so a new camera frame does not pay for the text:

- the static layer: bars, panel, icon, words, progress ring, QR code. Drawn again only when
  the view apart from its frame seqs changes (`View.without_frames`), kept as a surface;
- the live layer: the camera picture (mirrored, as people expect of a screen facing them),
  the thermal overlay (mirrored the same way, so it stays on the face), the face guide and
  the staff video, drawn over a copy of the static layer on each new frame.

Every string drawn is recorded (`DrawnText`: role, text, rectangle, colours), so tests check
that the right words are on the screen, and where, by comparing pixels with the same text
drawn alone, rather than by trusting the view.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pygame

from appliance.screen import palette
from appliance.screen.icons import draw_camera_off, draw_icon, ring_segment
from appliance.screen.layout import Box, Layout, compute_layout
from appliance.screen.overlay import overlay_rgba
from appliance.screen.palette import RGB, TONES, ink_for
from appliance.screen.qr import qr_surface
from appliance.screen.text import Block, DrawnText, Fitted, Fonts, draw_fitted, fit
from appliance.screen.view import View

log = logging.getLogger(__name__)

# Type sizes at the 800x480 design size (Layout.font_px scales them).
TITLE_PX = 40
BODY_PX = 26
READING_PX = 76
CODE_PX = 80
NOTE_PX = 24
CHAT_PX = 20
SMALL_PX = 15
# The panel's content shrinks by this factor until it fits, down to MIN_SCALE.
SHRINK = 0.9
MIN_SCALE = 0.45


@dataclass
class RenderReport:
    texts: list[DrawnText] = field(default_factory=list)
    regions: dict[str, Box] = field(default_factory=dict)
    static_redrawn: bool = False

    def text_of(self, role: str) -> str:
        """Every line drawn in a role, joined by spaces (wrapped text comes back whole)."""
        return " ".join(t.text for t in self.texts if t.role == role)


@dataclass(frozen=True, slots=True)
class Frames:
    """The latest pixels; the view's seqs say whether each is current enough to draw."""

    camera: npt.NDArray[np.uint8] | None = None  # (h, w, 3) RGB
    thermal: Sequence[float] | None = None  # 64 degC, row-major
    remote: npt.NDArray[np.uint8] | None = None  # (h, w, 3) RGB


def _blend(a: RGB, b: RGB, t: float) -> RGB:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def _panel_blocks(view: View) -> list[Block]:
    blocks = [Block("title", view.title, TITLE_PX, bold=True, max_lines=2)]
    if view.reading is not None:
        blocks.append(Block("reading", view.reading, READING_PX, bold=True, max_lines=1))
    if view.note is not None:
        blocks.append(Block("note", view.note, NOTE_PX, bold=True, max_lines=2))
    if view.code is not None:
        # Spaced digits are easier to read out and type: "4 8 2 9 1 3".
        spaced = " ".join(view.code) if len(view.code) <= 8 else view.code
        blocks.append(Block("code", spaced, CODE_PX, bold=True, max_lines=1))
        if view.code_expiry is not None:
            blocks.append(Block("expiry", view.code_expiry, NOTE_PX, max_lines=1))
    blocks.append(Block("body", view.body, BODY_PX, max_lines=3))
    return blocks


class Renderer:
    """Draws Views onto a target surface of a fixed size. Not thread-safe; one per screen."""

    def __init__(self, size: tuple[int, int], fonts: Fonts | None = None) -> None:
        self.layout: Layout = compute_layout(*size)
        self.fonts = fonts or Fonts()
        self._static = pygame.Surface(size)
        self._static_key: View | None = None
        self._static_texts: list[DrawnText] = []
        self._static_regions: dict[str, Box] = {}
        self._camera: tuple[int, pygame.Surface] | None = None
        self._overlay: tuple[int, pygame.Surface] | None = None
        self._pip: tuple[int, pygame.Surface] | None = None
        self._qr_refused: str | None = None
        self.static_draws = 0

    def render(self, view: View, frames: Frames, target: pygame.Surface) -> RenderReport:
        key = view.without_frames()
        report = RenderReport()
        if key != self._static_key:
            self._static_texts = []
            self._static_regions = {}
            self._draw_static(view)
            self._static_key = key
            self.static_draws += 1
            report.static_redrawn = True
        target.blit(self._static, (0, 0))
        report.texts.extend(self._static_texts)
        report.regions.update(self._static_regions)
        if view.preview is not None:
            self._draw_live(view, frames, target, report)
        return report

    # --- the static layer -------------------------------------------------------------------

    def _text(self, block: Block, box: Box, colour: RGB, background: RGB, *, align: str = "center") -> int:
        fitted = fit(self.fonts, block, box[2], self.layout.font_px(block.px))
        return draw_fitted(
            self._static, self.fonts, fitted, box, colour, background, self._static_texts, align=align
        )

    def _draw_static(self, view: View) -> None:
        surf, lay = self._static, self.layout
        surf.fill(palette.BACKGROUND)
        self._draw_top(view)
        self._draw_bottom(view)
        if view.preview is None:
            self._draw_left(view)
        else:
            pygame.draw.rect(surf, palette.SURFACE, lay.preview)
            self._static_regions["preview"] = lay.preview
        tone_bg = TONES[view.tone]
        ink = ink_for(tone_bg)
        pygame.draw.rect(surf, tone_bg, lay.panel, border_radius=max(4, round(14 * lay.unit)))
        self._static_regions["panel"] = lay.panel
        px, py, pw, ph = lay.panel
        pad = max(6, round(16 * lay.unit))
        inner: Box = (px + pad, py + pad, pw - 2 * pad, ph - 2 * pad)
        ix, iy, iw, ih = inner
        bottom = iy + ih
        if view.chat:
            bottom = self._draw_chat(view, inner)
        self._draw_panel_content(view, (ix, iy, iw, bottom - iy), ink, tone_bg, pad)

    def _draw_panel_content(self, view: View, box: Box, ink: RGB, tone_bg: RGB, pad: int) -> None:
        """Icon (or progress ring) and text blocks, shrunk together until they fit, centred."""
        ix, iy, iw, ih = box
        blocks = _panel_blocks(view)
        has_icon = view.preview is not None
        icon_frac = 0.42 if view.progress is not None else 0.26
        scale = 1.0
        while True:
            fitted: list[Fitted] = [fit(self.fonts, b, iw, self.layout.font_px(b.px * scale)) for b in blocks]
            icon_s = round(min(iw, self.layout.panel[3]) * icon_frac * scale) if has_icon else 0
            gap = round(pad * 0.6 * scale)
            total = (
                sum(f.height for f in fitted) + gap * (len(fitted) - 1) + (icon_s + gap if has_icon else 0)
            )
            if total <= ih or scale <= MIN_SCALE:
                break
            scale *= SHRINK
        y = iy + max(0, (ih - total) // 2)
        if has_icon:
            icon_box: Box = (ix + (iw - icon_s) // 2, y, icon_s, icon_s)
            if view.progress is not None:
                self._draw_progress(icon_box, view.progress, ink, tone_bg)
            else:
                draw_icon(self._static, view.icon, icon_box, ink, tone_bg)
            self._static_regions["icon"] = icon_box
            y += icon_s + gap
        for f in fitted:
            y += (
                draw_fitted(self._static, self.fonts, f, (ix, y, iw, ih), ink, tone_bg, self._static_texts)
                + gap
            )

    def _draw_left(self, view: View) -> None:
        """Screens without a live picture: the QR code, or the icon large."""
        surf, lay = self._static, self.layout
        x, y, w, h = lay.preview
        if view.qr is not None:
            try:
                qr = qr_surface(view.qr, min(w, h))
            except ValueError as exc:
                # The URI comes from the room service: one too long for any QR code must not
                # cost the screen. The code itself is in the panel; the icon takes the QR's place.
                if view.qr != self._qr_refused:  # once, not on every tick of the countdown
                    self._qr_refused = view.qr
                    log.warning("pairing: no QR code for a %d-character URI: %s", len(view.qr), exc)
            else:
                rect = qr.get_rect(center=(x + w // 2, y + h // 2))
                surf.blit(qr, rect)
                self._static_regions["qr"] = (rect.x, rect.y, rect.w, rect.h)
                return
        s = round(min(w, h) * 0.6)
        box: Box = (x + (w - s) // 2, y + (h - s) // 2, s, s)
        colour = TONES[view.tone] if view.tone != "neutral" else palette.WHITE
        draw_icon(surf, view.icon, box, colour, palette.BACKGROUND)
        self._static_regions["icon"] = box

    def _draw_progress(self, box: Box, progress: float, ink: RGB, background: RGB) -> None:
        x, y, s, _ = box
        centre = (x + s / 2, y + s / 2)
        outer = 0.48 * s
        inner = outer - max(6, 0.12 * s)
        ring_segment(self._static, _blend(background, ink, 0.3), centre, outer, inner, 0.0, math.tau)
        ring_segment(self._static, ink, centre, outer, inner, 0.0, math.tau * max(0.0, min(1.0, progress)))
        self._static_regions["progress"] = box

    def _draw_top(self, view: View) -> None:
        surf, lay = self._static, self.layout
        x, y, w, h = lay.top
        pad = max(4, round(10 * lay.unit))
        self._static_regions["top"] = lay.top
        left = x + pad
        if view.sign is not None:
            bg = palette.SKY_BLUE
            ink = ink_for(bg)
            sign_w = w // 2 if view.status else w
            pygame.draw.rect(surf, bg, (x, y, sign_w, h))
            icon_s = h - 2 * pad
            draw_icon(surf, "speaker", (left, y + pad, icon_s, icon_s), ink, bg)
            self._static_regions["sign"] = (x, y, sign_w, h)
            block = Block("sign", view.sign, h * 0.5 / lay.unit, bold=True, max_lines=1)
            text_x = left + icon_s + pad
            fitted = fit(self.fonts, block, sign_w - (text_x - x) - pad, lay.font_px(block.px))
            box: Box = (text_x, y + (h - fitted.height) // 2, sign_w, h)
            draw_fitted(surf, self.fonts, fitted, box, ink, bg, self._static_texts, align="left")
            left = x + sign_w + pad
        if view.status:
            block = Block("status", "  \u00b7  ".join(view.status), h * 0.34 / lay.unit, max_lines=1)
            fitted = fit(self.fonts, block, x + w - left - pad, lay.font_px(block.px))
            box = (left, y + (h - fitted.height) // 2, x + w - left - pad, h)
            draw_fitted(
                surf,
                self.fonts,
                fitted,
                box,
                palette.MUTED,
                palette.BACKGROUND,
                self._static_texts,
                align="left",
            )

    def _draw_bottom(self, view: View) -> None:
        if view.small_print is None:
            return
        lay = self.layout
        x, y, w, h = lay.bottom
        pad = max(4, round(10 * lay.unit))
        self._static_regions["bottom"] = lay.bottom
        block = Block("small-print", view.small_print, SMALL_PX, max_lines=1)
        fitted = fit(self.fonts, block, w - 2 * pad, lay.font_px(block.px))
        box: Box = (x + pad, y + (h - fitted.height) // 2, w - 2 * pad, h)
        draw_fitted(
            self._static, self.fonts, fitted, box, palette.MUTED, palette.BACKGROUND, self._static_texts
        )

    def _draw_chat(self, view: View, inner: Box) -> int:
        """Chat lines at the bottom of the panel; returns the top of the chat box."""
        lay = self.layout
        ix, iy, iw, ih = inner
        pad = max(3, round(8 * lay.unit))
        px = lay.font_px(CHAT_PX)
        lines = [
            fit(self.fonts, Block("chat", f"{c.sender}: {c.text}", CHAT_PX, max_lines=2), iw - 2 * pad, px)
            for c in view.chat
        ]
        # At most 40 % of the panel: the prompt keeps the room it needs.
        while lines and sum(f.height for f in lines) + pad > ih * 0.4:
            lines.pop(0)
        if not lines:
            return iy + ih
        height = sum(f.height for f in lines) + pad
        top = iy + ih - height
        box: Box = (ix, top, iw, height)
        pygame.draw.rect(self._static, palette.SURFACE, box, border_radius=max(3, round(8 * lay.unit)))
        self._static_regions["chat"] = box
        y = top + pad // 2
        for f in lines:
            y += draw_fitted(
                self._static,
                self.fonts,
                f,
                (ix + pad, y, iw - 2 * pad, height),
                palette.WHITE,
                palette.SURFACE,
                self._static_texts,
                align="left",
            )
        return top - pad

    # --- the live layer ---------------------------------------------------------------------

    def _draw_live(self, view: View, frames: Frames, target: pygame.Surface, report: RenderReport) -> None:
        preview = view.preview
        assert preview is not None
        lay = self.layout
        x, y, w, h = lay.preview
        camera = preview.camera_seq != 0 and frames.camera is not None
        if camera and frames.camera is not None:
            target.blit(self._camera_surface(preview.camera_seq, frames.camera, (w, h)), (x, y))
            report.regions["camera"] = lay.preview
        if preview.thermal_seq and frames.thermal is not None:
            target.blit(self._overlay_surface(preview.thermal_seq, frames.thermal, (w, h)), (x, y))
            report.regions["overlay"] = lay.preview
        if preview.camera_problem is not None:
            s = round(min(w, h) * 0.3)
            box: Box = (x + (w - s) // 2, y + round(h * 0.5), s, s)
            draw_camera_off(target, box, palette.MUTED)
            block = Block("camera-problem", preview.camera_problem, BODY_PX, bold=True, max_lines=1)
            fitted = fit(self.fonts, block, w, lay.font_px(block.px))
            draw_fitted(
                target,
                self.fonts,
                fitted,
                (x, box[1] + s, w, h),
                palette.WHITE,
                palette.SURFACE,
                report.texts,
            )
        elif camera and preview.guide is not None:
            # The guide outlines where a face should be in the picture; without one it means nothing.
            colour = TONES[preview.guide] if preview.guide != "neutral" else palette.WHITE
            guide = pygame.Rect(0, 0, round(w * 0.42), round(h * 0.7))
            guide.center = (x + w // 2, y + round(h * 0.47))
            pygame.draw.ellipse(target, colour, guide, max(2, round(4 * lay.unit)))
            report.regions["guide"] = (guide.x, guide.y, guide.w, guide.h)
        if preview.pip_seq and frames.remote is not None:
            px, py, pw, ph = lay.pip
            target.blit(self._pip_surface(preview.pip_seq, frames.remote, (pw, ph)), (px, py))
            pygame.draw.rect(target, palette.WHITE, (px - 2, py - 2, pw + 4, ph + 4), 2)
            report.regions["pip"] = lay.pip

    def _camera_surface(self, seq: int, rgb: npt.NDArray[np.uint8], size: tuple[int, int]) -> pygame.Surface:
        if self._camera is None or self._camera[0] != seq:
            frame = pygame.image.frombuffer(rgb.tobytes(), (rgb.shape[1], rgb.shape[0]), "RGB")
            frame = pygame.transform.flip(frame, True, False)
            self._camera = (seq, pygame.transform.smoothscale(frame, size))
        return self._camera[1]

    def _overlay_surface(self, seq: int, pixels: Sequence[float], size: tuple[int, int]) -> pygame.Surface:
        if self._overlay is None or self._overlay[0] != seq:
            rgba = overlay_rgba(pixels, mirror=True)
            small = pygame.image.frombuffer(rgba.tobytes(), (rgba.shape[1], rgba.shape[0]), "RGBA")
            self._overlay = (seq, pygame.transform.smoothscale(small, size))
        return self._overlay[1]

    def _pip_surface(self, seq: int, rgb: npt.NDArray[np.uint8], size: tuple[int, int]) -> pygame.Surface:
        if self._pip is None or self._pip[0] != seq:
            frame = pygame.image.frombuffer(rgb.tobytes(), (rgb.shape[1], rgb.shape[0]), "RGB")
            self._pip = (seq, pygame.transform.smoothscale(frame, size))
        return self._pip[1]


def offscreen(size: tuple[int, int]) -> pygame.Surface:
    """A surface to render into without a display (tests, the benchmark): fonts only, no
    display or audio subsystem is started."""
    if not pygame.font.get_init():
        pygame.font.init()
    return pygame.Surface(size)
