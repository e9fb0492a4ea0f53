"""A register-level fake AMG8833 on a fake I2C bus, close enough that the real drivers run unchanged.

`FakeI2C` implements the part of the busio.I2C interface that adafruit_bus_device.I2CDevice uses
(try_lock, unlock, scan, writeto, readfrom_into, writeto_then_readfrom with start/end slicing), so
adafruit_amg88xx.AMG88XX and our own driver talk to `FakeAMG8833` exactly as they talk to the chip.

What the fake models, from the Grid-EYE specification:
- a register pointer set by the first written byte, auto-incremented on burst reads and writes;
- resets: 0x30 clears flags and the interrupt table, 0x3F also restores every setting to its default;
- frames: the chip samples at 10 fps; at 1 fps it outputs the mean of 10 samples (NETD 0.16 -> ~0.05 °C).
  A frame appears only once its time has come on the injected clock, so tests need no sleeps;
- twice-moving-average (AVE bit5), accepted only after the 0x1F unlock sequence: each output is the mean
  of the current and the previous raw output, which lowers the noise by ~1/sqrt(2);
- the interrupt function, evaluated on each output frame while INTC.INTEN is set (absolute mode compares
  pixels with the levels, difference mode compares the change since the previous frame); per-pixel
  hysteresis: a pixel that crossed a level stays active until it is back inside by the hysteresis amount;
  active pixels latch into the table, STAT.INTF mirrors "table not empty", SCLR.INTCLR clears both;
- the INT output: open drain, active low, driven low while INTEN and INTF, released on clear;
- noise: Gaussian at the datasheet NETD, 0.25 °C quantisation, 0.0625 °C thermistor, a seeded per-sensor
  offset and a small per-pixel fixed pattern;
- faults: OSError on the next N transactions or while a scheduled window is open, stuck frames (the pixel
  registers stop changing), out-of-range values (saturated pixels with the overflow flag).

The "true" temperatures come from a `Scene`: field(t) -> (64 °C values in image orientation, row-major,
or 8 rows of 8; ambient °C).

Plain Python, no numpy: the sim backend runs this inside the thermal daemon, where numpy would cost
~12 MB of RSS (issue 8). The arithmetic is the one the numpy version did, in the same order, and the
random draws come from a `Noise`: by default `PyNoise` (the standard library's generator, seeded), so
the daemon's sim draws other numbers than the numpy version did, from the same distributions. A caller
that needs numpy's exact streams (the screening corpus, appliance/sim/suite.py, whose recordings stay
as they were) passes a `Noise` backed by numpy's Generator.

The fake only advances when touched. A daemon waiting for the INT edge touches nothing, so whoever runs
the sim backend calls `tick()` at least once per frame period (a timer or a loop), as the chip's own clock
would.
"""

from __future__ import annotations

import errno
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.thermal import registers as reg

log = logging.getLogger(__name__)

FRAME_PERIOD_S = 0.1  # the chip's internal sampling period, whatever the output rate
_CATCH_UP_FRAMES = 20  # after a long gap, simulate only this many internal samples (enough for 1 fps)
_OUT_OF_RANGE_RAW = 0x7FF  # the ADC rail: 511.75 °C, what a saturated or broken pixel reads
# The transaction and register-write logs keep the most recent entries only: tests look at the
# last few, and the sim backend runs the fake for weeks (a full log grew 10 MB an hour).
LOG_KEEP = 10_000


def _keep_recent(entries: list[Any]) -> None:
    if len(entries) > 2 * LOG_KEEP:
        del entries[:-LOG_KEEP]


class Scene(Protocol):
    def field(self, t: float) -> tuple[Iterable[Any], float]:
        """True temperatures at scene time t: (64 °C row-major or 8 rows of 8, row 0 = top of the
        image), ambient °C."""
        ...


class Noise(Protocol):
    """Where the fake's (and the sim scene's) random numbers come from."""

    def normal(self, loc: float, scale: float) -> float:
        """One draw from N(loc, scale²), computed as loc + scale * z."""
        ...

    def sample(self, population: int, k: int) -> list[int]:
        """k distinct integers from range(population)."""
        ...


