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
So the register grid is the image rotated by 180°, and one `np.rot90(grid, 2)` converts either way.
This assumes the module is mounted upright (lens window above the pins); a kiosk mounted the other way
round gets its picture upside down, which is visible at once on the overlay.
"""

from __future__ import annotations

from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

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

_Scalar = TypeVar("_Scalar", bound=np.generic)

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


def decode_pixels(data: bytes | bytearray) -> npt.NDArray[np.float32]:
    """128 bytes from 0x80 -> 8x8 °C in register order (pixel 1 at [0, 0])."""
    if len(data) != PIXELS_LEN:
        raise ValueError(f"pixel block is {len(data)} bytes, expected {PIXELS_LEN}")
    words = np.frombuffer(bytes(data), dtype="<u2").astype(np.int32) & 0xFFF
    signed = np.where(words & _12BIT_SIGN, words - _12BIT, words)
    return (signed * PIXEL_LSB_C).astype(np.float32).reshape(ROWS, COLS)


def encode_pixels(celsius: npt.ArrayLike) -> bytes:
    """8x8 °C in register order -> the 128 bytes the sensor holds at 0x80 (quantised, saturated)."""
    grid = np.asarray(celsius, dtype=np.float64).reshape(ROWS * COLS)
    counts = np.clip(np.rint(grid / PIXEL_LSB_C), -_12BIT_SIGN, _12BIT_MAX).astype(np.int32)
    return (counts & 0xFFF).astype("<u2").tobytes()


def decode_interrupt_table(table: bytes | bytearray) -> int:
    """8 bytes from 0x10 -> a 64-bit mask, bit i set when pixel i+1 (register order) interrupted."""
    if len(table) != INT_TABLE_LEN:
        raise ValueError(f"interrupt table is {len(table)} bytes, expected {INT_TABLE_LEN}")
    return int.from_bytes(bytes(table), "little")


def encode_interrupt_table(mask: int) -> bytes:
    return (mask & (2**64 - 1)).to_bytes(INT_TABLE_LEN, "little")


def mask_to_grid(mask: int) -> npt.NDArray[np.bool_]:
    """64-bit mask -> 8x8 booleans in register order."""
    bits = [(mask >> i) & 1 for i in range(ROWS * COLS)]
    return np.array(bits, dtype=bool).reshape(ROWS, COLS)


def grid_to_mask(grid: npt.ArrayLike) -> int:
    flat = np.asarray(grid, dtype=bool).reshape(ROWS * COLS)
    return sum(1 << i for i, bit in enumerate(flat) if bit)


def register_to_image(grid: npt.NDArray[_Scalar]) -> npt.NDArray[_Scalar]:
    """Register order -> image order (row 0 = top of the scene, column 0 = left as the sensor sees it).

    The mapping is a 180° rotation, so it is its own inverse; `image_to_register` is the same function
    under the name that reads right at the call site.
    """
    return np.ascontiguousarray(np.rot90(grid, 2))


image_to_register = register_to_image
