"""The thermal daemon's power-aware sampling policy: a pure core fed timestamps, frames and interrupts.

Nobody in front: the sensor runs at thermal.idle_fps (1 fps: less self-heating of the sensor, less I2C
traffic and CPU) with its threshold interrupt armed at background + thermal.presence_delta_c. A pixel
above that level, seen through the INT edge or in a frame read at the idle rate, means someone arrived:
switch to active_fps (10) and stay there until nothing has been present for thermal.idle_after_s.

While active the interrupt is off. The 10 fps frames show presence by themselves, and an armed interrupt
would fire on every frame for as long as someone stands there (the chip re-latches active pixels after
each clear), which is an event per frame on the bus with nothing new in it.

Background: one number, the median of a quiet frame's 64 pixels (a frame with no pixel above the presence
level), smoothed with an exponential moving average so that the room's slow drift is followed. The median
shrugs off the few warm pixels of something small in view. It rises slowly (background_tau_s) so that
nobody standing near the threshold can pull it up after them, and falls faster (background_fall_tau_s):
a frame cooler than the background is evidence that the estimate is too high (it started with someone in
view), and a background stuck high would hide the next arrival.

Fixtures: a warm thing that never moves (a radiator, a coffee machine, a lamp, a sunlit patch of wall)
keeps a few pixels above the presence level for ever; the median background ignores them, so without
more the sensor would stay at 10 fps for weeks. A pixel that stays above the presence level with a steady
value (within FIXTURE_BAND_C of its own slowly tracked reference) for thermal.fixture_after_s becomes a
fixture and no longer counts as presence. It stops being one at once when it changes by more than the
band (cools, or warms further: someone in front of it, a hand on it, the thing switched off) or falls to
the presence level; a changed pixel that is still above the level is presence on that very frame. Every
other pixel counts as before, so someone arriving beside a radiator is seen on the next frame. Frames
whose only warm pixels are fixtures are quiet frames: the background goes on following the room.

The band is 1 °C, not tighter: at 10 fps (where a new warm thing is learned, since it counts as presence
until it is a fixture) the sensor's noise (NETD 0.16 °C, 0.25 °C steps) would take a steady pixel out of
a ±0.5 °C band every few minutes and the fixture would never be learned. The reference follows the pixel
(FIXTURE_TRACK_TAU_S) so that a sunlit patch drifting over the day is not a change; a step is.

The interrupt and fixtures: the chip has one absolute level for the whole frame, so while a fixture is
known an armed interrupt would fire on every frame. Raising the level above the fixture is no answer (a
radiator at 50 °C is far hotter than a face, which would then be missed). So while any fixture is known the
interrupt is off and presence comes from the idle-rate frames with the fixtures masked, as when INT is not
wired. The cost is arrival latency: the chip's interrupt is evaluated on its own 1 fps output frames
anyway, and the daemon polls twice per frame period, so an arrival is noticed up to one poll period
(0.5 s at 1 fps) later than through INT, at most ~1.5 s after the person appears. The interrupt comes back
as soon as the last fixture is forgotten.

Someone standing perfectly still for fixture_after_s would become a fixture too, and the sensor would go
to its idle rate while they stand there. That is harmless: screening works on the frames themselves at
whatever rate they come (it reads thermal.frame and the state in thermal.status, not this policy's
presence), a screening visit takes seconds against the several minutes of fixture_after_s, and any move
of theirs, or their leaving, is a change that ends the fixture at once.

Every method takes the time `t` (monotonic seconds) of what it reports; the policy never reads a clock,
so tests drive it with any timeline and the daemon with time.monotonic().

Plain Python on lists of 64 floats, no numpy: the policy runs in the thermal daemon, where numpy would
cost ~12 MB of RSS for 64 numbers (issue 8). The arithmetic is the one numpy did, in the same order.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appliance.thermal import registers as reg

# Far below anything the AMG8833 can see (its object range starts at 0 °C) and below the driver's
# plausibility floor: the lower level must never fire. A pixel that reads this cold is a fault, which the
# driver reports on the next frame.
LOWER_LEVEL_C = -20.0
# The chip compares against levels in 0.25 °C steps; a new level is programmed only when the background
# has moved by at least this much, so a drifting room does not mean an I2C write on every frame.
LEVEL_STEP_C = 0.5
MAX_HYSTERESIS_C = 1.0
# A fixture pixel's value must stay within this of its reference (°C, either way); see the docstring for
# why 1 °C and not less.
FIXTURE_BAND_C = 1.0
# How fast a steady warm pixel's reference follows it: slow drift (the sun moving over a wall, a radiator's
# thermostat settling) is followed; a step beyond the band is a change.
FIXTURE_TRACK_TAU_S = 60.0
PIXELS = reg.ROWS * reg.COLS


@dataclass(frozen=True)
class InterruptLevels:
    """Absolute-mode levels for the chip, in °C, already on its 0.25 °C grid."""

    upper_c: float
    lower_c: float
    hysteresis_c: float


@dataclass(frozen=True)
class Plan:
    """What the sensor should be doing now."""

    fps: int
    interrupt: InterruptLevels | None  # None: interrupt off
    present: bool  # someone (something warm) was seen within idle_after_s


def quantize_level(celsius: float) -> float:
    """The value the chip will actually hold for a level (0.25 °C steps)."""
    return reg.level_raw_to_c(reg.level_c_to_raw(celsius))


class SamplingPolicy:
    def __init__(
        self,
        *,
        idle_fps: int,
        active_fps: int,
        idle_after_s: float,
        presence_delta_c: float,
        background_tau_s: float = 60.0,
        background_fall_tau_s: float = 5.0,
        fixture_after_s: float = 300.0,
    ) -> None:
        if not 0 < idle_fps <= active_fps:
            raise ValueError(f"need 0 < idle_fps <= active_fps, got {idle_fps} and {active_fps}")
        for name, value in (
            ("idle_after_s", idle_after_s),
            ("presence_delta_c", presence_delta_c),
            ("background_tau_s", background_tau_s),
            ("background_fall_tau_s", background_fall_tau_s),
            ("fixture_after_s", fixture_after_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, not {value}")
        self.idle_fps = idle_fps
        self.active_fps = active_fps
        self.idle_after_s = idle_after_s
        self.presence_delta_c = presence_delta_c
        self.background_tau_s = background_tau_s
        self.background_fall_tau_s = background_fall_tau_s
        self.fixture_after_s = fixture_after_s
        self.hysteresis_c = quantize_level(min(MAX_HYSTERESIS_C, presence_delta_c / 2))
        self._background: float | None = None
        self._last_quiet: float | None = None
        self._last_presence: float | None = None
        self._levels: InterruptLevels | None = None
        self._now: float | None = None
        # Per pixel, image order: the reference of a pixel above the presence level (NaN: not above it
        # at the last frame), since when it has been steady, and whether it is a fixture.
        self._reference = [math.nan] * PIXELS
        self._steady_since = [0.0] * PIXELS
        self._fixture = [False] * PIXELS
        self._last_frame: float | None = None

    # -- what it knows ---------------------------------------------------------------------------------

    @property
    def background(self) -> float | None:
        """°C, or None before the first frame."""
        return self._background

    @property
    def presence_level(self) -> float | None:
        """A pixel above this (°C) counts as someone there; None before the first frame."""
        return None if self._background is None else self._background + self.presence_delta_c

    @property
    def fixture_count(self) -> int:
        """Pixels of static warm objects currently not counted as presence."""
        return sum(self._fixture)

    @property
    def fixture_mask(self) -> int:
        """The fixture pixels as a 64-bit mask, image order: bit i is pixel i of a frame (row-major)."""
        return sum(1 << i for i, fixture in enumerate(self._fixture) if fixture)

    # -- inputs ----------------------------------------------------------------------------------------

    def on_frame(self, t: float, pixels: Iterable[Any]) -> Plan:
        """A new frame (64 values row-major, or 8 rows of 8, °C) read at time t."""
        self._advance(t)
        values = reg.flat_pixels(pixels)
        if not all(math.isfinite(v) for v in values):
            raise ValueError("frame holds a non-finite value")
        # Of 64 values, the mean of the middle two: (a + b) / 2, as numpy's median computed it.
        median = statistics.median(values)
        if self._background is None:
            # The first frame is the best guess there is; the median ignores a minority of warm pixels.
            self._background = median
        level = self._background + self.presence_delta_c
        above = [v > level for v in values]
        self._learn_fixtures(t, values, above)
        if any(a and not f for a, f in zip(above, self._fixture, strict=True)):
            self._last_presence = t
        else:
            # Nothing above the level but known fixtures: a quiet frame, so the room is still followed.
            self._learn_background(t, median)
        return self.plan(t)

    def on_interrupt(self, t: float, mask: int) -> Plan:
        """The chip's interrupt fired with these pixels, image order (bit i = frame pixel i).

        An empty mask is a spurious edge. The interrupt is off while fixtures are known, but an edge
        latched before can still arrive: fixture pixels in it are not presence.
        """
        self._advance(t)
        if mask & ~self.fixture_mask:
            self._last_presence = t
        return self.plan(t)

    def plan(self, t: float) -> Plan:
        """What the sensor should do at time t (also as time passes without frames)."""
        self._advance(t)
        present = self._last_presence is not None and t - self._last_presence < self.idle_after_s
        if present or self._background is None:
            # No background yet: no level to arm with; the first frame comes at the idle rate.
            return Plan(self.active_fps if present else self.idle_fps, None, present)
        if any(self._fixture):
            # The chip's level is frame-wide: armed, it would fire on the fixture on every frame.
            return Plan(self.idle_fps, None, False)
        return Plan(self.idle_fps, self._levels_for(self._background), False)

    # -- internals -------------------------------------------------------------------------------------

    def _advance(self, t: float) -> None:
        if not math.isfinite(t):
            raise ValueError(f"time must be finite, not {t}")
        if self._now is not None and t < self._now:
            raise ValueError(f"time went backwards: {t} after {self._now}")
        self._now = t

    def _learn_fixtures(self, t: float, values: list[float], above: list[bool]) -> None:
        dt = 0.0 if self._last_frame is None else t - self._last_frame
        self._last_frame = t
        alpha = 1.0 - math.exp(-dt / FIXTURE_TRACK_TAU_S)
        reference, steady_since, fixture = self._reference, self._steady_since, self._fixture
        for i, value in enumerate(values):
            ref = reference[i]
            tracked = not math.isnan(ref)  # NaN: not above the level at the last frame, untracked
            changed = tracked and abs(value - ref) > FIXTURE_BAND_C
            # A change, or a fall to the level, ends a fixture at once; a changed pixel above the level
            # starts over from its new value, so it is presence on this very frame.
            if not above[i]:
                fixture[i] = False
                reference[i] = math.nan
            elif changed or not tracked:
                fixture[i] = fixture[i] and not changed
                reference[i] = value
                steady_since[i] = t
            else:
                reference[i] = ref + alpha * (value - ref)
                fixture[i] = fixture[i] or t - steady_since[i] >= self.fixture_after_s

    def _learn_background(self, t: float, median: float) -> None:
        assert self._background is not None
        if self._last_quiet is not None:
            dt = t - self._last_quiet
            tau = self.background_tau_s if median > self._background else self.background_fall_tau_s
            # Time-based smoothing: the same room drift gives the same estimate at 1 fps and at 10 fps.
            alpha = 1.0 - math.exp(-dt / tau)
            self._background += alpha * (median - self._background)
        self._last_quiet = t

    def _levels_for(self, background: float) -> InterruptLevels:
        wanted = quantize_level(background + self.presence_delta_c)
        if self._levels is None or abs(wanted - self._levels.upper_c) >= LEVEL_STEP_C:
            self._levels = InterruptLevels(wanted, LOWER_LEVEL_C, self.hysteresis_c)
        return self._levels
