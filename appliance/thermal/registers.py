"""The Panasonic AMG8833 (Grid-EYE) register map and the pure conversions around it.

Facts are from the Grid-EYE specification (Panasonic, "Infrared Array Sensor Grid-EYE"), cross-checked
against the register use of the adafruit_amg88xx driver:

    0x00 PCTL  power control         0x00 normal, 0x10 sleep, 0x20/0x21 stand-by 60 s / 10 s
    0x01 RST   reset (write only)    0x30 flag reset, 0x3F initial reset
    0x02 FPSC  frame rate            bit0: 0 = 10 fps, 1 = 1 fps
    0x03 INTC  interrupt control     bit0 INTEN (drive the INT pin), bit1 INTMOD (1 absolute, 0 difference)
    0x04 STAT  status (read only)    bit1 INTF, bit2 OVF_IRS (pixel overflow), bit3 OVF_THS (thermistor)
    0x05 SCLR  status clear          bit1 INTCLR, bit2 OVS_CLR, bit3 OVT_CLR
    0x07 AVE   average               bit5 MAMOD, twice moving average; writable only after the unlock
                                     sequence on 0x1F (0x50, 0x45, 0x57), locked again by 0x1F <- 0x00
    0x08..0x0D interrupt levels       upper, lower, hysteresis: 12-bit two's complement, 0.25 °C/LSB, L then H
    0x0E..0x0F thermistor             12-bit sign-magnitude, 0.0625 °C/LSB
    0x10..0x17 interrupt table        one bit per pixel: byte k bit b is pixel 8k+b (pixel 1 is byte 0 bit 0)
    0x80..0xFF pixels                 64 x 12-bit two's complement, 0.25 °C/LSB, L then H, pixel 1 first

Register order vs image orientation: seen from the sensor looking at the scene (the way a camera image is
drawn), pixel 1 is the bottom-right of the field of view and numbering runs right-to-left, bottom-to-top
(the Grid-EYE spec's "pixel array" figure, also stated by the amg88 crate docs from the viewer's side).
So the register grid is the image rotated by 180°, and one rotation converts either way: on a row-major
list of 64 values, a rotation by 180° is the list reversed.
This assumes the module is mounted upright (lens window above the pins); a kiosk mounted the other way
round gets its picture upside down, which is visible at once on the overlay.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeVar

ADDRESS_DEFAULT: Final = 0x69  # AD_SELECT pulled up, as on the Adafruit breakout
ADDRESS_ALT: Final = 0x68  # AD_SELECT tied to GND

PCTL: Final = 0x00
RST: Final = 0x01
FPSC: Final = 0x02
INTC: Final = 0x03
STAT: Final = 0x04
SCLR: Final = 0x05
AVE: Final = 0x07
INTHL: Final = 0x08
INTHH: Final = 0x09
INTLL: Final = 0x0A
INTLH: Final = 0x0B
IHYSL: Final = 0x0C
IHYSH: Final = 0x0D
TTHL: Final = 0x0E
TTHH: Final = 0x0F
INT_TABLE: Final = 0x10  # 0x10..0x17
INT_TABLE_LEN: Final = 8
AVE_UNLOCK: Final = 0x1F  # the undocumented-but-specified key register for AVE
PIXELS: Final = 0x80  # 0x80..0xFF
PIXELS_LEN: Final = 128

PCTL_NORMAL: Final = 0x00
PCTL_SLEEP: Final = 0x10
PCTL_STANDBY_60: Final = 0x20
PCTL_STANDBY_10: Final = 0x21

RST_FLAG: Final = 0x30
RST_INITIAL: Final = 0x3F

FPSC_10FPS: Final = 0x00
FPSC_1FPS: Final = 0x01

INTC_INTEN: Final = 0x01
INTC_ABSOLUTE: Final = 0x02  # INTMOD = 1; 0 is difference mode

STAT_INTF: Final = 0x02
STAT_OVF_IRS: Final = 0x04
STAT_OVF_THS: Final = 0x08

SCLR_INTCLR: Final = 0x02
SCLR_OVS_CLR: Final = 0x04
SCLR_OVT_CLR: Final = 0x08

AVE_MAMOD: Final = 0x20

# Written to AVE_UNLOCK, in this order, immediately before AVE; then AVE_LOCK locks it again.
AVE_UNLOCK_SEQUENCE: Final = (0x50, 0x45, 0x57)
AVE_LOCK: Final = 0x00

PIXEL_LSB_C: Final = 0.25
THERMISTOR_LSB_C: Final = 0.0625
ROWS: Final = 8
COLS: Final = 8
FOV_DEG: Final = 60.0  # horizontal and vertical viewing angle, 7.5° per pixel

# Datasheet NETD (noise-equivalent temperature difference) of the high-gain AMG8833.
# The sensor samples at 10 fps internally; 1 fps output is the mean of 10 samples, hence ~0.16/sqrt(10).
NETD_10FPS_C: Final = 0.16
NETD_1FPS_C: Final = 0.05

# Plain Python, no numpy: the thermal daemon imports this, and numpy would cost it ~12 MB of RSS for
# 64 numbers (issue 8). A frame is a list of 64 floats, row-major (8 rows of 8).
PIXEL_COUNT: Final = ROWS * COLS
_T = TypeVar("_T")
_WORDS = struct.Struct("<64H")

_12BIT = 0x1000
_12BIT_SIGN = 0x800
_12BIT_MAX = 0x7FF


def raw12_to_twos(raw: int) -> int:
    """A 12-bit two's complement register value as a Python int."""
    raw &= 0xFFF
    return raw - _12BIT if raw & _12BIT_SIGN else raw


