"""The screening daemon against a real broker, with thermal frames published by the test.

The daemon runs in this process (so the test can hand it a MockFactory and read the pins),
on the real Runtime, a real in-process Broker, real SQLite in a temporary state directory.
Frames carry envelope times on their own clock, 0.1 s apart, and are sent a few ms apart:
the machine sees 10 fps while the test runs many times faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient, Received, Subscription
from appliance.bus.topics import (
    CalibrateParams,
    EventsSince,
    FeverAlert,
    Health,
    ScreeningState,
    ThermalFrame,
    ThermalStatus,
)
from appliance.config import AppConfig, parse_config
from appliance.errors import RemoteError
from appliance.runtime import Runtime
from appliance.screening import daemon
from appliance.screening.configure import settings_for
from appliance.screening.daemon import ScreeningService
from appliance.screening.events import Draft, EventStore
from appliance.screening.machine import ScreeningMachine
from appliance.screening.outputs import Outputs
from appliance.screening.records import FrameInput
from appliance.screening.records import ScreeningResult as CoreResult
from appliance.screening.settings import ScreeningSettings

from .synth import Clock, Head, empty, visit
from .test_events_clock import Clocks

GREEN, RED, BUZZER, RELAY = 17, 27, 22, 23


@functools.cache
def faces(settings: ScreeningSettings) -> tuple[Head, Head]:
    """A face that reads normal and one that reads elevated, for the core as it is tuned now.

    The estimator's model is fitted elsewhere and its coefficients move; these tests are about
    the daemon, so they ask the core itself which synthetic face gives which answer (well
    clear of the threshold, so frame noise cannot flip it).
    """
    found: dict[float, float] = {}
    for face_c in np.arange(28.0, 41.0, 0.25):
        head = Head(face_c=float(face_c), distance_m=0.45)
        machine, rng, clock = ScreeningMachine(settings), np.random.default_rng(11), Clock()
        frames = [*empty(clock, 1.5, rng=rng), *visit(clock, 3.0, [head], rng=rng)]
        results = [step.result for step in map(machine.feed, frames) if step.result is not None]
        if len(results) == 1 and results[0].estimate_c is not None:
            found[float(face_c)] = results[0].estimate_c
    threshold = settings.threshold_c

    def closest(target: float) -> Head:
        face_c = min(found, key=lambda f: abs(found[f] - target))
        assert abs(found[face_c] - target) < 0.4, f"no synthetic face reads {target}: {found}"
        return Head(face_c=face_c, distance_m=0.45)

    return closest(threshold - 1.5), closest(threshold + 1.2)


def make_config(state: Path, run: Path) -> AppConfig:
    return parse_config(
        {
            "paths": {"state_dir": str(state), "run_dir": str(run)},
            "bus": {"allowed_groups": []},
            "thermal": {"warmup_s": 0.0},
            "screening": {"system_warmup_s": 0.0},
            "gpio": {"pin_factory": "mock", "relay": RELAY, "relay_enabled": True, "relay_open_s": 0.5},
        }
    )


@dataclass
class Rig:
    config: AppConfig
    rt: Runtime
    svc: ScreeningService
    bus: BusClient
    pins: MockFactory
    clock: Clock = field(default_factory=Clock)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))
    base: float = field(default_factory=time.monotonic)
    frame_seq: int = 0

    @property
    def normal(self) -> Head:
        return faces(settings_for(self.config))[0]

    @property
    def fever(self) -> Head:
        return faces(settings_for(self.config))[1]

    @property
    def db(self) -> Path:
        return self.config.paths.state_dir / "events.db"

    async def play(self, frames: Iterable[FrameInput], pace: float = 0.003, rate_hz: float = 10.0) -> None:
        for f in frames:
            self.frame_seq += 1
            msg = ThermalFrame(
                pixels=[float(v) for v in np.asarray(f.pixels).ravel()],
                thermistor=f.thermistor_c,
                rate_hz=rate_hz,
                frame_seq=self.frame_seq,
            )
            self.bus.publish_nowait("thermal.frame", msg, ts=self.base + f.t)
            await asyncio.sleep(pace)

    async def empty(self, seconds: float, **kw: Any) -> None:
        await self.play(empty(self.clock, seconds, rng=self.rng, **kw))

    async def visit(self, head: Head, seconds: float = 2.5, **kw: Any) -> None:
        await self.play(visit(self.clock, seconds, [head], rng=self.rng, **kw))

    async def person(self, head: Head, **kw: Any) -> None:
        """One visit and the wait until the kiosk takes the next person (result_hold_s)."""
        await self.visit(head, **kw)
        await self.empty(3.5, noise_sd=kw.get("noise_sd", 0.16))

    async def empty_until(self, sub: Subscription, pred: Callable[[Any], bool], max_s: float = 20.0) -> Any:
        """Empty frames, half a second at a time, until a message on ``sub`` matches (the
        core decides how long it settles after a fault; the test need not know)."""
        for _ in range(int(max_s / 0.5)):
            await self.empty(0.5)
            await asyncio.sleep(0.01)
            for rx in drain(sub):
                if pred(rx.msg):
                    return rx.msg
        raise AssertionError(f"no matching message after {max_s} s of frames")

    def pin(self, n: int) -> bool:
        return bool(self.pins.pin(n).state)


@pytest.fixture
def run_dir() -> AsyncIterator[Path]:
    # Short: a Unix socket path must fit in 108 bytes, and tmp_path carries the test's name.
    with tempfile.TemporaryDirectory(prefix="scr-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
async def broker(run_dir: Path) -> AsyncIterator[Broker]:
    b = Broker()
    await b.start(run_dir / "bus.sock")
    yield b
    await b.close()


@contextlib.asynccontextmanager
async def running(config: AppConfig) -> AsyncIterator[Rig]:
    """The daemon as `appliance run screening` runs it, minus the signal handlers."""
    rt = Runtime("screening", config)
    pins = MockFactory()
    async with rt.stack:
        outputs = Outputs(config.gpio, factory=pins, call_later=asyncio.get_running_loop().call_later)
        svc = await daemon.start(rt, outputs=outputs)
        async with BusClient(config.bus_socket, "test-thermal") as bus:
            yield Rig(config, rt, svc, bus, pins)
        rt.stop()
        await rt._shutdown()


@pytest.fixture
async def rig(broker: Broker, run_dir: Path, tmp_path: Path) -> AsyncIterator[Rig]:
    async with running(make_config(tmp_path / "state", run_dir)) as r:
        yield r


async def next_msg(
    sub: Subscription, pred: Callable[[Any], bool] = lambda m: True, timeout: float = 5.0
) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            rx = await sub.get()
            if pred(rx.msg):
                return rx.msg


def drain(sub: Subscription) -> list[Received]:
    out = list(sub.queue)
    sub.queue.clear()
    return out


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


# --- states --------------------------------------------------------------------------------------


async def test_states_are_published_on_change_only_and_retained(rig: Rig) -> None:
    states = rig.bus.subscribe("screening.state")
    first = await next_msg(states)
    assert first.state == "warming-up"
    await rig.empty(1.5)
    await rig.visit(rig.normal)
    await rig.empty(3.5)  # the result is shown for result_hold_s, then idle
    await asyncio.sleep(0.1)
    got = [first] + [rx.msg for rx in drain(states)]
    assert all(isinstance(m, ScreeningState) for m in got)
    assert len(got) < rig.frame_seq / 2, "published per frame, not on change"
    for a, b in itertools.pairwise(got):
        assert a != b, f"the same state published twice in a row: {a}"
    names = [m.state for m in got]
    collapsed = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    assert collapsed == ["warming-up", "idle", "hold-still", "measuring", "result", "idle"]
    progress = [m.progress for m in got if m.state == "measuring"]
    assert progress == sorted(progress) and len(progress) >= 3
    assert all(b - a >= 0.1 for a, b in itertools.pairwise(progress))
    shown = next(m for m in got if m.state == "result")
    assert shown.result == "normal" and shown.estimate_c is not None
    assert shown.distance_m is not None and abs(shown.distance_m - rig.normal.distance_m) < 0.1
    # A consumer that starts late gets the current state at once (retained by the broker).
    async with BusClient(rig.config.bus_socket, "late") as late:
        retained = await next_msg(late.subscribe("screening.state"), timeout=2)
    assert retained == got[-1]


# --- results and alerts --------------------------------------------------------------------------


async def test_results_are_stored_then_published_and_an_alert_shares_its_seq(rig: Rig) -> None:
    results = rig.bus.subscribe("screening.result")
    alerts = rig.bus.subscribe("alert.fever")
    await rig.empty(1.5)
    await rig.person(rig.normal)
    normal = await next_msg(results)
    assert rig.pin(GREEN) is False  # the person left: LEDs off again
    await rig.visit(rig.fever)
    hot = await next_msg(results)
    alert = await next_msg(alerts)
    assert (normal.result, normal.seq, hot.result, hot.seq) == ("normal", 1, "elevated", 2)
    assert isinstance(alert, FeverAlert) and alert.seq == hot.seq
    assert alert.estimate_c == hot.estimate_c and alert.threshold_c == rig.config.screening.threshold_c
    assert rig.pin(RED) and not rig.pin(GREEN) and not rig.pin(RELAY)
    assert not results.queue and not alerts.queue  # one alert, for the fever only
    # What was published is exactly what is stored.
    with EventStore.open_readonly(rig.db) as store:
        rows = [(e.seq, e.topic, e.result) for e in store.rows()]
    assert rows == [
        (1, "screening.result", normal),
        (2, "screening.result", hot),
        (2, "alert.fever", hot),
    ]
    # Frame time: the result's end is the envelope time of the frame that decided it.
    assert rig.base < hot.start < hot.end <= rig.base + rig.clock.t
    assert round((hot.end - rig.base) * 10, 6) == round((hot.end - rig.base) * 10)


async def test_a_result_is_never_published_before_it_is_in_the_database(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "RETRY_STORE_S", 0.3)
    results = rig.bus.subscribe("screening.result")
    alerts = rig.bus.subscribe("alert.fever")
    states = rig.bus.subscribe("screening.state")
    health = rig.bus.subscribe("health.screening")
    await rig.empty(1.5)
    # Another writer holds the database: the daemon cannot write, so it must not publish.
    blocker = sqlite3.connect(rig.db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        await rig.visit(rig.fever)
        await next_msg(states, lambda m: m.state == "result" and m.result == "elevated")
        await asyncio.sleep(1.5)
        assert not results.queue and not alerts.queue, "published without being stored"
        assert len(rig.svc.pending) == 1
        assert rig.pin(RED)  # the person at the door was still told
        sick = await next_msg(health, lambda m: isinstance(m, Health) and m.state == "degraded", timeout=3)
        assert "events.db" in sick.status
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    stored = await next_msg(results, timeout=5)
    alert = await next_msg(alerts, timeout=1)
    assert stored.seq == alert.seq == 1 and not rig.svc.pending
    with EventStore.open_readonly(rig.db) as store:
        assert [(e.seq, e.topic) for e in store.rows()] == [(1, "screening.result"), (1, "alert.fever")]
    await next_msg(health, lambda m: isinstance(m, Health) and m.state == "ready", timeout=3)


async def test_events_since_returns_what_a_consumer_missed(rig: Rig) -> None:
    results = rig.bus.subscribe("screening.result")
    await rig.empty(1.5)
    for head in (rig.fever, rig.normal, rig.fever):
        await rig.person(head)
    seqs = [(await next_msg(results)).seq for _ in range(3)]
    assert seqs == [1, 2, 3]
    async with BusClient(rig.config.bus_socket, "viewer") as viewer:
        page = await viewer.request("screening.events_since", EventsSince(seq=0, limit=1000))
        assert [(e.seq, e.topic) for e in page.events] == [
            (1, "screening.result"),
            (1, "alert.fever"),
            (2, "screening.result"),
            (3, "screening.result"),
            (3, "alert.fever"),
        ]
        assert page.last_seq == 3
        page = await viewer.request("screening.events_since", EventsSince(seq=1, limit=1))
        assert [e.seq for e in page.events] == [2] and page.last_seq == 3
        assert (await viewer.request("screening.events_since", EventsSince(seq=3))).events == []


# --- calibration -----------------------------------------------------------------------------------


async def test_calibrate_stores_the_offset_and_applies_it_at_once(rig: Rig) -> None:
    results = rig.bus.subscribe("screening.result")
    states = rig.bus.subscribe("screening.state")
    await rig.empty(1.5)
    await rig.person(rig.normal)
    before = (await next_msg(results)).estimate_c
    assert before is not None
    # Far enough from what the kiosk reads that noise between windows (a tenth or two) cannot
    # pass for the offset being applied, or not.
    reference = round(before + 1.5, 2)
    async with BusClient(rig.config.bus_socket, "technician") as tech:
        call = asyncio.create_task(
            tech.request("screening.calibrate", CalibrateParams(reference_c=reference, frames=20), timeout=20)
        )
        await wait_until(lambda: rig.svc.calibration is not None, "the calibration to start")
        await rig.visit(rig.normal, seconds=4.0)  # the reference person stands in the window
        reply = await call
    assert reply.frames == 20
    assert reply.measured_c == pytest.approx(before, abs=0.3)
    assert reply.offset_c == pytest.approx(reference - reply.measured_c, abs=0.01)
    await next_msg(states, lambda m: m.state == "measuring" and m.reason == "calibrating")
    stored = json.loads((rig.config.paths.state_dir / "calibration.json").read_text())
    assert stored["current"]["source"] == "bus"
    assert stored["current"]["offset_c"] == reply.offset_c
    # Applied to the running machine at once: the same person now reads the reference.
    await rig.empty(3.5)
    await rig.person(rig.normal)
    after = (await next_msg(results, lambda r: r.start > rig.base + 8)).estimate_c
    assert after == pytest.approx(reference, abs=0.3)
    assert after - before > 1.0


async def test_calibrating_in_the_middle_of_a_visit_is_not_a_sensor_fault(rig: Rig) -> None:
    # Frames go to the calibration, not to the machine, while it runs: the machine sees a hole
    # in its frames afterwards, which must not pass for a sensor that stopped (a red "out of
    # order", the relay shut, a "retry" with reason sensor_fault in events.db).
    results = rig.bus.subscribe("screening.result")
    states = rig.bus.subscribe("screening.state")
    await rig.empty(1.5)
    frames = list(visit(rig.clock, 6.0, [rig.normal], rng=rig.rng))
    await rig.play(frames[:4])  # the reference person steps up: being measured, no result yet
    await next_msg(states, lambda m: m.state == "measuring" and m.reason != "calibrating")
    async with BusClient(rig.config.bus_socket, "technician") as tech:
        call = asyncio.create_task(
            tech.request("screening.calibrate", CalibrateParams(reference_c=37.0, frames=20), timeout=20)
        )
        await wait_until(lambda: rig.svc.calibration is not None, "the calibration to start")
        await rig.play(frames[4:30])
        reply = await call
        assert reply.frames == 20
        await rig.play(frames[30:])
    await asyncio.sleep(0.1)
    seen = [(rx.msg.state, rx.msg.reason) for rx in drain(states)]
    assert ("measuring", "calibrating") in seen
    assert not [m for m in seen if m[0] == "fault"], seen
    assert not [rx.msg for rx in drain(results) if rx.msg.result == "retry"]


async def test_calibrate_errors_are_clear_replies_and_store_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "CALIBRATION_BASE_S", 0.5)
    monkeypatch.setattr(daemon, "CALIBRATION_PER_FRAME_S", 0.0)
    async with BusClient(rig.config.bus_socket, "technician") as tech:
        with pytest.raises(RemoteError, match="timed out"):
            await tech.request("screening.calibrate", CalibrateParams(reference_c=36.8, frames=5))
        await rig.empty(1.5)
        call = asyncio.create_task(
            tech.request("screening.calibrate", CalibrateParams(reference_c=36.8, frames=10), timeout=10)
        )
        await wait_until(lambda: rig.svc.calibration is not None, "the calibration to start")
        await rig.empty(1.5)  # nobody in the window
        with pytest.raises(RemoteError, match="no usable target"):
            await call
    assert not (rig.config.paths.state_dir / "calibration.json").exists()


# --- faults ----------------------------------------------------------------------------------------


async def test_no_thermal_daemon_is_a_fault_with_a_reason(
    broker: Broker, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "START_GRACE_S", 0.3)
    async with running(make_config(tmp_path / "state", run_dir)) as rig:
        states = rig.bus.subscribe("screening.state")
        fault = await next_msg(states, lambda m: m.state == "fault", timeout=3)
        assert "no frames from the thermal daemon" in fault.reason
        assert rig.pin(RED)


async def test_a_thermal_fault_status_faults_screening_until_it_clears(rig: Rig) -> None:
    states = rig.bus.subscribe("screening.state")
    await rig.empty(1.5)
    await next_msg(states, lambda m: m.state == "idle")
    rig.bus.publish_nowait("thermal.status", ThermalStatus(state="fault", reason="I2C read failed"))
    fault = await next_msg(states, lambda m: m.state == "fault")
    assert "I2C read failed" in fault.reason
    # Frames that still come while the sensor says fault keep it a fault.
    await rig.empty(0.5)
    await asyncio.sleep(0.05)
    assert all(rx.msg.state == "fault" for rx in drain(states))
    rig.bus.publish_nowait("thermal.status", ThermalStatus(state="ok"))
    await rig.empty_until(states, lambda m: m.state == "idle")


async def test_a_gap_in_frames_mid_measurement_can_never_give_a_normal(rig: Rig) -> None:
    results = rig.bus.subscribe("screening.result")
    states = rig.bus.subscribe("screening.state")
    await rig.empty(1.5)
    # The frames stop while the person is being measured.
    await rig.visit(rig.normal, seconds=0.6)
    await next_msg(states, lambda m: m.state == "measuring")
    fault = await next_msg(states, lambda m: m.state == "fault", timeout=3)
    assert "no frames" in fault.reason
    cut = await next_msg(results)
    assert (cut.result, cut.estimate_c) == ("retry", None)
    # Frames again: warm-up, then the next person is screened normally.
    await rig.empty_until(states, lambda m: m.state == "idle")
    await rig.empty(1.0)  # the person who got the retry has left (one visit, one answer)
    await rig.person(rig.normal)
    assert (await next_msg(results)).result == "normal"


async def test_the_sampler_going_idle_mid_visit_is_not_a_sensor_fault(rig: Rig) -> None:
    # The thermal daemon drops to its idle rate once no pixel has been above its own presence
    # level (thermal.presence_delta_c, 3 degC over the room) for idle_after_s; screening tracks
    # fainter people than that (someone stepping back, far from the sensor). The 1 s hole before
    # the first idle frame is the sampler's choice, announced by the frame's rate_hz: not a
    # sensor that stopped, so no "out of order" and no "retry" for a sensor fault.
    results = rig.bus.subscribe("screening.result")
    states = rig.bus.subscribe("screening.state")
    await rig.empty(1.5)
    frames = list(visit(rig.clock, 8.0, [rig.normal], rng=rig.rng))
    await rig.play(frames[:4])
    await next_msg(states, lambda m: m.state == "measuring")
    await rig.play(frames[13::10], rate_hz=1.0)
    await rig.empty(4.0, noise_sd=0.16)
    await asyncio.sleep(0.1)
    seen = [(rx.msg.state, rx.msg.reason) for rx in drain(states)]
    assert not [m for m in seen if m[0] == "fault"], seen
    assert not [rx.msg for rx in drain(results) if rx.msg.result == "retry"]
    # And a real hole at the active rate still is one.
    await rig.person(rig.normal)
    assert (await next_msg(results)).result == "normal"
    frames = list(visit(rig.clock, 3.0, [rig.normal], rng=rig.rng))
    await rig.play(frames[:5] + frames[10:])
    assert (await next_msg(results)).result == "retry"
    await next_msg(states, lambda m: m.state == "fault")


async def test_frames_that_skip_time_are_a_gap_even_when_they_arrive_on_time(rig: Rig) -> None:
    results = rig.bus.subscribe("screening.result")
    await rig.empty(1.5)
    frames = list(visit(rig.clock, 3.0, [rig.normal], rng=rig.rng))
    # Half a second of frames missing (a thermal daemon that dropped them) inside the window.
    await rig.play(frames[:5] + frames[10:])
    cut = await next_msg(results)
    assert cut.result == "retry"
    await asyncio.sleep(0.1)
    assert not results.queue, "the window after the hole must not give a normal either"


async def test_stopping_shuts_the_relay_turns_everything_off_and_says_so(
    broker: Broker, run_dir: Path, tmp_path: Path
) -> None:
    config = make_config(tmp_path / "state", run_dir)
    async with running(config) as rig:
        results = rig.bus.subscribe("screening.result")
        await rig.empty(1.5)
        await rig.visit(rig.normal)
        assert (await next_msg(results)).result == "normal"
        assert rig.pin(RELAY) and rig.pin(GREEN), "a normal result opens the door (for 0.5 s)"
        pins = rig.pins
    # Stopped while the door was open: it is shut at once, not when its timer would have run.
    for pin in (GREEN, RED, BUZZER, RELAY):
        assert not pins.pin(pin).state, pin
    async with BusClient(config.bus_socket, "late") as late:
        last = await next_msg(late.subscribe("screening.state"), timeout=2)
    assert (last.state, last.reason) == ("fault", "screening stopped")
    conn = sqlite3.connect(config.paths.state_dir / "events.db")
    assert conn.execute("SELECT value FROM meta WHERE key = 'clean'").fetchone() == (1,)
    conn.close()


async def test_old_events_are_purged_at_start_and_seq_carries_on(
    broker: Broker, run_dir: Path, tmp_path: Path
) -> None:
    config = make_config(tmp_path / "state", run_dir)
    days = config.screening.retention_days
    with EventStore.open(config.paths.state_dir / "events.db") as store:
        for age_days in (days + 5, days + 1, 1):
            store.append(Draft(time.time() - age_days * 86400, 0.0, 1.0, "normal", 36.5, 0.9))
    async with running(config) as rig:
        results = rig.bus.subscribe("screening.result")
        with EventStore.open_readonly(rig.db) as ro:
            assert [e.seq for e in ro.rows()] == [3]  # the two beyond retention_days are gone
        await rig.empty(1.5)
        await rig.visit(rig.fever)
        assert (await next_msg(results)).seq == 4


async def test_a_damaged_events_db_is_set_aside_and_screening_carries_on_degraded(
    broker: Broker, run_dir: Path, tmp_path: Path
) -> None:
    config = make_config(tmp_path / "state", run_dir)
    config.paths.state_dir.mkdir(parents=True)
    (config.paths.state_dir / "events.db").write_bytes(b"not sqlite " * 1000)
    floor = int(time.time() * 1000)
    async with running(config) as rig:
        health = rig.bus.subscribe("health.screening")
        results = rig.bus.subscribe("screening.result")
        sick = await next_msg(health, lambda m: m.state == "degraded", timeout=3)
        assert "moved to events.db.damaged-" in sick.status
        await rig.empty(1.5)
        await rig.visit(rig.fever)
        assert (await next_msg(results)).seq > floor  # above anything the old file can hold
    assert len(list(config.paths.state_dir.glob("events.db.damaged-*"))) == 1


# --- events.db failures, on the service alone ----------------------------------------------------


class _Bus:
    """What the service needs of the bus: publish_nowait, recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def publish_nowait(self, topic: str, msg: Any, **_: Any) -> None:
        self.sent.append((topic, msg))


