"""QR codes for the pairing screen: segno builds the symbol, pygame draws it crisp.

The module matrix (with the 4-module quiet zone the standard asks for) is kept as a
numpy boolean array, so a test can check it against segno without a camera, and the surface
is scaled by a whole number of pixels per module with nearest-neighbour sampling: a blurred
or unevenly sized module is what makes phone cameras fail to read a code on a screen.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pygame

QUIET_ZONE = 4


@lru_cache(maxsize=8)
def modules(data: str) -> npt.NDArray[np.bool_]:
    """True = dark module, quiet zone included. Error correction M (15 %): enough for a
    screen, and a smaller symbol than Q or H for the same URL."""
    # Imported when a code is first drawn, not with the screen: segno's writers import
    # urllib, http and xml (~6 MB of RSS), and a paired kiosk shows no QR code at all.
    import segno

    symbol = segno.make(data, error="m", micro=False)
    rows = [list(row) for row in symbol.matrix_iter(scale=1, border=QUIET_ZONE)]
    grid = np.array(rows, dtype=bool)
    grid.setflags(write=False)
    return grid


def qr_surface(data: str, max_px: int) -> pygame.Surface:
    """A square surface of at most max_px, black modules on white, whole pixels per module."""
    grid = modules(data)
    n = grid.shape[0]
    scale = max(1, max_px // n)
    # surfarray is indexed [x, y]: transpose the [row, column] grid.
    pixels = np.where(grid.T[..., None], np.uint8(0), np.uint8(255)).repeat(3, axis=2)
    small = pygame.surfarray.make_surface(np.ascontiguousarray(pixels))
    return pygame.transform.scale(small, (n * scale, n * scale))
