"""A frame counter and the capture time, written into the pixels of a simulated frame.

For glass-to-glass latency: a browser draws the received video on a canvas, reads the stamp
back and compares the capture time with its own clock (both wall clocks, kept in step by NTP).
The stamp has to survive H.264 at a modest bitrate, chroma subsampling, and the canvas being
scaled to another size, so it is deliberately coarse:

- 80 bits: frame counter (u32), capture time in ms since the Unix epoch modulo 2**32 (u32),
  CRC-16/CCITT-FALSE of those 8 bytes (big-endian). A frame without a stamp, or one damaged
  by the codec, fails the CRC instead of giving a wrong number.
- Two rows of 40 square cells across the top of the picture, row-major, most significant bit
  first: a 1 is a white cell (luma 235), a 0 a black one (luma 16), both grey so chroma
  carries nothing. A cell is width/40 pixels: 16 px at 640 wide, so the cells sit exactly on
  the 16x16 macroblock grid and the encoder sees flat blocks it codes almost losslessly.
- Reading samples the middle half of each cell, where ringing from the cell edges is
  weakest, and thresholds halfway between the darkest and brightest cell, so brightness or
  contrast changes on the way (limited/full range) do not matter.

Positions are fractions of the width, so `decode_stamp` reads a frame at any scale. The ms
field wraps every 49.7 days: compare with `ms_since` (modular), not with a plain subtraction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

COLS = 40
ROWS = 2
BITS = COLS * ROWS
WHITE = 235
BLACK = 16
MIN_CONTRAST = 48.0  # luma levels between the darkest and brightest cell; below it, no stamp


@dataclass(frozen=True)
class Stamp:
    counter: int  # frame counter, u32, wraps
    ms: int  # capture time, ms since the Unix epoch modulo 2**32


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def wall_ms(now: float | None = None) -> int:
    """The stamp's time field for a wall-clock time (time.time())."""
    return int((time.time() if now is None else now) * 1000) & 0xFFFFFFFF


def ms_since(now_ms: int, stamp_ms: int) -> int:
    """now_ms - stamp_ms across the 2**32 wrap, as a signed number of ms."""
    d = (now_ms - stamp_ms) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


def stamp_bits(stamp: Stamp) -> list[int]:
    payload = (stamp.counter & 0xFFFFFFFF).to_bytes(4, "big") + (stamp.ms & 0xFFFFFFFF).to_bytes(4, "big")
    word = int.from_bytes(payload + crc16(payload).to_bytes(2, "big"), "big")
    return [(word >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def stamp_height(width: int) -> int:
    """Rows of pixels the stamp covers at the top of a frame this wide."""
    return round(ROWS * width / COLS)


def _edges(width: int, n: int) -> list[int]:
    return [round(i * width / COLS) for i in range(n + 1)]


def draw_stamp(image: npt.NDArray[np.uint8], stamp: Stamp) -> None:
    """Write the stamp into the top rows of a (H, W) or (H, W, C) uint8 image, in place."""
    height, width = image.shape[:2]
    if stamp_height(width) > height or width < COLS:
        raise ValueError(f"a {width}x{height} frame is too small for a stamp")
    xs = _edges(width, COLS)
    ys = _edges(width, ROWS)  # square cells: the rows use the same pitch as the columns
    bits = stamp_bits(stamp)
    for row in range(ROWS):
        band = image[ys[row] : ys[row + 1]]
        for col in range(COLS):
            band[:, xs[col] : xs[col + 1]] = WHITE if bits[row * COLS + col] else BLACK


def cell_levels(image: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """The mean level of the middle half of each cell, row-major (BITS values)."""
    height, width = image.shape[:2]
    pitch = width / COLS
    if ROWS * pitch > height or pitch < 2:
        raise ValueError(f"a {width}x{height} frame is too small to hold a stamp")
    plane = image.astype(np.float64)
    if plane.ndim == 3:
        # RGB, BGR or a canvas's RGBA: the stamp is grey, so the colour channels agree;
        # alpha (a fourth channel) is left out.
        plane = plane[:, :, : min(3, plane.shape[2])].mean(axis=2)
    levels = np.empty(BITS)
    for row in range(ROWS):
        y0 = int((row + 0.25) * pitch)
        y1 = max(y0 + 1, round((row + 0.75) * pitch))
        for col in range(COLS):
            x0 = int((col + 0.25) * pitch)
            x1 = max(x0 + 1, round((col + 0.75) * pitch))
            levels[row * COLS + col] = plane[y0:y1, x0:x1].mean()
    return levels


def decode_stamp(image: npt.NDArray[Any]) -> Stamp | None:
    """The stamp in a decoded frame (any size, grey or colour), or None if there is none intact."""
    try:
        levels = cell_levels(image)
    except ValueError:
        return None
    low, high = float(levels.min()), float(levels.max())
    if high - low < MIN_CONTRAST:
        return None
    threshold = (low + high) / 2
    word = 0
    for level in levels:
        word = (word << 1) | int(level > threshold)
    raw = word.to_bytes(BITS // 8, "big")
    if crc16(raw[:8]) != int.from_bytes(raw[8:], "big"):
        return None
    return Stamp(int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:8], "big"))