def test_a_store_that_stays_damaged_after_reopening_does_not_hang_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file that quick_check passes but whose writes keep failing as damaged: reopening it
    # does not cure it, and drain() used to reopen and retry forever on the event loop.
    config = make_config(tmp_path / "state", tmp_path)
    svc = ScreeningService(config, _Bus(), Outputs(config.gpio, factory=MockFactory()))  # type: ignore[arg-type]
    svc.open_store()
    opens = 0
    real_open = EventStore.open

    def counting_open(*args: Any, **kwargs: Any) -> EventStore:
        nonlocal opens
        opens += 1
        assert opens <= 5, "drain() keeps reopening a store that stays damaged"
        return real_open(*args, **kwargs)

    def damaged_append(self: EventStore, draft: Draft) -> Any:
        exc = sqlite3.DatabaseError("database disk image is malformed")
        exc.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(EventStore, "open", counting_open)
    monkeypatch.setattr(EventStore, "append", damaged_append)
    svc.pending.append(Draft(time.time(), 0.0, 1.0, "normal", 36.5, 0.9))
    svc.drain()
    assert opens == 1  # one reopen per drain; then the retry timer, as for any other failure
    assert len(svc.pending) == 1 and not svc.bus.sent  # type: ignore[attr-defined]
    text, degraded = svc.health()
    assert degraded and "1 results waiting for events.db" in text
    svc.close_store()


