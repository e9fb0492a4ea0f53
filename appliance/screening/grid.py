"""Masks on the 8x8 grid as 64-bit integers: connected components and dilation in microseconds.

scipy.ndimage's label and binary_dilation cost 15-30 us a call whatever the size, mostly
argument checking; on 64 pixels, a handful of shifts and ands on a Python int do the same work
in about a microsecond. Pixel (r, c) is bit r * 8 + c. The results equal ndimage's (the tests
compare them on random masks): 8-connectivity is the 3x3 structure, 4-connectivity the cross.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]

SIDE = 8
FULL = (1 << 64) - 1
_COL0 = sum(1 << (r * SIDE) for r in range(SIDE))
_NOT_COL0 = FULL & ~_COL0  # where a shift east may land
_NOT_COL7 = FULL & ~(_COL0 << (SIDE - 1))  # where a shift west may land


def to_bits(mask: Mask) -> int:
    return int.from_bytes(np.packbits(mask, bitorder="little").tobytes(), "little")


# Row patterns for every byte value: a mask is eight of them looked up at once.
_ROWS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(bool)


def to_mask(bits: int) -> Mask:
    mask: Mask = _ROWS[np.frombuffer(bits.to_bytes(SIDE, "little"), dtype=np.uint8)]
    return mask


def _sideways(bits: int) -> int:
    return bits | ((bits << 1) & _NOT_COL0) | ((bits >> 1) & _NOT_COL7)


def dilate8(bits: int) -> int:
    """Binary dilation with the 3x3 structure."""
    row = _sideways(bits)
    return row | ((row << SIDE) & FULL) | (row >> SIDE)


def dilate4(bits: int) -> int:
    """Binary dilation with the cross (4-connectivity)."""
    return _sideways(bits) | ((bits << SIDE) & FULL) | (bits >> SIDE)


def components(bits: int, *, eight: bool = True) -> Iterator[int]:
    """The connected components of ``bits``, in order of their lowest pixel (as ndimage.label)."""
    grow = dilate8 if eight else dilate4
    while bits:
        part = bits & -bits
        while True:
            wider = grow(part) & bits
            if wider == part:
                break
            part = wider
        bits &= ~part
        yield part


def component_of(bits: int, pixel: tuple[int, int], *, eight: bool = True) -> int:
    """The component of ``bits`` holding ``pixel`` (0 if the pixel is not set)."""
    part = bits & (1 << (pixel[0] * SIDE + pixel[1]))
    grow = dilate8 if eight else dilate4
    while part:
        wider = grow(part) & bits
        if wider == part:
            break
        part = wider
    return part


def count(bits: int) -> int:
    return bits.bit_count()