class PyNoise:
    """Noise from the standard library's Mersenne Twister, seeded: deterministic for a seed."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def normal(self, loc: float, scale: float) -> float:
        return loc + scale * self._random.normalvariate(0.0, 1.0)

    def sample(self, population: int, k: int) -> list[int]:
        return self._random.sample(range(population), k)


@dataclass(frozen=True)
class FaultState:
    i2c_error: bool = False
    stuck_frames: bool = False
    out_of_range: bool = False


NO_FAULTS = FaultState()


class FaultSchedule(Protocol):
    def faults_at(self, t: float) -> FaultState: ...


class OutputPin(Protocol):
    """What the fake needs of the pin wired to INT: a gpiozero MockPin fits."""

    def drive_low(self) -> None: ...

    def drive_high(self) -> None: ...


class ManualClock:
    """A clock that moves only when told: frame timing in tests and suites without sleeping."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class StaticScene:
    """A scene whose field the caller sets: for tests that need exact control of the input."""

    def __init__(self, field_c: Iterable[Any] | float = 22.0, ambient_c: float = 22.0) -> None:
        """`field_c`: one temperature for every pixel, or 64 values row-major, or 8 rows of 8. Tests
        change `field_c` (replace it, or assign to its items) to change the scene."""
        self.ambient_c = ambient_c
        self.field_c: list[float] = (
            [float(field_c)] * reg.PIXEL_COUNT
            if isinstance(field_c, int | float)
            else reg.flat_pixels(field_c)
        )

    def field(self, t: float) -> tuple[list[float], float]:
        return reg.flat_pixels(self.field_c), self.ambient_c


@dataclass
class Transaction:
    kind: str  # "write", "read" or "write_read"
    address: int
    written: bytes
    read_len: int