def test_results_waiting_for_events_db_at_shutdown_are_written_or_reported_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path / "state", tmp_path)
    bus = _Bus()
    svc = ScreeningService(config, bus, Outputs(config.gpio, factory=MockFactory()))  # type: ignore[arg-type]
    svc.open_store()
    real_append = EventStore.append

    def full_append(self: EventStore, draft: Draft) -> Any:
        exc = sqlite3.OperationalError("database or disk is full")
        exc.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
        raise exc

    # The disk is full for the first result, and has room again by the time the daemon stops
    # (before its 10 s retry was due): the result is written and published on the way out.
    monkeypatch.setattr(EventStore, "append", full_append)
    svc._record(CoreResult(0.0, 1.0, "elevated", 39.0, 0.9, 0.45, 22.0), svc.settings)  # type: ignore[arg-type]
    assert len(svc.pending) == 1 and not bus.sent
    monkeypatch.setattr(EventStore, "append", real_append)
    svc.close_store()
    assert not svc.pending
    assert [t for t, _ in bus.sent] == ["screening.result", "alert.fever"]
    with EventStore.open_readonly(svc.store_path) as ro:
        assert [e.result.result for e in ro.rows()] == ["elevated", "elevated"]

    # Still full at the end: the results cannot be kept, but the log must say so.
    svc.open_store()
    monkeypatch.setattr(EventStore, "append", full_append)
    svc._record(CoreResult(2.0, 3.0, "normal", 36.6, 0.9, 0.45, 22.0), svc.settings)  # type: ignore[arg-type]
    with caplog.at_level("ERROR"):
        svc.close_store()
    assert any("1 result" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records)


