"""The pure parts of the screen: the catalogue, the palette, the layout, the overlay, the frame
conversion and the QR modules."""

from __future__ import annotations

import itertools
import math
import re
import string
import typing

import msgspec
import numpy as np
import pytest
import segno

from appliance.bus.framering import frame_shape
from appliance.config import ScreenConfig
from appliance.screen import palette
from appliance.screen.frames import to_rgb
from appliance.screen.layout import compute_layout
from appliance.screen.overlay import COLD_C, HOT_C, SIZE, overlay_rgba
from appliance.screen.qr import QUIET_ZONE, modules
from appliance.screen.strings import CATALOGUE, KEYS, LANGUAGES

from .helpers import thermal_pixels

# --- strings --------------------------------------------------------------------------------


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_configurable_language_has_every_string_with_the_same_placeholders() -> None:
    # The config accepts exactly the languages the catalogue has.
    language = next(f for f in msgspec.structs.fields(ScreenConfig) if f.name == "language")
    assert set(typing.get_args(language.type)) == set(LANGUAGES)
    for lang in LANGUAGES:
        assert set(CATALOGUE[lang]) == set(KEYS), lang
        for key in KEYS:
            assert CATALOGUE[lang][key].strip(), (lang, key)
            assert _fields(CATALOGUE[lang][key]) == _fields(CATALOGUE["en"][key]), (lang, key)


def test_german_is_translated_not_copied() -> None:
    same = [k for k in KEYS if CATALOGUE["de"][k] == CATALOGUE["en"][k]]
    assert same == [], same
    assert "Personal" in CATALOGUE["de"]["elevated_body"]
    assert "medical device" in CATALOGUE["en"]["disclaimer"]


# --- palette --------------------------------------------------------------------------------

# Viénot, Brettel & Mollon (1999): dichromat simulation in linear RGB.
_PROTAN = np.array([[0.1124, 0.8876, 0.0], [0.1124, 0.8876, 0.0], [0.0040, -0.0040, 1.0]])
_DEUTAN = np.array([[0.2925, 0.7075, 0.0], [0.2925, 0.7075, 0.0], [-0.0223, 0.0223, 1.0]])


def _linear(rgb: palette.RGB) -> np.ndarray:
    return np.array([palette._linear(c) for c in rgb])


def test_every_panel_tone_has_readable_ink() -> None:
    for tone, bg in palette.TONES.items():
        assert palette.contrast_ratio(palette.ink_for(bg), bg) >= 4.5, tone


_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])


def _lab(linear: np.ndarray) -> np.ndarray:
    xyz = (_XYZ @ np.clip(linear, 0.0, 1.0)) / (_XYZ @ np.ones(3))
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _delta_e(matrix: np.ndarray, a: palette.RGB, b: palette.RGB) -> float:
    return float(np.linalg.norm(_lab(matrix @ _linear(a)) - _lab(matrix @ _linear(b))))


@pytest.mark.parametrize("matrix", [_PROTAN, _DEUTAN], ids=["protanopia", "deuteranopia"])
def test_normal_and_elevated_stay_apart_for_colour_blind_eyes(matrix: np.ndarray) -> None:
    # CIELAB difference of the two result panels as a dichromat sees them: far apart.
    assert _delta_e(matrix, palette.TONES["good"], palette.TONES["bad"]) > 30
    # Prompt and result tones too.
    assert _delta_e(matrix, palette.TONES["bad"], palette.TONES["info"]) > 30


def test_the_simulation_does_collapse_a_traffic_light_pair() -> None:
    # The check above means something: a usual red/green pair is nearly one colour (< 10)
    # to a deuteranope under the same simulation.
    assert _delta_e(np.eye(3), (220, 50, 47), (40, 160, 40)) > 100
    assert _delta_e(_DEUTAN, (220, 50, 47), (40, 160, 40)) < 10


def test_thermal_ramp_gets_lighter_all_the_way() -> None:
    lut = palette.thermal_lut()
    lum = [palette.luminance(tuple(int(c) for c in row)) for row in lut]  # type: ignore[misc]
    assert lut.shape == (256, 3)
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(lum))
    assert lum[-1] > 10 * (lum[0] + 0.01)


# --- layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(800, 480), (1280, 720), (1920, 1080), (480, 800), (320, 240)])
def test_layout_regions_fit_and_do_not_overlap(size: tuple[int, int]) -> None:
    lay = compute_layout(*size)
    w, h = size

    def inside(box: tuple[int, int, int, int]) -> bool:
        x, y, bw, bh = box
        return x >= 0 and y >= 0 and x + bw <= w and y + bh <= h and bw > 0 and bh > 0

    for box in (lay.top, lay.preview, lay.panel, lay.bottom, lay.pip):
        assert inside(box), (size, box)
    px, py, pw, ph = lay.preview
    assert abs(pw / ph - 4 / 3) < 0.02
    ax, ay, aw, ah = lay.panel
    overlap_x = min(px + pw, ax + aw) - max(px, ax)
    overlap_y = min(py + ph, ay + ah) - max(py, ay)
    assert overlap_x <= 0 or overlap_y <= 0
    assert lay.portrait == (h > w)
    # The picture in picture sits inside the preview.
    qx, qy, qw, qh = lay.pip
    assert px <= qx and qx + qw <= px + pw and py <= qy and qy + qh <= py + ph


