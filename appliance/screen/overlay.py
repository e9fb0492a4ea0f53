"""The thermal overlay: 64 sensor pixels to a translucent 32x32 RGBA image (pure numpy).

8x8 is upsampled to 32x32 by appliance.screening.interpolate.upsample (bicubic, display only,
never used for measuring), mapped through the palette's thermal ramp, and given an alpha that
rises with temperature: the cool background stays see-through, a warm face shows in colour
over the camera picture. The renderer scales the 32x32 image to the preview (smoothly), which
costs far less than upsampling to the screen's size in numpy.

The scale is fixed (COLD_C..HOT_C), not stretched to each frame's range: a stretched scale
paints an empty room as vividly as a person, and flickers as people come and go.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from appliance.screen.palette import thermal_lut
from appliance.screening.interpolate import upsample

COLD_C = 24.0  # at and below: fully transparent, bottom of the colour ramp
HOT_C = 38.0  # at and above: the top of the ramp
MAX_ALPHA = 0.6  # the camera picture always shows through
SIZE = 32


def overlay_rgba(pixels: Sequence[float] | npt.ArrayLike, *, mirror: bool = False) -> npt.NDArray[np.uint8]:
    """(SIZE, SIZE, 4) RGBA for 64 pixel temperatures (row-major, row 0 = top)."""
    grid = np.asarray(pixels, dtype=np.float64).reshape(8, 8)
    if mirror:
        grid = grid[:, ::-1]
    fine = upsample(grid, SIZE)
    level = np.clip((fine - COLD_C) / (HOT_C - COLD_C), 0.0, 1.0)
    index = (level * 255.0).round().astype(np.intp)
    out = np.empty((SIZE, SIZE, 4), dtype=np.uint8)
    out[..., :3] = thermal_lut()[index]
    # Alpha rises faster than the colour (square root): warm skin is clearly tinted.
    out[..., 3] = (np.sqrt(level) * MAX_ALPHA * 255.0).round().astype(np.uint8)
    return out