# --- a wall clock stepped by NTP (no real-time clock on a Pi) -------------------------------------


def _clocked_service(
    config: AppConfig,
    clocks: Clocks,
    bus: _Bus | None = None,
    clock_synchronized: Callable[[], bool | None] = lambda: True,
) -> ScreeningService:
    return ScreeningService(
        config,
        bus or _Bus(),  # type: ignore[arg-type]
        Outputs(config.gpio, factory=MockFactory()),
        wall=clocks.wall,
        boottime=clocks.boottime,
        boot_id=lambda: "boot-now",
        clock_synchronized=clock_synchronized,
    )


def _stamps(db: Path) -> list[tuple[int, str, float, float]]:
    with EventStore.open_readonly(db) as ro:
        return [(e.seq, e.topic, e.wall_ts, e.result.wall_ts) for e in ro.rows()]


def test_results_from_before_ntp_synced_survive_the_purge_of_a_restarted_daemon(tmp_path: Path) -> None:
    # Booted on a clock 60 days stale; two people screened; the daemon restarts after NTP has
    # stepped the clock (same boot). Its start-up purge used to delete both results.
    config = make_config(tmp_path / "state", tmp_path)
    true_now = float(int(time.time()))  # whole seconds: the sums below are exact
    clocks = Clocks(true_now - 60 * 86400)
    svc = _clocked_service(config, clocks)
    svc.open_store()
    svc._record(CoreResult(0.0, 1.0, "elevated", 39.0, 0.9, 0.45, 22.0), svc.settings)  # type: ignore[arg-type]
    clocks.advance(40.0)
    svc._record(CoreResult(40.0, 41.0, "normal", 36.6, 0.9, 0.45, 22.0), svc.settings)  # type: ignore[arg-type]
    svc.close_store()
    clocks.advance(60.0)
    clocks.wall_s += 60 * 86400  # NTP syncs
    svc = _clocked_service(config, clocks)
    svc.open_store()  # purges at once
    assert [(s, t) for s, t, *_ in _stamps(svc.store_path)] == [
        (1, "screening.result"), (1, "alert.fever"), (2, "screening.result"),
    ]  # fmt: skip
    got = {(s, t): (a, b) for s, t, a, b in _stamps(svc.store_path)}
    assert got[(1, "screening.result")] == got[(1, "alert.fever")] == (true_now, true_now)
    assert got[(2, "screening.result")] == (true_now + 40.0, true_now + 40.0)
    svc.close_store()


