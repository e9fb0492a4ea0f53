"""Pictures of a scenario, for the sim camera: the people and objects the thermal sim sees.

`Scenario.camera_view(t)` places faces, bodies and objects in normalized image coordinates
with the same geometry the thermal renderer uses, so at any scene time the person walking up
in the video is the one warming the AMG8833's pixels. This module only paints those regions
over a fixed room: flat shapes, no lighting, cheap enough for 640x480 at 30 fps in numpy.

Pixels are B, G, R in memory (what picamera2 calls RGB888 and OpenCV uses).
"""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

from appliance.sim.scenario import HEAD_HEIGHT_M, NECK_HEIGHT_M, TORSO_HEIGHT_M, ImageRegion

Color = tuple[int, int, int]  # B, G, R

WALL: Color = (196, 212, 224)
WALL_TOP: Color = (176, 194, 210)
FLOOR: Color = (92, 112, 134)
DOOR: Color = (62, 92, 132)
DOOR_FRAME: Color = (210, 220, 228)
SKIN: tuple[Color, ...] = ((128, 168, 230), (102, 142, 205), (76, 112, 168), (56, 82, 122))
HAIR: tuple[Color, ...] = ((30, 40, 50), (40, 70, 110), (90, 140, 190), (120, 120, 125))
SHIRT: tuple[Color, ...] = ((160, 90, 40), (50, 60, 170), (70, 140, 60), (150, 150, 150), (40, 40, 40))
EYE: Color = (40, 30, 30)
CUP: Color = (235, 235, 240)
COFFEE: Color = (30, 50, 80)


def _pick(options: tuple[Color, ...], name: str, salt: int) -> Color:
    # Stable across processes and runs (unlike hash()): a person keeps their looks.
    return options[zlib.crc32(name.encode(), salt) % len(options)]


class SceneRenderer:
    """Paints camera_view regions over a fixed background into (height, width, 3) uint8 frames."""

    def __init__(self, width: int, height: int, seed: int = 0) -> None:
        self.width = width
        self.height = height
        self.background = self._room(width, height, seed)

    @staticmethod
    def _room(width: int, height: int, seed: int) -> npt.NDArray[np.uint8]:
        img = np.empty((height, width, 3), dtype=np.float32)
        shade = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        img[:] = np.array(WALL_TOP, np.float32) * (1 - shade) + np.array(WALL, np.float32) * shade
        floor_top = int(height * 0.78)
        img[floor_top:] = FLOOR
        # A door behind the visitor, so the picture has edges to code and to look at.
        x0, x1 = int(width * 0.62), int(width * 0.86)
        y0 = int(height * 0.18)
        img[y0:floor_top, x0:x1] = DOOR_FRAME
        border = max(2, width // 80)
        img[y0 + border : floor_top, x0 + border : x1 - border] = DOOR
        # A faint fixed texture: real walls are not flat, and a flat picture codes unrealistically small.
        rng = np.random.default_rng(seed)
        img += rng.normal(0.0, 2.0, (height, width, 1)).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)

    def render(
        self, regions: list[ImageRegion], out: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """A frame with the regions drawn in the given order (camera_view lists them far to near)."""
        if out is None:
            out = np.empty_like(self.background)
        np.copyto(out, self.background)
        for region in regions:
            if region.kind == "body":
                self._body(out, region)
            elif region.kind == "face":
                self._face(out, region)
            else:
                self._object(out, region)
        return out

    # --- shapes, in pixels ----------------------------------------------------------------------

    def _box(self, r: ImageRegion) -> tuple[float, float, float, float]:
        """Centre x, centre y, half width, half height in pixels."""
        return r.u * self.width, r.v * self.height, r.width * self.width / 2, r.height * self.height / 2

    def _ellipse(
        self, img: npt.NDArray[np.uint8], cx: float, cy: float, rx: float, ry: float, color: Color
    ) -> None:
        if rx < 0.5 or ry < 0.5:
            return
        x0, x1 = max(0, int(cx - rx)), min(self.width, int(np.ceil(cx + rx)) + 1)
        y0, y1 = max(0, int(cy - ry)), min(self.height, int(np.ceil(cy + ry)) + 1)
        if x0 >= x1 or y0 >= y1:
            return
        dx = ((np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / rx) ** 2
        dy = ((np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / ry) ** 2
        mask = dy[:, None] + dx[None, :] <= 1.0
        img[y0:y1, x0:x1][mask] = color

    def _rect(
        self, img: npt.NDArray[np.uint8], x0: float, y0: float, x1: float, y1: float, color: Color
    ) -> None:
        xa, xb = max(0, round(x0)), min(self.width, round(x1))
        ya, yb = max(0, round(y0)), min(self.height, round(y1))
        if xa < xb and ya < yb:
            img[ya:yb, xa:xb] = color

    def _body(self, img: npt.NDArray[np.uint8], r: ImageRegion) -> None:
        cx, cy, hw, hh = self._box(r)
        color = _pick(SHIRT, r.name, 1)
        top = cy - hh
        shoulder = hw * 0.35  # rounded shoulders: an ellipse cap over the torso's rectangle
        # The neck reaches up behind the chin (the face is drawn after the body, over it).
        neck_top = top - 2 * hh * (NECK_HEIGHT_M + HEAD_HEIGHT_M * 0.3) / TORSO_HEIGHT_M
        neck_hw = hw * 0.2
        self._rect(img, cx - neck_hw, neck_top, cx + neck_hw, top + shoulder, _pick(SKIN, r.name, 2))
        self._ellipse(img, cx, top + shoulder, hw, shoulder, color)
        self._rect(img, cx - hw, top + shoulder, cx + hw, cy + hh, color)

    def _face(self, img: npt.NDArray[np.uint8], r: ImageRegion) -> None:
        cx, cy, hw, hh = self._box(r)
        skin = _pick(SKIN, r.name, 2)
        # Hair: a slightly larger ellipse behind the face, showing above the forehead.
        self._ellipse(img, cx, cy - hh * 0.08, hw * 1.04, hh * 0.98, _pick(HAIR, r.name, 3))
        self._ellipse(img, cx, cy + hh * 0.06, hw * 0.92, hh * 0.9, skin)
        eye_r = max(1.0, hw * 0.1)
        for side in (-1, 1):
            self._ellipse(img, cx + side * hw * 0.38, cy - hh * 0.02, eye_r * 1.3, eye_r, EYE)
        self._rect(
            img, cx - hw * 0.3, cy + hh * 0.45, cx + hw * 0.3, cy + hh * 0.45 + max(1.0, hh * 0.05), EYE
        )

    def _object(self, img: npt.NDArray[np.uint8], r: ImageRegion) -> None:
        cx, cy, hw, hh = self._box(r)
        self._rect(img, cx - hw, cy - hh, cx + hw, cy + hh, CUP)
        self._ellipse(img, cx, cy - hh, hw, max(1.0, hh * 0.18), COFFEE)
