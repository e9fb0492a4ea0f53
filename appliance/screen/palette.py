"""Colours of the status screen, chosen to be told apart by colour-blind people.

The tones are Okabe and Ito's palette ("Color Universal Design", 2008), which stays
distinguishable under the common colour vision deficiencies. Colour is never the only
signal: every tone comes with its own icon and words (see view.py), so a result reads the
same in greyscale. Text ink on a coloured panel is whichever of near-black or white has the
higher contrast (WCAG 2 ratio), which keeps every panel at or above 4.5:1.

The thermal overlay uses a perceptually uniform sequential map (an inferno-like ramp, dark
to bright): its order is carried by lightness, which every viewer sees.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

RGB = tuple[int, int, int]

BACKGROUND: RGB = (16, 20, 28)
SURFACE: RGB = (34, 40, 52)
WHITE: RGB = (255, 255, 255)
MUTED: RGB = (196, 202, 210)
DARK_INK: RGB = (10, 12, 16)

# Okabe-Ito
ORANGE: RGB = (230, 159, 0)
SKY_BLUE: RGB = (86, 180, 233)
BLUISH_GREEN: RGB = (0, 158, 115)
YELLOW: RGB = (240, 228, 66)
BLUE: RGB = (0, 114, 178)
VERMILLION: RGB = (213, 94, 0)
REDDISH_PURPLE: RGB = (204, 121, 167)

Tone = Literal["neutral", "prompt", "warn", "good", "bad", "retry", "fault", "info"]

# The panel behind a screen's title: what the tone means is also in its icon and its words.
TONES: dict[Tone, RGB] = {
    "neutral": SURFACE,
    "prompt": BLUE,
    "warn": YELLOW,
    "good": BLUISH_GREEN,
    "bad": VERMILLION,
    "retry": ORANGE,
    "fault": REDDISH_PURPLE,
    "info": SKY_BLUE,
}


def _linear(channel: int) -> float:
    c = channel / 255.0
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(rgb: RGB) -> float:
    """WCAG 2 relative luminance."""
    r, g, b = (_linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: RGB, b: RGB) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@lru_cache(maxsize=64)
def ink_for(background: RGB) -> RGB:
    """The text colour with the higher contrast on this background."""
    return max((WHITE, DARK_INK), key=lambda ink: contrast_ratio(ink, background))


# Inferno-like control points (position, RGB): dark purple to pale yellow, lightness rising.
_RAMP = (
    (0.00, (0, 0, 4)),
    (0.20, (50, 10, 94)),
    (0.40, (120, 28, 109)),
    (0.60, (188, 55, 84)),
    (0.80, (237, 105, 37)),
    (0.90, (251, 155, 6)),
    (1.00, (252, 255, 164)),
)


@lru_cache(maxsize=1)
def thermal_lut() -> npt.NDArray[np.uint8]:
    """256 x 3 colour lookup table for the thermal overlay (index 0 = coldest)."""
    x = np.linspace(0.0, 1.0, 256)
    points = np.array([p for p, _ in _RAMP])
    colours = np.array([c for _, c in _RAMP], dtype=np.float64)
    lut = np.stack([np.interp(x, points, colours[:, ch]) for ch in range(3)], axis=1)
    out = np.round(lut).astype(np.uint8)
    out.setflags(write=False)
    return out