def twos_to_raw12(value: int) -> int:
    """Encode an int in 12-bit two's complement, saturating as the sensor's ADC does."""
    value = max(-_12BIT_SIGN, min(_12BIT_MAX, value))
    return value & 0xFFF


def pixel_raw_to_c(raw: int) -> float:
    return raw12_to_twos(raw) * PIXEL_LSB_C


def pixel_c_to_raw(celsius: float) -> int:
    return twos_to_raw12(round(celsius / PIXEL_LSB_C))


def thermistor_raw_to_c(raw: int) -> float:
    # Sign-magnitude, unlike the pixels: bit 11 is the sign, bits 0..10 the magnitude.
    magnitude = raw & _12BIT_MAX
    return -magnitude * THERMISTOR_LSB_C if raw & _12BIT_SIGN else magnitude * THERMISTOR_LSB_C


def thermistor_c_to_raw(celsius: float) -> int:
    magnitude = min(_12BIT_MAX, abs(round(celsius / THERMISTOR_LSB_C)))
    return (_12BIT_SIGN | magnitude) if celsius < 0 and magnitude else magnitude


def level_c_to_raw(celsius: float) -> int:
    """Interrupt level/hysteresis encoding: the pixel format, 12-bit two's complement at 0.25 °C."""
    return pixel_c_to_raw(celsius)


def level_raw_to_c(raw: int) -> float:
    return pixel_raw_to_c(raw)


def split_le16(raw: int) -> tuple[int, int]:
    """(low byte, high byte) as they sit in consecutive registers; the high byte carries 4 bits."""
    return raw & 0xFF, (raw >> 8) & 0x0F


def join_le16(low: int, high: int) -> int:
    return ((high & 0x0F) << 8) | (low & 0xFF)


def flat_pixels(values: Iterable[Any]) -> list[float]:
    """64 values, or 8 rows of 8 (lists, tuples, or anything iterable such as an 8x8 array), as a
    row-major list of 64 floats. ValueError for any other count."""
    out: list[float] = []
    for item in values:
        if hasattr(item, "__iter__"):
            out.extend(float(v) for v in item)
        else:
            out.append(float(item))
    if len(out) != PIXEL_COUNT:
        raise ValueError(f"a frame has {PIXEL_COUNT} pixels, not {len(out)}")
    return out


def decode_pixels(data: bytes | bytearray) -> list[float]:
    """128 bytes from 0x80 -> 64 °C values in register order (pixel 1 first), row-major.

    Every value is a multiple of 0.25 within ±512, so it is exactly what a float32 would hold."""
    if len(data) != PIXELS_LEN:
        raise ValueError(f"pixel block is {len(data)} bytes, expected {PIXELS_LEN}")
    return [raw12_to_twos(word) * PIXEL_LSB_C for word in _WORDS.unpack(bytes(data))]


def encode_pixels(celsius: Iterable[Any]) -> bytes:
    """64 °C values (or 8 rows) in register order -> the 128 bytes the sensor holds at 0x80 (quantised,
    saturated). round() rounds half to even, as the chip's model (and numpy's rint) does."""
    counts = [max(-_12BIT_SIGN, min(_12BIT_MAX, round(v / PIXEL_LSB_C))) for v in flat_pixels(celsius)]
    return _WORDS.pack(*(count & 0xFFF for count in counts))


def decode_interrupt_table(table: bytes | bytearray) -> int:
    """8 bytes from 0x10 -> a 64-bit mask, bit i set when pixel i+1 (register order) interrupted."""
    if len(table) != INT_TABLE_LEN:
        raise ValueError(f"interrupt table is {len(table)} bytes, expected {INT_TABLE_LEN}")
    return int.from_bytes(bytes(table), "little")


def encode_interrupt_table(mask: int) -> bytes:
    return (mask & (2**64 - 1)).to_bytes(INT_TABLE_LEN, "little")


def mask_to_grid(mask: int) -> list[bool]:
    """64-bit mask -> 64 booleans in register order, row-major."""
    return [bool((mask >> i) & 1) for i in range(PIXEL_COUNT)]


def grid_to_mask(grid: Iterable[Any]) -> int:
    """64 booleans (or 8 rows of 8), row-major -> the 64-bit mask with bit i for value i."""
    flat: list[Any] = []
    for item in grid:
        if hasattr(item, "__iter__"):
            flat.extend(item)
        else:
            flat.append(item)
    if len(flat) != PIXEL_COUNT:
        raise ValueError(f"a grid has {PIXEL_COUNT} cells, not {len(flat)}")
    return sum(1 << i for i, bit in enumerate(flat) if bit)


def register_to_image(grid: Sequence[_T]) -> list[_T]:
    """Register order -> image order (row 0 = top of the scene, column 0 = left as the sensor sees it),
    both row-major lists of 64.

    The mapping is a 180° rotation, which on a row-major list is the list reversed (cell r, c goes to
    7 - r, 7 - c, i.e. index i to 63 - i). It is its own inverse; `image_to_register` is the same
    function under the name that reads right at the call site.
    """
    if len(grid) != PIXEL_COUNT:
        raise ValueError(f"a grid has {PIXEL_COUNT} cells, not {len(grid)}")
    return list(reversed(grid))


image_to_register = register_to_image
