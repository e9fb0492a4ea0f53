"""The AMG8833 driver the thermal daemon uses: whole frames, interrupts, and honest failures.

adafruit_amg88xx.AMG88XX does the power-up (normal mode, initial reset, interrupts off, 10 fps); every
other access goes through its I2CDevice, because the library reads pixels one register pair at a time
and a frame boundary can fall between two of those reads. Here a frame is one 128-byte burst from 0x80
in a single write-then-read transaction, so the 64 values always come from the same frame.

Orientation: frames come back in image order, row 0 = top of the scene, column 0 = left of the scene
as the sensor (and the camera beside it) sees it. See registers.py for the mapping from register order.
Units: °C, a list of 64 floats, row-major (8 rows of 8). Plain Python, no numpy: this runs in the
thermal daemon, where numpy would cost ~12 MB of RSS for 64 numbers (issue 8). Every value is a
multiple of 0.25 °C within ±512 °C, exactly what the float32 arrays of earlier versions held.

Every I2C error and every implausible reading raises SensorFault; the driver never fills a gap with a
guess. `reinit()` runs the power-up again and restores the settings made through this object.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.errors import SensorFault
from appliance.thermal import registers as reg

log = logging.getLogger(__name__)

# The AMG8833 measures objects from 0 to 80 °C; a margin either side absorbs offset and noise.
# Beyond it the reading is a broken pixel or a bus error, not a scene.
PLAUSIBLE_PIXEL_C = (-20.0, 100.0)
PLAUSIBLE_THERMISTOR_C = (-20.0, 80.0)  # the thermistor's specified range


class InterruptMode(enum.Enum):
    ABSOLUTE = "absolute"  # a pixel above upper or below lower
    DIFFERENCE = "difference"  # a pixel changed by more than upper (or less than lower) since last frame


@dataclass(frozen=True)
class InterruptConfig:
    upper_c: float
    lower_c: float
    hysteresis_c: float
    mode: InterruptMode = InterruptMode.ABSOLUTE


@dataclass(frozen=True)
class InterruptState:
    flagged: bool  # STAT.INTF
    mask: int  # 64-bit, register order (bit i = pixel i+1)
    pixels: list[bool]  # 64, image order, row-major

    @property
    def count(self) -> int:
        return self.mask.bit_count()


def open_board_i2c() -> Any:
    """The Pi's hardware I2C bus through Blinka; imported here so nothing else needs a Pi."""
    import board  # Pi-only: imported lazily
    import busio

    return busio.I2C(board.SCL, board.SDA)