class FakeAMG8833:
    """The chip: 256 registers, a frame clock, noise, interrupts, an INT pin and injectable faults."""

    def __init__(
        self,
        scene: Scene,
        *,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        noise: Noise | None = None,
        int_pin: OutputPin | None = None,
        faults: FaultSchedule | None = None,
        offset_c: float | None = None,
        pixel_offset_std_c: float = 0.1,
        netd_c: float = reg.NETD_10FPS_C,
        thermistor_self_heating_c: float = 0.5,
    ) -> None:
        self.scene = scene
        self.clock = clock
        self.int_pin = int_pin
        self.faults = faults
        # `seed` seeds the default noise; a `noise` given instead brings its own seed.
        self._rng: Noise = PyNoise(seed) if noise is None else noise
        # Datasheet accuracy is ±2.5 °C; most parts sit well inside it.
        self.offset_c = (
            min(max(float(self._rng.normal(0.0, 0.8)), -2.5), 2.5) if offset_c is None else offset_c
        )
        # Register order, row-major: the fixed pattern sits on the chip's pixels.
        self.pixel_offsets_c: list[float] = (
            [float(self._rng.normal(0.0, pixel_offset_std_c)) for _ in range(reg.PIXEL_COUNT)]
            if pixel_offset_std_c
            else [0.0] * reg.PIXEL_COUNT
        )
        self.netd_c = netd_c
        self.thermistor_self_heating_c = thermistor_self_heating_c
        self.regs = bytearray(256)
        self.register_writes: list[tuple[int, int]] = []  # every byte written, in order: (register, value)
        self.frames_output = 0
        self._origin = clock()
        self._pointer = 0
        self._unlock_progress = 0
        self._next_sample = 0  # index of the next internal 10 fps sample to simulate
        # Frames below are lists of 64, register order, row-major.
        self._samples: deque[list[float]] = deque(maxlen=10)
        self._prev_output: list[float] | None = None  # for moving average
        self._prev_frame_counts: list[int] | None = None  # for difference interrupts
        self._active = [False] * reg.PIXEL_COUNT  # per-pixel interrupt state (with hysteresis)
        self._fail_next = 0
        self.stuck = False
        self.out_of_range = False
        self._pin_low = False
        if int_pin is not None:
            int_pin.drive_high()  # released: the open-drain line sits at its pull-up
        self._initial_reset()

    # -- the bus side --------------------------------------------------------------------------------

    def check_transaction(self) -> None:
        """Raise the OSError a NACKing chip gives the kernel driver (EREMOTEIO), if a fault says so."""
        self.tick()
        if self._fail_next > 0:
            self._fail_next -= 1
            raise OSError(errno.EREMOTEIO, "Remote I/O error (injected)")
        if self._scheduled().i2c_error:
            raise OSError(errno.EREMOTEIO, "Remote I/O error (scheduled fault)")

    def write(self, data: bytes) -> None:
        if not data:
            return  # an address-only probe
        self._pointer = data[0]
        for value in data[1:]:
            self._write_register(self._pointer, value)
            self._pointer = (self._pointer + 1) & 0xFF

    def read(self, length: int) -> bytes:
        out = bytearray()
        for _ in range(length):
            out.append(self._read_register(self._pointer))
            self._pointer = (self._pointer + 1) & 0xFF
        return bytes(out)

    # -- fault injection ------------------------------------------------------------------------------

    def fail_next(self, transactions: int) -> None:
        self._fail_next = transactions

    # -- time ------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Produce every frame whose time has come (the chip's clock runs whether or not anyone reads)."""
        elapsed = self.clock() - self._origin
        # The epsilon keeps a clock advanced by exactly 0.1 s steps from landing a hair before a frame.
        due = math.floor(elapsed / FRAME_PERIOD_S + 1e-6)
        if due < self._next_sample:
            return
        first = max(self._next_sample, due - _CATCH_UP_FRAMES + 1)
        for k in range(first, due + 1):
            self._sample(k)
        self._next_sample = due + 1

    def scene_time(self) -> float:
        return self.clock() - self._origin

    # -- internals -------------------------------------------------------------------------------------

    def _scheduled(self) -> FaultState:
        return self.faults.faults_at(self.scene_time()) if self.faults is not None else NO_FAULTS

    def _sample(self, k: int) -> None:
        t = k * FRAME_PERIOD_S
        image, ambient = self.scene.field(t)
        true_reg = reg.image_to_register(reg.flat_pixels(image))
        offset, rng, netd = self.offset_c, self._rng, self.netd_c
        noisy = [
            v + offset + pixel_offset + rng.normal(0.0, netd)
            for v, pixel_offset in zip(true_reg, self.pixel_offsets_c, strict=True)
        ]
        self._samples.append(noisy)
        thermistor = ambient + self.thermistor_self_heating_c + rng.normal(0.0, 0.03)
        self._set_word(reg.TTHL, reg.thermistor_c_to_raw(thermistor))
        if self.regs[reg.PCTL] != reg.PCTL_NORMAL:
            return  # sleep and stand-by: no new pixel data
        if self.regs[reg.FPSC] & reg.FPSC_1FPS:
            if k % 10 != 9 or len(self._samples) < 10:
                return
            output = _mean(list(self._samples)[-10:])
        else:
            output = noisy
        self._output_frame(output, t)

    def _output_frame(self, output: list[float], t: float) -> None:
        raw_output = output
        if self.regs[reg.AVE] & reg.AVE_MAMOD and self._prev_output is not None:
            output = [(a + b) / 2.0 for a, b in zip(output, self._prev_output, strict=True)]
        self._prev_output = raw_output
        faults = self._scheduled()
        self.frames_output += 1
        if self.stuck or faults.stuck_frames:
            return  # the pixel registers keep the last frame: what a hung ADC looks like on the bus
        # round() is round-half-even, as the ADC model always was (numpy's rint).
        counts = [max(-0x800, min(0x7FF, round(v / reg.PIXEL_LSB_C))) for v in output]
        if self.out_of_range or faults.out_of_range:
            for broken in self._rng.sample(reg.PIXEL_COUNT, 8):
                counts[broken] = _OUT_OF_RANGE_RAW
            self.regs[reg.STAT] |= reg.STAT_OVF_IRS
        self.regs[reg.PIXELS : reg.PIXELS + reg.PIXELS_LEN] = reg.encode_pixels(
            [count * reg.PIXEL_LSB_C for count in counts]
        )
        self._evaluate_interrupt(counts)

    def _evaluate_interrupt(self, counts: list[int]) -> None:
        previous, self._prev_frame_counts = self._prev_frame_counts, counts
        intc = self.regs[reg.INTC]
        if not intc & reg.INTC_INTEN:
            return
        if intc & reg.INTC_ABSOLUTE:
            values = counts
        elif previous is None:
            return  # difference mode needs two frames
        else:
            values = [now - before for now, before in zip(counts, previous, strict=True)]
        upper = reg.raw12_to_twos(self._word(reg.INTHL))
        lower = reg.raw12_to_twos(self._word(reg.INTLL))
        hysteresis = reg.raw12_to_twos(self._word(reg.IHYSL))
        # An active pixel stays active until it is back inside by the hysteresis; an inactive one
        # becomes active when it crosses a level.
        self._active = [
            not (upper - hysteresis >= value >= lower + hysteresis)
            if active
            else (value > upper or value < lower)
            for value, active in zip(values, self._active, strict=True)
        ]
        if any(self._active):
            table = reg.decode_interrupt_table(self.regs[reg.INT_TABLE : reg.INT_TABLE + 8])
            table |= reg.grid_to_mask(self._active)
            self.regs[reg.INT_TABLE : reg.INT_TABLE + 8] = reg.encode_interrupt_table(table)
            self.regs[reg.STAT] |= reg.STAT_INTF
        self._update_pin()

    def _update_pin(self) -> None:
        low = bool(self.regs[reg.INTC] & reg.INTC_INTEN) and bool(self.regs[reg.STAT] & reg.STAT_INTF)
        if low == self._pin_low:
            return
        self._pin_low = low
        if self.int_pin is not None:
            if low:
                self.int_pin.drive_low()
            else:
                self.int_pin.drive_high()

    @property
    def int_asserted(self) -> bool:
        return self._pin_low

    def _clear_interrupt(self) -> None:
        self.regs[reg.STAT] &= ~reg.STAT_INTF & 0xFF
        self.regs[reg.INT_TABLE : reg.INT_TABLE + 8] = bytes(8)

    def _flag_reset(self) -> None:
        self._clear_interrupt()
        self.regs[reg.STAT] = 0
        self._active = [False] * reg.PIXEL_COUNT
        self._update_pin()

    def _initial_reset(self) -> None:
        for address in (reg.PCTL, reg.FPSC, reg.INTC, reg.AVE, *range(reg.INTHL, reg.IHYSH + 1)):
            self.regs[address] = 0
        self._unlock_progress = 0
        self._prev_output = None
        self._prev_frame_counts = None
        self._flag_reset()

    def _word(self, low_address: int) -> int:
        return reg.join_le16(self.regs[low_address], self.regs[low_address + 1])

    def _set_word(self, low_address: int, raw: int) -> None:
        self.regs[low_address], self.regs[low_address + 1] = reg.split_le16(raw)

    def _read_register(self, address: int) -> int:
        if address in (reg.RST, reg.SCLR, reg.AVE_UNLOCK):
            return 0  # write-only
        return self.regs[address]

    def _write_register(self, address: int, value: int) -> None:
        self.register_writes.append((address, value))
        _keep_recent(self.register_writes)
        if address == reg.RST:
            if value == reg.RST_INITIAL:
                self._initial_reset()
            elif value == reg.RST_FLAG:
                self._flag_reset()
        elif address == reg.SCLR:
            if value & reg.SCLR_INTCLR:
                self._clear_interrupt()
            if value & reg.SCLR_OVS_CLR:
                self.regs[reg.STAT] &= ~reg.STAT_OVF_IRS & 0xFF
            if value & reg.SCLR_OVT_CLR:
                self.regs[reg.STAT] &= ~reg.STAT_OVF_THS & 0xFF
            self._update_pin()
        elif address == reg.AVE_UNLOCK:
            self._track_unlock(value)
        elif address == reg.AVE:
            if self._unlock_progress == len(reg.AVE_UNLOCK_SEQUENCE):
                self.regs[reg.AVE] = value & reg.AVE_MAMOD
            else:
                log.debug("AVE write 0x%02x ignored: moving average is locked", value)
        elif address == reg.FPSC:
            self.regs[address] = value & reg.FPSC_1FPS
        elif address == reg.INTC:
            self.regs[address] = value & (reg.INTC_INTEN | reg.INTC_ABSOLUTE)
            self._update_pin()
        elif address == reg.PCTL:
            self.regs[address] = value
        elif reg.INTHL <= address <= reg.IHYSH:
            # High bytes carry 4 bits of the 12-bit level.
            self.regs[address] = value & (0x0F if (address - reg.INTHL) % 2 else 0xFF)
        # STAT, the thermistor, the table and the pixels are read only: writes vanish as on the chip.

    def _track_unlock(self, value: int) -> None:
        sequence = reg.AVE_UNLOCK_SEQUENCE
        if value == reg.AVE_LOCK:
            self._unlock_progress = 0
        elif self._unlock_progress < len(sequence) and value == sequence[self._unlock_progress]:
            self._unlock_progress += 1
        else:
            self._unlock_progress = 1 if value == sequence[0] else 0