def test_layout_refuses_a_nonsense_size() -> None:
    with pytest.raises(ValueError, match="too small"):
        compute_layout(8, 8)


# --- overlay --------------------------------------------------------------------------------


def test_overlay_is_clear_where_cold_and_coloured_where_warm() -> None:
    rgba = overlay_rgba(thermal_pixels(hot_col=1))
    assert rgba.shape == (SIZE, SIZE, 4) and rgba.dtype == np.uint8
    # Pixel centres: input column c sits at output c * 31 / 7.
    hot = rgba[round(3 * 31 / 7), round(2 * 31 / 7)]
    cold = rgba[round(3 * 31 / 7), round(6 * 31 / 7)]
    assert cold[3] == 0
    assert hot[3] > 100
    assert tuple(hot[:3]) != (0, 0, 0)


def test_overlay_mirror_swaps_left_and_right() -> None:
    plain = overlay_rgba(thermal_pixels(hot_col=0))
    mirrored = overlay_rgba(thermal_pixels(hot_col=0), mirror=True)
    assert np.array_equal(mirrored, plain[:, ::-1])


def test_overlay_scale_is_fixed_not_stretched() -> None:
    # An empty room of one temperature is clear; the scale does not stretch to its range.
    room = overlay_rgba([COLD_C - 1.0 + 0.01 * i for i in range(64)])
    assert room[..., 3].max() == 0
    hot = overlay_rgba([HOT_C + 2.0] * 64)
    assert (hot[..., 3] == hot[0, 0, 3]).all() and hot[0, 0, 3] > 0


# --- frame formats --------------------------------------------------------------------------


def test_preview_format_bytes_are_blue_green_red() -> None:
    bgr = np.zeros((2, 4, 3), dtype=np.uint8)
    bgr[..., 0] = 10  # B
    bgr[..., 1] = 20  # G
    bgr[..., 2] = 30  # R
    assert to_rgb(bgr, "RGB888", 4, 2)[0, 0].tolist() == [30, 20, 10]
    assert to_rgb(bgr, "BGR888", 4, 2)[0, 0].tolist() == [10, 20, 30]
    x = np.concatenate([bgr, np.full((2, 4, 1), 255, np.uint8)], axis=2)
    assert to_rgb(x, "XRGB8888", 4, 2)[1, 3].tolist() == [30, 20, 10]


@pytest.mark.parametrize("fmt", ["I420", "YUV420", "NV12"])
def test_yuv_frames_convert_to_the_right_colours(fmt: str) -> None:
    w, h = 4, 2
    # Full-range BT.601: Y=76, U=85, V=255 is pure red; Y=149, U=43, V=21 green.
    y = np.array([[76, 76, 149, 149]] * h, dtype=np.uint8)
    u = np.array([[85, 43]], dtype=np.uint8)
    v = np.array([[255, 21]], dtype=np.uint8)
    if fmt == "NV12":
        chroma = np.stack([u, v], axis=2).reshape(1, w)
    else:
        chroma = np.concatenate([u.ravel(), v.ravel()]).reshape(1, w)
    frame = np.concatenate([y, chroma]).astype(np.uint8)
    assert frame.shape == frame_shape(fmt, w, h)
    rgb = to_rgb(frame, fmt, w, h).astype(int)
    assert np.abs(rgb[0, 0] - [255, 0, 0]).max() <= 3
    assert np.abs(rgb[0, 3] - [0, 255, 0]).max() <= 4


def test_unknown_formats_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot show"):
        to_rgb(np.zeros(12, np.uint8), "MJPEG", 2, 2)
    with pytest.raises(ValueError):
        to_rgb(np.zeros(10, np.uint8), "RGB888", 2, 2)


# --- QR -------------------------------------------------------------------------------------


def test_qr_modules_are_segnos_symbol_with_its_quiet_zone() -> None:
    uri = "https://rooms.example.org/activate?user_code=WDJB-MJHT"
    grid = modules(uri)
    symbol = segno.make(uri, error="m", micro=False)
    inner = np.array([list(r) for r in symbol.matrix], dtype=bool)
    q = QUIET_ZONE
    assert grid.shape[0] == inner.shape[0] + 2 * q
    assert not grid[:q].any() and not grid[-q:].any() and not grid[:, :q].any() and not grid[:, -q:].any()
    assert np.array_equal(grid[q:-q, q:-q], inner)
    # The three finder patterns: a dark 7x7 ring around a light ring around a dark 3x3.
    n = inner.shape[0]
    for r, c in ((0, 0), (0, n - 7), (n - 7, 0)):
        finder = inner[r : r + 7, c : c + 7]
        assert finder[0].all() and finder[6].all() and finder[:, 0].all() and finder[:, 6].all()
        assert finder[2:5, 2:5].all() and not finder[1, 1:6].any()


def test_qr_symbol_size_matches_the_version_formula() -> None:
    grid = modules("https://r.example/x")
    side = grid.shape[0] - 2 * QUIET_ZONE
    version = (side - 17) / 4
    assert version == math.floor(version) and 1 <= version <= 40
    assert re.fullmatch(r"\d+", str(int(version)))