class AMG8833:
    def __init__(
        self,
        i2c: Any,
        address: int = reg.ADDRESS_DEFAULT,
        *,
        clock: Callable[[], float] = time.monotonic,
        stale_frames: int = 5,
    ) -> None:
        """`i2c` is a busio.I2C on the Pi (see open_board_i2c) or a FakeI2C elsewhere.

        `stale_frames`: after this many frame periods without a single changed byte, the frame is stuck.
        The sensor's noise changes some pixel on every real frame, so identical frames over that long
        mean a hung sensor, not a still scene.
        """
        self._i2c = i2c
        self._address = address
        self._clock = clock
        self._stale_frames = stale_frames
        self._fps = 10
        self._moving_average = False
        self._interrupt: InterruptConfig | None = None
        self._last_raw: bytes | None = None
        self._last_change = clock()
        self._failed = False
        self._device: Any = None
        self._power_up()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _power_up(self) -> None:
        from adafruit_amg88xx import AMG88XX  # lazily: keeps its import cost off the CLI

        try:
            self._device = AMG88XX(self._i2c, self._address).i2c_device
        except (OSError, ValueError) as exc:
            # ValueError is how adafruit_bus_device reports "no device at this address".
            raise self._fault(f"AMG8833 at 0x{self._address:02x} did not initialise: {exc}") from exc
        # _last_raw survives a reinit on purpose: a reset does not make a frozen frame fresh.

    def reinit(self) -> None:
        """Power-up again and restore the frame rate, averaging and interrupt set through this object."""
        self._power_up()
        fps, average, interrupt = self._fps, self._moving_average, self._interrupt
        if fps != 10:
            self.set_frame_rate(fps)
        if average:
            self.set_moving_average(True)
        if interrupt is not None:
            self.configure_interrupt(interrupt)

    @property
    def frame_rate(self) -> int:
        return self._fps

    # -- transactions ------------------------------------------------------------------------------------

    def _fault(self, message: str) -> SensorFault:
        if not self._failed:
            log.warning("AMG8833 failed: %s", message)  # state change only; repeats stay quiet
            self._failed = True
        return SensorFault(message)

    def _write(self, register: int, *values: int) -> None:
        try:
            with self._device as device:
                device.write(bytes([register, *values]))
        except OSError as exc:
            raise self._fault(f"I2C write to 0x{register:02x} failed: {exc}") from exc

    def _read(self, register: int, length: int) -> bytes:
        buffer = bytearray(length)
        try:
            with self._device as device:
                device.write_then_readinto(bytes([register]), buffer)
        except OSError as exc:
            raise self._fault(f"I2C read of 0x{register:02x} failed: {exc}") from exc
        return bytes(buffer)

    # -- frames -------------------------------------------------------------------------------------------

    def read_frame(self) -> list[float]:
        """One whole frame, 64 °C values, image order, row-major (row 0 = top)."""
        raw = self._read(reg.PIXELS, reg.PIXELS_LEN)
        now = self._clock()
        if raw != self._last_raw:
            self._last_raw = raw
            self._last_change = now
        elif now - self._last_change > self._stale_frames / self._fps:
            raise self._fault(f"pixel data unchanged for {now - self._last_change:.1f} s: frames are stuck")
        frame = reg.register_to_image(reg.decode_pixels(raw))
        low, high = PLAUSIBLE_PIXEL_C
        coldest, hottest = min(frame), max(frame)
        if not (coldest >= low and hottest <= high):
            bad = sum(1 for v in frame if v < low or v > high)
            raise self._fault(
                f"{bad} pixel(s) outside {low}..{high} °C (min {coldest:.2f}, max {hottest:.2f})"
            )
        if self._failed:
            # Recovery is a good frame, not a successful reinit: a stuck sensor reinitialises fine.
            log.info("AMG8833 recovered: frames are good again")
            self._failed = False
        return frame

    def read_thermistor(self) -> float:
        low_byte, high_byte = self._read(reg.TTHL, 2)
        celsius = reg.thermistor_raw_to_c(reg.join_le16(low_byte, high_byte))
        low, high = PLAUSIBLE_THERMISTOR_C
        if not low <= celsius <= high:
            raise self._fault(f"thermistor reads {celsius:.4f} °C, outside {low}..{high} °C")
        return celsius

    # -- settings ------------------------------------------------------------------------------------------

    def set_frame_rate(self, fps: int) -> None:
        if fps not in (1, 10):
            raise ValueError(f"the AMG8833 runs at 1 or 10 fps, not {fps}")
        self._write(reg.FPSC, reg.FPSC_1FPS if fps == 1 else reg.FPSC_10FPS)
        self._fps = fps

    def set_moving_average(self, enabled: bool) -> None:
        """Twice moving average: the chip accepts AVE only between the unlock keys and the lock."""
        for key in reg.AVE_UNLOCK_SEQUENCE:
            self._write(reg.AVE_UNLOCK, key)
        self._write(reg.AVE, reg.AVE_MAMOD if enabled else 0x00)
        self._write(reg.AVE_UNLOCK, reg.AVE_LOCK)
        self._moving_average = enabled

    def configure_interrupt(self, config: InterruptConfig) -> None:
        """Levels first, then the mode with the output still off, clear stale flags, then enable.

        Enabling before the levels are in place would compare against whatever the levels were (zero
        after reset) and raise a burst of false interrupts.
        """
        if config.hysteresis_c < 0:
            raise ValueError("hysteresis must not be negative")
        if config.mode is InterruptMode.ABSOLUTE and config.lower_c > config.upper_c:
            raise ValueError("lower level above upper level")
        for low_register, celsius in (
            (reg.INTHL, config.upper_c),
            (reg.INTLL, config.lower_c),
            (reg.IHYSL, config.hysteresis_c),
        ):
            low_byte, high_byte = reg.split_le16(reg.level_c_to_raw(celsius))
            self._write(low_register, low_byte)
            self._write(low_register + 1, high_byte)
        mode = reg.INTC_ABSOLUTE if config.mode is InterruptMode.ABSOLUTE else 0
        self._write(reg.INTC, mode)
        self._write(reg.SCLR, reg.SCLR_INTCLR)
        self._write(reg.INTC, mode | reg.INTC_INTEN)
        self._interrupt = config

    def disable_interrupt(self) -> None:
        self._write(reg.INTC, 0x00)
        self._write(reg.SCLR, reg.SCLR_INTCLR)
        self._interrupt = None

    def settings_lost(self) -> str:
        """Which settings made through this object the chip no longer holds ("" when none).

        A brown-out resets the chip to 10 fps, interrupt off and no averaging without any I2C
        error, and its frames still look fine: only reading the settings back shows it.
        """
        fpsc, intc = self._read(reg.FPSC, 2)  # FPSC and INTC are adjacent: one transaction
        lost = []
        if fpsc & reg.FPSC_1FPS != (reg.FPSC_1FPS if self._fps == 1 else reg.FPSC_10FPS):
            lost.append(f"frame rate (FPSC 0x{fpsc:02x})")
        wanted_intc = 0
        if self._interrupt is not None:
            absolute = self._interrupt.mode is InterruptMode.ABSOLUTE
            wanted_intc = reg.INTC_INTEN | (reg.INTC_ABSOLUTE if absolute else 0)
        if intc & (reg.INTC_INTEN | reg.INTC_ABSOLUTE) != wanted_intc:
            lost.append(f"interrupt (INTC 0x{intc:02x})")
        if self._moving_average and not self._read(reg.AVE, 1)[0] & reg.AVE_MAMOD:
            lost.append("moving average")
        return ", ".join(lost)

    def read_interrupt(self) -> InterruptState:
        """What fired: call on the INT falling edge, then clear_interrupt() to re-arm the pin."""
        status = self._read(reg.STAT, 1)[0]
        table = self._read(reg.INT_TABLE, reg.INT_TABLE_LEN)
        mask = reg.decode_interrupt_table(table)
        pixels = reg.register_to_image(reg.mask_to_grid(mask))
        return InterruptState(flagged=bool(status & reg.STAT_INTF), mask=mask, pixels=pixels)

    def clear_interrupt(self) -> None:
        self._write(reg.SCLR, reg.SCLR_INTCLR)