def test_the_tick_corrects_at_once_and_a_result_that_waited_gets_todays_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path / "state", tmp_path)
    stale = float(int(time.time())) - 60 * 86400  # whole seconds: the sums below are exact
    clocks = Clocks(stale)
    bus = _Bus()
    svc = _clocked_service(config, clocks, bus)
    svc.open_store()
    svc._record(CoreResult(0.0, 1.0, "normal", 36.6, 0.9, 0.45, 22.0), svc.settings)  # type: ignore[arg-type]
    real_append = EventStore.append

    def full_append(self: EventStore, draft: Draft) -> Any:
        exc = sqlite3.OperationalError("database or disk is full")
        exc.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(EventStore, "append", full_append)
    clocks.advance(10.0)
    svc._record(CoreResult(10.0, 11.0, "elevated", 39.0, 0.9, 0.45, 22.0), svc.settings)  # type: ignore[arg-type]
    assert len(svc.pending) == 1
    monkeypatch.setattr(EventStore, "append", real_append)
    clocks.advance(5.0)
    clocks.wall_s += 60 * 86400  # NTP syncs while the second result waits
    svc.tick()  # the setup page and the export read the file: they see the right date at once
    assert _stamps(svc.store_path) == [(1, "screening.result", stale + 60 * 86400, stale + 60 * 86400)]
    svc._write_retry_at = 0.0
    svc.drain()
    assert not svc.pending
    published = [m.wall_ts for t, m in bus.sent if t in ("screening.result", "alert.fever")]
    assert published == [stale, stale + 60 * 86400 + 10.0, stale + 60 * 86400 + 10.0]
    page = svc.events_since(EventsSince(seq=0))
    assert [e.result.wall_ts for e in page.events] == [stale + 60 * 86400, *published[1:]]
    svc.close_store()