@dataclass
class FakeI2C:
    """A busio.I2C stand-in with devices at addresses, a lock, and a log of every transaction."""

    devices: dict[int, FakeAMG8833] = field(default_factory=dict)
    log: list[Transaction] = field(default_factory=list)
    _locked: bool = False

    def try_lock(self) -> bool:
        if self._locked:
            return False
        self._locked = True
        return True

    def unlock(self) -> None:
        self._locked = False

    def deinit(self) -> None:
        self._locked = False

    def __enter__(self) -> FakeI2C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deinit()

    def scan(self) -> list[int]:
        return sorted(self.devices)

    def writeto(
        self, address: int, buffer: bytes | bytearray, *, start: int = 0, end: int | None = None
    ) -> None:
        data = bytes(buffer[start:end])
        self.log.append(Transaction("write", address, data, 0))
        _keep_recent(self.log)
        self._device(address).write(data)

    def readfrom_into(
        self, address: int, buffer: bytearray, *, start: int = 0, end: int | None = None
    ) -> None:
        end = len(buffer) if end is None else end
        self.log.append(Transaction("read", address, b"", end - start))
        _keep_recent(self.log)
        buffer[start:end] = self._device(address).read(end - start)

    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: bytes | bytearray,
        buffer_in: bytearray,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        # One transaction with a repeated start: nothing can slip between the write and the read.
        data = bytes(buffer_out[out_start:out_end])
        in_end = len(buffer_in) if in_end is None else in_end
        self.log.append(Transaction("write_read", address, data, in_end - in_start))
        _keep_recent(self.log)
        device = self._device(address)
        device.write(data)
        buffer_in[in_start:in_end] = device.read(in_end - in_start)

    def _device(self, address: int) -> FakeAMG8833:
        device = self.devices.get(address)
        if device is None:
            raise OSError(errno.EREMOTEIO, f"no device at 0x{address:02x}")
        device.check_transaction()
        return device


def fake_bus(
    scene: Scene, *, address: int = reg.ADDRESS_DEFAULT, **device_options: object
) -> tuple[FakeI2C, FakeAMG8833]:
    """A bus with one fake AMG8833 on it; keyword options go to FakeAMG8833."""
    device = FakeAMG8833(scene, **device_options)  # type: ignore[arg-type]
    return FakeI2C(devices={address: device}), device


def _mean(frames: Sequence[list[float]]) -> list[float]:
    """The per-pixel mean of frames: summed in order, then divided by the count, as numpy's mean over
    the first axis did it (the exact float rounding is what the screening corpus was recorded with)."""
    total = list(frames[0])
    for frame in frames[1:]:
        total = [a + b for a, b in zip(total, frame, strict=True)]
    return [v / len(frames) for v in total]


def changed_registers(writes: Iterable[tuple[int, int]], addresses: Iterable[int]) -> list[tuple[int, int]]:
    """The writes that landed in `addresses`, in order: for asserting configuration sequences."""
    wanted = set(addresses)
    return [(a, v) for a, v in writes if a in wanted]
