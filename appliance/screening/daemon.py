"""`appliance run screening`: the screening state machine on live thermal frames.

    thermal.frame, thermal.status --> [ScreeningMachine] --> screening.state (retained, on change)
                                            |
                                            +--> events.db (seq) --> screening.result, alert.fever
                                            +--> LEDs, buzzer, door relay

Frames are fed in order with their envelope time (monotonic, set by the thermal daemon), so
the machine's timing is the sensor's, not this process's. Things the sensor cannot be trusted
for are turned into a fault the machine sees (``FrameInput(fault=True)``), so no "normal" can
come out of a window they touched:

- ``thermal.status`` says fault (frames are flagged faulty until it says ok again);
- a gap: no frame for ``GAP_PERIODS`` frame periods (at the idle frame rate while nobody is
  in front, since the thermal daemon slows down then);
- no frames at all since start: ``screening.state`` is fault with the reason.

Every result is written to events.db before it is published (``EventStore.append``), and
its durability checkpoint runs in a worker thread after the publish (see events.py for the
measurements behind that split). When the database cannot be written, results wait in
memory in order and are published once written; screening itself, the screen and the LEDs,
go on.

A Pi has no real-time clock, so the wall clock may be stepped (by weeks) once NTP syncs: the
store is given this boot's id and CLOCK_BOOTTIME, each result its boottime, and the tick asks
the store to correct this boot's events right after a step (events.py explains how). The
retention purge is told whether the kernel says the clock is synchronized
(``appliance.clocksync``): until it is, earlier boots' events are not judged by it.

Bus methods: ``screening.events_since`` (what a reconnecting consumer missed) and
``screening.calibrate`` (collects frames of a reference person, stores and applies the offset).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
import sqlite3
import statistics
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from appliance import clocksync
from appliance.bus.client import BusClient, Subscription
from appliance.bus.topics import (
    CalibrateParams,
    CalibrateResult,
    EventsPage,
    EventsSince,
    ResultName,
    ScreeningStateName,
    ThermalFrame,
    ThermalStatus,
)
from appliance.bus.topics import ScreeningState as StateMsg
from appliance.config import AppConfig
from appliance.errors import ApplianceError, ConfigError, StateError
from appliance.runtime import Runtime
from appliance.screening import calstore
from appliance.screening.configure import settings_with_calibration
from appliance.screening.estimator import calibration_offset
from appliance.screening.events import (
    Appended,
    Draft,
    EventStore,
    current_boot_id,
    is_busy,
    is_damage,
    path_in,
    read_boottime,
)
from appliance.screening.machine import ScreeningMachine
from appliance.screening.outputs import Outputs, indication
from appliance.screening.records import FrameInput, ScreeningResult, Step
from appliance.screening.records import ScreeningState as CoreState
from appliance.screening.settings import ScreeningSettings

log = logging.getLogger(__name__)

GAP_PERIODS = 3.0
# Without any frame this long after start, the thermal daemon is missing: say so.
START_GRACE_S = 5.0
TICK_S = 0.1
# A frame whose time is this far behind the last one comes from a new time base (a thermal
# daemon on another clock, a replay restarted): start the machine over instead of ignoring it.
NEW_TIMEBASE_S = 1.0
PROGRESS_STEP = 0.1
PURGE_EVERY_S = 3600.0
RETRY_STORE_S = 10.0
BUSY_RETRY_S = 0.5
# From a result's publish to its durability checkpoint: the alert reaches the broker and its
# subscribers first, without the checkpoint's work competing for two cores. A power cut inside
# this window (plus the fsyncs' own time) can lose that result from events.db; see events.py.
FLUSH_DELAY_S = 0.02
RETRY_CALIBRATION_S = 10.0
STATUS_EVERY_S = 1.0
# Results held in memory while events.db cannot be written (a person is seconds apart, so
# this is hours); beyond it the oldest are dropped and counted.
MAX_PENDING = 10_000
# Calibration: at the active frame rate, N frames take N/10 s; allow double plus a margin.
CALIBRATION_BASE_S = 10.0
CALIBRATION_PER_FRAME_S = 0.2
ACTIVE_STATES = frozenset(
    {"approaching", "too-far", "too-close", "multiple", "hold-still", "measuring", "result"}
)
NO_THERMAL = "no frames from the thermal daemon"


class CalibrationError(ApplianceError):
    """A calibration request that cannot be done; its text is the bus error reply."""


class _Collector:
    """Frames for a calibration, gathered from the frame loop."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.frames: list[FrameInput] = []
        self.done: asyncio.Future[list[FrameInput]] = asyncio.get_running_loop().create_future()

    def add(self, frame: FrameInput) -> None:
        if self.done.done():
            return
        if frame.fault:
            self.fail("the thermal sensor reported a fault during calibration")
            return
        self.frames.append(frame)
        if len(self.frames) >= self.wanted:
            self.done.set_result(self.frames)

    def fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(CalibrationError(reason))


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class ScreeningService:
    """Everything but the asyncio plumbing: frames in, states, results and outputs out.

    All methods run on the event loop thread and never await, so a frame, a tick and a
    request handler can never interleave halfway.
    """

    def __init__(
        self,
        config: AppConfig,
        bus: BusClient,
        outputs: Outputs,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        boottime: Callable[[], float] = read_boottime,
        boot_id: Callable[[], str | None] = current_boot_id,
        clock_synchronized: Callable[[], bool | None] = clocksync.wall_clock_synchronized,
    ) -> None:
        self.config = config
        self.bus = bus
        self.outputs = outputs
        self.clock = clock
        self.wall = wall
        # With the boot id, what events.db tells a stepped wall clock by (see events.py).
        self.boottime = boottime
        self.boot_id = boot_id
        # Whether the kernel says the wall clock is synchronized: what the purge trusts it by.
        self.clock_synchronized = clock_synchronized
        self.started = clock()
        self._last_tick = self.started
        self.idle_period_s = 1.0 / config.thermal.idle_fps
        self.store_path = path_in(config.paths.state_dir)
        self.store: EventStore | None = None
        self.store_problem: str | None = None
        self._next_store_try = 0.0
        self._write_retry_at = 0.0
        self.pending: deque[Draft] = deque()
        self.dropped_pending = 0
        self.last_seq = 0
        self.results = 0
        self.alerts = 0
        self.frame_errors = 0
        # The machine; None while the stored calibration cannot be read (see _load_settings).
        self.settings: ScreeningSettings | None = None
        self.machine: ScreeningMachine | None = None
        self.blocked: str | None = None
        self._next_settings_try = 0.0
        # Frames as received (for gaps) and as fed (the machine's time only moves forward).
        self._last_rx_local: float | None = None
        self._last_rx_ts: float | None = None
        self._last_period = 0.1
        self._last_thermistor = 25.0
        self._last_fed_t: float | None = None
        self._gap = False
        self.thermal_state: str | None = None
        self.thermal_reason = ""
        self._fault_reason = ""
        self._shown: ScreeningResult | None = None
        self._published: StateMsg | None = None
        self.calibration: _Collector | None = None
        self.flush_wanted = asyncio.Event()
        # When the frame being processed arrived (None outside a frame: a result written late).
        self._frame_rx: float | None = None
        self.inside_ms: deque[float] = deque(maxlen=200)
        self._next_purge = 0.0
        self._clock_retry_at = 0.0
        self._clock_problem: str | None = None
        # Said once (until a purge on a synchronized clock): earlier boots' events were kept.
        self._held_back_said = False
        self._load_settings()

    # --- settings and store -------------------------------------------------------------------

    def _load_settings(self) -> None:
        try:
            self.settings = settings_with_calibration(self.config)
        except ConfigError as exc:
            # Screening with a forgotten offset would be wrong; crash-looping would be silent
            # to the person at the door. Show "out of order" with the reason until it is fixed.
            if self.blocked != str(exc):
                log.error("cannot read the site calibration: %s; screening is stopped until it is fixed", exc)
            self.blocked = str(exc)
            self._next_settings_try = self.clock() + RETRY_CALIBRATION_S
            self._publish_override("fault", f"calibration unreadable: {exc}")
            return
        if self.blocked is not None:
            log.info("site calibration readable again; screening resumes")
        self.blocked = None
        self.machine = ScreeningMachine(self.settings)
        self._last_fed_t = None

    def open_store(self) -> None:
        """Open events.db (or try again); a failure leaves screening running, degraded."""
        self._next_store_try = self.clock() + RETRY_STORE_S
        try:
            self.store = EventStore.open(
                self.store_path,
                seq_floor=self.last_seq,
                boot_id=self.boot_id,
                now=self.wall,
                boottime=self.boottime,
            )
        except StateError as exc:
            self.store = None
            self._store_failed(f"events.db unusable: {exc}")
            return
        self.last_seq = max(self.last_seq, self.store.last_seq)
        self.store_problem = self.store.recovered
        if self.store.recovered is None:
            log.info("events: %s, last seq %d", self.store_path, self.last_seq)
        self.purge()

    def _store_failed(self, problem: str) -> None:
        if problem != self.store_problem:
            log.error(
                "%s; results are kept in memory (%d waiting) and published once written",
                problem,
                len(self.pending),
            )
        self.store_problem = problem

    def close_store(self) -> None:
        if self.pending:
            # The last chance for results that waited for events.db (a disk that has room again
            # before the retry was due): the retry timers do not apply on the way out.
            self._write_retry_at = self._next_store_try = 0.0
            self.drain()
        if self.pending:
            log.error(
                "events: %d result(s) never written to events.db are lost at shutdown (never "
                "published either: no seq was given to them)",
                len(self.pending),
            )
        self._drop_store()

    def _drop_store(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def purge(self) -> None:
        self._next_purge = self.clock() + PURGE_EVERY_S
        if self.store is None:
            return
        days = self.config.screening.retention_days
        cutoff = self.wall() - days * 86400.0
        synchronized = self.clock_synchronized()
        try:
            n = self.store.purge(cutoff, clock_synchronized=synchronized)
        except sqlite3.Error as exc:
            log.warning("events: retention purge failed: %s", exc)
            return
        if n:
            log.info("events: purged %d events older than %d days", n, days)
        if synchronized is True:
            self._held_back_said = False
        elif self.store.purge_spared and not self._held_back_said:
            self._held_back_said = True
            log.warning(
                "events: the wall clock is %s, so the retention purge kept %d rows of earlier boots "
                "that look older than %d days by it (a clock wrongly ahead would delete them for "
                "good); they are purged once the clock is synchronized",
                "not synchronized" if synchronized is False else "not known to be synchronized",
                self.store.purge_spared,
                days,
            )

    def check_clock(self) -> None:
        """Correct this boot's events in events.db right after a wall-clock step, so that the
        setup page and the export (which read the file) show the right date at once; append
        and purge would otherwise do it only when they next run."""
        if self.store is None or self.clock() < self._clock_retry_at:
            return
        try:
            self.store.check_clock()
        except (sqlite3.Error, StateError) as exc:
            # append and purge try again themselves (and report their own failures); here only
            # a pause, so a locked file cannot block every tick for the busy timeout.
            self._clock_retry_at = self.clock() + (BUSY_RETRY_S if is_busy(exc) else RETRY_STORE_S)
            if str(exc) != self._clock_problem:
                log.warning("events: cannot correct this boot's events for a clock step yet: %s", exc)
            self._clock_problem = str(exc)
            return
        self._clock_problem = None

    # --- results ------------------------------------------------------------------------------

    def _record(self, result: ScreeningResult, settings: ScreeningSettings) -> None:
        draft = Draft(
            boottime=self.boottime(),
            wall_ts=self.wall(),
            start=result.start_t,
            end=result.end_t,
            result=result.result,
            estimate_c=result.estimate_c,
            confidence=result.confidence,
            distance_m=result.distance_m,
            ambient_c=result.ambient_c,
            reason=result.reason,
            threshold_c=settings.threshold_c,
        )
        if len(self.pending) >= MAX_PENDING:
            self.pending.popleft()
            self.dropped_pending += 1
            log.error("events: %d results lost: events.db unwritable for too long", self.dropped_pending)
        self.pending.append(draft)
        self.drain()

    def drain(self) -> None:
        """Write and then publish waiting results, oldest first, until one cannot be written."""
        if self.clock() < self._write_retry_at:
            return
        reopened = False
        while self.pending:
            if self.store is None:
                if self.clock() < self._next_store_try:
                    return
                self.open_store()
                if self.store is None:
                    return
            try:
                appended = self.store.append(self.pending[0])
            except (sqlite3.Error, StateError) as exc:
                if is_damage(exc) and not reopened:
                    # Damaged under us: set it aside now; seq continues above what we handed out.
                    log.error("events.db damaged while writing (%s); reopening", exc)
                    self._drop_store()
                    self._next_store_try = 0.0
                    self.open_store()
                    # Once per drain: a file whose check passes but whose writes still fail
                    # would otherwise be reopened and retried forever, on the event loop.
                    reopened = True
                    if self.store is not None:
                        continue
                else:
                    self._store_failed(f"events.db not writable: {exc}")
                # Each try can block the loop up to the busy timeout: not on every result.
                self._write_retry_at = self.clock() + (BUSY_RETRY_S if is_busy(exc) else RETRY_STORE_S)
                return
            self.pending.popleft()
            if self.store_problem is not None and self.store.recovered != self.store_problem:
                log.info("events.db writable again")
                self.store_problem = self.store.recovered
            self._publish_result(appended)

    def _publish_result(self, appended: Appended) -> None:
        # Durable first (above), then the two messages, the result before its alert.
        self.last_seq = appended.seq
        self.results += 1
        self.bus.publish_nowait("screening.result", appended.result)
        if appended.alert is not None:
            self.alerts += 1
            self.bus.publish_nowait("alert.fever", appended.alert)
        self.flush_wanted.set()
        if self._frame_rx is not None:
            # This process's share of the frame-to-alert budget: decide, store, publish.
            took_ms = (self.clock() - self._frame_rx) * 1000.0
            self.inside_ms.append(took_ms)
            log.debug(
                "seq %d: %s published %.3f ms after its frame arrived (at %.6f)",
                appended.seq,
                appended.result.result,
                took_ms,
                self._frame_rx,
            )

    def events_since(self, params: EventsSince) -> EventsPage:
        if self.store is None:
            self.open_store()
        if self.store is None:
            raise StateError(self.store_problem or "events.db unavailable")
        self.check_clock()  # a replay with this boot's dates right, also just after a step
        return self.store.since(params.seq, params.limit)

    # --- frames -------------------------------------------------------------------------------

    def on_frame(self, msg: ThermalFrame, ts: float) -> None:
        self._frame_rx = self.clock()
        try:
            self._on_frame(msg, ts, self._frame_rx)
        finally:
            self._frame_rx = None

    def _on_frame(self, msg: ThermalFrame, ts: float, now: float) -> None:
        period = 1.0 / msg.rate_hz
        prev_ts, prev_period = self._last_rx_ts, self._last_period
        if prev_ts is not None and ts < prev_ts - NEW_TIMEBASE_S:
            log.warning(
                "thermal frame time went back %.1f s: a new time base; screening starts over", prev_ts - ts
            )
            self._new_timebase()
            prev_ts = None
        self._last_rx_local, self._last_rx_ts, self._last_period = now, ts, period
        self._last_thermistor = msg.thermistor
        fault = self.thermal_state == "fault"
        frame = FrameInput(ts, np.asarray(msg.pixels, dtype=np.float64).reshape(8, 8), msg.thermistor, fault)
        if self.calibration is not None:
            self.calibration.add(frame)
            self._publish_override(
                "measuring", "calibrating", progress=len(self.calibration.frames) / self.calibration.wanted
            )
            return
        if self.machine is None:
            return
        if prev_ts is not None and not self._gap and ts - prev_ts > self._tolerance(max(prev_period, period)):
            # Seen only now (frames came late rather than not at all): the window that
            # spans the hole must not give a result.
            self._inject_fault(prev_ts + self._tolerance(prev_period), NO_THERMAL)
        if self._last_fed_t is not None and ts <= self._last_fed_t:
            return  # older than an injected fault: says nothing about the present
        if prev_period is not None and period > prev_period:
            # The sampler went to its idle rate (no pixel above its own presence level, which
            # is higher than what screening tracks): the longer wait for this frame is its
            # choice, not frames lost. The machine must not call it a stopped sensor.
            self.machine.frames_withheld()
        if fault:
            self._fault_reason = self._thermal_fault_reason()
        else:
            self._gap = False
            # A clean frame the machine still calls a fault is the frame's own doing.
            self._fault_reason = "implausible thermal frame"
        self._feed(frame)

    def _tolerance(self, period: float) -> float:
        active = self._published is not None and self._published.state in ACTIVE_STATES
        return GAP_PERIODS * (period if active else max(period, self.idle_period_s))

    def _thermal_fault_reason(self) -> str:
        return (
            f"thermal sensor fault: {self.thermal_reason}" if self.thermal_reason else "thermal sensor fault"
        )

    def _new_timebase(self) -> None:
        if self.machine is not None and self.settings is not None:
            self.machine = ScreeningMachine(self.settings, self.machine.background)
        self._last_fed_t = None
        self._gap = False

    def _inject_fault(self, t: float, reason: str) -> None:
        self._gap = True
        self._fault_reason = reason
        if self.calibration is not None:
            self.calibration.fail(f"thermal frames stopped: {reason}")
        if self.machine is None or self._last_fed_t is None:
            self._publish_override("fault", reason)
            return
        t = max(t, self._last_fed_t + 1e-6)
        self._feed(FrameInput(t, np.zeros((8, 8)), self._last_thermistor, fault=True))

    def _feed(self, frame: FrameInput) -> None:
        machine, settings = self.machine, self.settings
        assert machine is not None and settings is not None
        step: Step = machine.feed(frame)
        self._last_fed_t = frame.t
        decided = step.result
        if decided is not None:
            self._shown = decided
            self._record(decided, machine.settings)
        self._publish(self._state_msg(step.state), decided.result if decided is not None else None)

    def _state_msg(self, st: CoreState) -> StateMsg:
        reason = ""
        distance = None
        if st.state == "fault":
            reason = self._fault_reason or "thermal sensor fault"
        elif st.state == "result" and self._shown is not None and st.result == self._shown.result:
            distance = _finite(self._shown.distance_m)
            if self._shown.result == "retry":
                reason = self._shown.reason or ""
        return StateMsg(
            state=st.state,
            progress=min(1.0, max(0.0, st.progress)),
            result=st.result,
            estimate_c=_finite(st.estimate_c),
            distance_m=distance,
            reason=reason[:4096],
        )

    def _publish_override(self, state: ScreeningStateName, reason: str, progress: float = 0.0) -> None:
        self._publish(
            StateMsg(state=state, progress=min(1.0, max(0.0, progress)), reason=reason[:4096]), None
        )

    def _publish(self, msg: StateMsg, decided: ResultName | None) -> None:
        last = self._published
        changed = (
            last is None
            or (msg.state, msg.result, msg.estimate_c, msg.distance_m, msg.reason)
            != (last.state, last.result, last.estimate_c, last.distance_m, last.reason)
            or abs(msg.progress - last.progress) >= PROGRESS_STEP
            or (msg.progress >= 1.0 > last.progress)
        )
        if changed:
            self._published = msg
            self.bus.publish_nowait("screening.state", msg)
        if changed or decided is not None:
            self.outputs.apply(indication(msg.state, msg.result, decided))

    # --- thermal status and the clock ---------------------------------------------------------

    def announce(self) -> None:
        """The first state, before any frame: the screen has something to show at once."""
        if self._published is None:
            self._publish_override("warming-up", "waiting for thermal frames")

    def stopped(self) -> None:
        """The last state on the way out: a retained "idle" from a daemon that is gone would
        invite people to step up to a kiosk that no longer screens."""
        self._publish_override("fault", "screening stopped")

    def on_status(self, msg: ThermalStatus) -> None:
        was = self.thermal_state
        self.thermal_state, self.thermal_reason = msg.state, msg.reason
        if msg.state == "fault":
            if was != "fault":
                log.warning("thermal sensor fault: %s", msg.reason or "(no reason given)")
            reason = self._thermal_fault_reason()
            if self.calibration is not None:
                self.calibration.fail(reason)
            if self._last_rx_ts is not None and self._last_rx_local is not None:
                # The fault is now; in the frames' time base that is this far past the last one.
                self._inject_fault(self._last_rx_ts + (self.clock() - self._last_rx_local), reason)
            else:
                self._fault_reason = reason
                self._publish_override("fault", reason)
        elif msg.state == "warming-up" and self._last_rx_ts is None:
            self._publish_override("warming-up", "thermal sensor warming up")

    def tick(self) -> None:
        """Every TICK_S: frame gaps, a missing thermal daemon, retries, retention."""
        now = self.clock()
        # A tick much later than due means this loop was blocked, with frames possibly waiting
        # unread in the socket: silence measured now is our own, not the sensor's. Judge gaps
        # again at the next tick, after the frame loop has caught up.
        stalled = now - self._last_tick > 2 * TICK_S
        self._last_tick = now
        if self.blocked is not None:
            if now >= self._next_settings_try:
                self._load_settings()
        elif self._last_rx_local is None or self._last_rx_ts is None:
            if now - self.started > START_GRACE_S and self.thermal_state != "fault":
                if self.thermal_state == "warming-up":
                    self._publish_override("warming-up", "thermal sensor warming up")
                else:
                    why = "" if self.thermal_state else " (no thermal status either: is it running?)"
                    self._publish_override("fault", NO_THERMAL + why)
        elif not stalled:
            silence = now - self._last_rx_local
            if not self._gap and silence > self._tolerance(self._last_period):
                log.warning("no thermal frame for %.2f s: fault until frames resume", silence)
                self._inject_fault(self._last_rx_ts + silence, NO_THERMAL)
        self.check_clock()
        if self.pending:
            self.drain()
        elif self.store is None and now >= self._next_store_try:
            self.open_store()
        if now >= self._next_purge:
            self.purge()

    def health(self) -> tuple[str, bool]:
        state: str = self._published.state if self._published is not None else "starting"
        if self._published is not None and self._published.reason:
            state += f" ({self._published.reason})"
        parts = [state, f"{self.results} results, {self.alerts} alerts, last seq {self.last_seq}"]
        if self.inside_ms:
            parts.append(f"frame to publish {statistics.median(self.inside_ms):.2f} ms median")
        problems = []
        if self.blocked is not None:
            problems.append(f"calibration unreadable: {self.blocked}")
        if self.store_problem:
            problems.append(self.store_problem)
        if self.pending:
            problems.append(f"{len(self.pending)} results waiting for events.db")
        if self.outputs.degraded:
            problems.append(f"GPIO: {self.outputs.summary()}")
        if self.frame_errors:
            problems.append(f"{self.frame_errors} frames failed")
        return "; ".join(parts + problems), bool(problems)

    # --- calibration --------------------------------------------------------------------------

    async def calibrate(self, params: CalibrateParams) -> CalibrateResult:
        if self.blocked is not None:
            raise CalibrationError(f"screening is stopped: {self.blocked}")
        if self.calibration is not None:
            raise CalibrationError("a calibration is already running")
        if self.machine is None or self.settings is None:
            raise CalibrationError("screening is not running")
        collector = self.calibration = _Collector(params.frames)
        timeout = CALIBRATION_BASE_S + CALIBRATION_PER_FRAME_S * params.frames
        try:
            async with asyncio.timeout(timeout):
                frames = await collector.done
        except TimeoutError:
            raise CalibrationError(
                f"timed out after {timeout:.0f} s with {len(collector.frames)} of {params.frames} frames "
                "(is the thermal daemon running?)"
            ) from None
        finally:
            self.calibration = None
            if self.machine is not None:
                # It saw none of the frames the calibration took: a hole that is not a fault.
                self.machine.frames_withheld()
        machine = self.machine
        settings = machine.settings
        bg = machine.background
        # The learned empty scene makes the target stand out properly; before it has settled,
        # calibration_offset falls back to each frame's median.
        have_bg = bg.frames >= settings.background_min_frames
        mean = bg.mean.copy() if have_bg else None
        noise = bg.sigma.copy() if have_bg else None
        try:
            cal = await asyncio.to_thread(
                calibration_offset, frames, params.reference_c, settings, background=mean, noise=noise
            )
        except ValueError as exc:
            raise CalibrationError(f"no usable target in the window: {exc}") from None
        try:
            rec = await asyncio.to_thread(
                calstore.save,
                self.config.paths.state_dir,
                offset_c=cal.offset_c,
                reference_c=params.reference_c,
                measured_c=cal.measured_c,
                frames=cal.frames,
                spread_c=cal.spread_c,
                source="bus",
            )
        except (ValueError, ApplianceError) as exc:
            raise CalibrationError(str(exc)) from None
        except OSError as exc:
            raise CalibrationError(f"cannot store the calibration: {exc}") from None
        # At once, on the running machine: the background and the visit in progress stay.
        self.settings = dataclasses.replace(self.settings or settings, calibration_offset_c=rec.offset_c)
        if self.machine is not None:
            self.machine.settings = dataclasses.replace(
                self.machine.settings, calibration_offset_c=rec.offset_c
            )
        log.info(
            "calibrated: offset %+.2f degC (reference %.2f, measured %.2f over %d frames)",
            rec.offset_c,
            params.reference_c,
            rec.measured_c,
            rec.frames,
        )
        return CalibrateResult(offset_c=rec.offset_c, measured_c=rec.measured_c, frames=rec.frames)


# --- the asyncio shell ----------------------------------------------------------------------------


async def _frames(svc: ScreeningService, sub: Subscription) -> None:
    async for rx in sub:
        msg = rx.msg
        if not isinstance(msg, ThermalFrame):
            continue
        try:
            svc.on_frame(msg, rx.ts)
        except Exception:
            # A frame the core chokes on is a bug to fix, not a reason to stop screening.
            svc.frame_errors += 1
            if svc.frame_errors <= 10 or svc.frame_errors % 1000 == 0:
                log.exception("frame %d failed (%d so far)", msg.frame_seq, svc.frame_errors)


async def _statuses(svc: ScreeningService, sub: Subscription) -> None:
    async for rx in sub:
        if isinstance(rx.msg, ThermalStatus):
            svc.on_status(rx.msg)


async def _ticks(rt: Runtime, svc: ScreeningService) -> None:
    next_status = 0.0
    while True:
        await asyncio.sleep(TICK_S)
        try:
            svc.tick()
        except Exception:
            log.exception("tick failed")
        now = time.monotonic()
        if now >= next_status:
            next_status = now + STATUS_EVERY_S
            text, degraded = svc.health()
            rt.status(text, degraded=degraded)


async def _flusher(svc: ScreeningService, pool: concurrent.futures.ThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await svc.flush_wanted.wait()
        # Let the alert reach the broker and its subscribers first: on two cores the
        # checkpoint's work would compete with them for the CPU (see FLUSH_DELAY_S).
        await asyncio.sleep(FLUSH_DELAY_S)
        svc.flush_wanted.clear()
        store = svc.store
        if store is None:
            continue
        try:
            await loop.run_in_executor(pool, store.flush)
        except Exception as exc:
            # Still committed (a crash keeps it); only a power cut in the next moments could
            # take it. Say so, keep going.
            log.warning("events: durability checkpoint failed: %s", exc)


async def start(rt: Runtime, *, outputs: Outputs | None = None) -> ScreeningService:
    """Start every part on ``rt``; ``outputs`` replaces the configured GPIO (tests)."""
    bus = await rt.connect_bus()
    if outputs is None:
        outputs = Outputs(rt.config.gpio, call_later=asyncio.get_running_loop().call_later)
    svc = ScreeningService(rt.config, bus, outputs)
    rt.stack.callback(svc.stopped)  # unwinds just before the bus closes
    svc.open_store()
    rt.stack.callback(svc.close_store)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="events-flush")
    rt.stack.callback(pool.shutdown, wait=True)  # before close_store: a flush in progress ends
    # Registered last, so it runs first once the tasks have stopped: everything off, relay shut.
    rt.stack.callback(outputs.close)

    async def events_since(params: EventsSince) -> EventsPage:
        return svc.events_since(params)

    bus.serve("screening.events_since", events_since)
    bus.serve("screening.calibrate", svc.calibrate)
    statuses = bus.subscribe("thermal.status", maxsize=16)
    frames = bus.subscribe("thermal.frame", maxsize=256)
    rt.spawn(_statuses(svc, statuses), "status")
    rt.spawn(_frames(svc, frames), "frames")
    rt.spawn(_ticks(rt, svc), "tick")
    rt.spawn(_flusher(svc, pool), "flush")
    svc.announce()
    text, degraded = svc.health()
    rt.ready(text)
    if degraded:
        rt.status(text, degraded=True)
    return svc


async def main(rt: Runtime) -> None:
    await start(rt)