def test_a_clock_ahead_and_not_synchronized_spares_earlier_boots_results_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The last boot ended a day ago; this one came up a year ahead (a bad RTC module) and NTP
    # has not synced. Its start-up purge used to delete every earlier result.
    config = make_config(tmp_path / "state", tmp_path)
    days = config.screening.retention_days
    true_now = float(int(time.time()))
    for age_days in (days + 5, 1):
        old = Clocks(true_now - age_days * 86400)
        with EventStore.open(
            config.paths.state_dir / "events.db",
            boot_id=f"boot-{age_days}",
            now=old.wall,
            boottime=old.boottime,
        ) as store:
            store.append(Draft(old.wall(), 0.0, 1.0, "elevated", 39.0, 0.9, threshold_c=38.0))
    clocks = Clocks(true_now + 365 * 86400)
    synced: list[bool | None] = [False]
    asked: list[bool | None] = []

    def clock_synchronized() -> bool | None:
        asked.append(synced[0])
        return synced[0]

    svc = _clocked_service(config, clocks, clock_synchronized=clock_synchronized)
    with caplog.at_level("INFO", logger=daemon.__name__):
        svc.open_store()  # purges at once
        assert asked == [False]
        # The result already beyond the retention when the last boot ended goes; the other stays.
        assert [(s, t) for s, t, *_ in _stamps(svc.store_path)] == [
            (2, "screening.result"),
            (2, "alert.fever"),
        ]
        synced[0] = None  # cannot tell: the same
        svc.purge()
        clocks.advance(3600.0)
        svc.purge()
        assert len(_stamps(svc.store_path)) == 2
        said = [r for r in caplog.records if "not synchronized" in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in caplog.records]
        assert said[0].levelno == logging.WARNING and "2 rows" in said[0].getMessage()
        synced[0] = True  # NTP synced (without stepping it, to make the point): now it is trusted
        svc.purge()
        assert _stamps(svc.store_path) == []
    assert asked == [False, None, None, True]
    svc.close_store()
