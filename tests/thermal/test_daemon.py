"""The thermal daemon end to end: `appliance run thermal` as a real process, the sim backend, a real broker.

The scenario is played once from APPLIANCE_SIM_EPOCH, which the test sets to its own monotonic clock when it
starts the daemon: envelope timestamps (the daemon's monotonic clock, system-wide) minus the epoch are
scene times, so every assertion is about a known moment of the scene.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from thermal_toml import config_toml  # tests/thermal/thermal_toml.py

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient, Received
from appliance.bus.topics import Health, ThermalFrame, ThermalInterrupt, ThermalStatus
from appliance.config import AppConfig, replace
from appliance.errors import ConfigError
from appliance.thermal import record
from appliance.thermal import registers as reg
from appliance.thermal.amg8833 import AMG8833
from appliance.thermal.backend import Hardware, build_sim, open_hardware
from appliance.thermal.daemon import BACKOFF_INITIAL_S, BACKOFF_MAX_S, ThermalSampler
from appliance.thermal.fake_amg8833 import FakeAMG8833, FakeI2C, ManualClock, StaticScene
from appliance.thermal.recording import read_recording

pytestmark = pytest.mark.slow

# A hot thing covering exactly the top-left 2x2 pixels: the sensor's pixels are 7.5° wide, so at 0.5 m
# the boundary between columns 1 and 2 (and rows 1 and 2) lies at 0.5 * tan(15°) = 0.134 m off axis.
TOP_LEFT_2X2 = """
[[object]]
name = "heater"
enter = {enter}
exit = {exit}
distance = 0.5
lateral = -0.267
height = 0.267
width = 0.266
tall = 0.266
temperature = 70.0
"""
TOP_LEFT_MASK = (1 << 0) | (1 << 1) | (1 << 8) | (1 << 9)  # image order, row-major


def scenario_toml(duration: float, extra: str = "") -> str:
    return f"""
name = "test"
duration = {duration}
loop = false
seed = 3

[ambient]
temperature = 22.0
drift_per_hour = 0.0
gradient = 0.5
{extra}
"""


@dataclass
class Seen:
    """Everything the daemon put on the bus, in arrival order."""

    all: list[Received] = field(default_factory=list)

    def of(self, topic: str) -> list[Received]:
        return [rx for rx in self.all if rx.topic == topic]

    def frames(self) -> list[tuple[float, ThermalFrame]]:
        return [(rx.ts, rx.msg) for rx in self.of("thermal.frame") if isinstance(rx.msg, ThermalFrame)]

    def statuses(self) -> list[tuple[float, ThermalStatus]]:
        return [(rx.ts, rx.msg) for rx in self.of("thermal.status") if isinstance(rx.msg, ThermalStatus)]

    def health(self) -> list[Health]:
        return [rx.msg for rx in self.of("health.thermal") if isinstance(rx.msg, Health)]


@dataclass
class Rig:
    run_dir: Path
    config_file: Path
    bus: BusClient
    seen: Seen
    proc: asyncio.subprocess.Process | None = None
    epoch: float = 0.0

    async def start(self, scenario: str, **thermal: object) -> None:
        scene_file = self.run_dir / "scene.toml"
        scene_file.write_text(scenario)
        self.config_file.write_text(config_toml(self.run_dir, scene_file, **thermal))
        self.epoch = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_"))}
        env.update(APPLIANCE_CONFIG=str(self.config_file), APPLIANCE_SIM_EPOCH=repr(self.epoch))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance", "run", "thermal", env=env, stdin=asyncio.subprocess.DEVNULL
        )

    def scene_now(self) -> float:
        return time.monotonic() - self.epoch

    async def until(self, scene_t: float) -> None:
        assert self.proc is not None
        while self.scene_now() < scene_t:
            assert self.proc.returncode is None, f"the daemon exited with {self.proc.returncode}"
            await asyncio.sleep(0.05)

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            return await self.proc.wait()

    def frames_between(self, start: float, end: float) -> list[tuple[float, ThermalFrame]]:
        return [(ts - self.epoch, f) for ts, f in self.seen.frames() if start <= ts - self.epoch < end]


@pytest.fixture
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    run_dir = tmp_path_factory.mktemp("th")
    sock = run_dir / "bus.sock"
    assert len(str(sock)) < 100, f"{sock} is too long for a Unix socket"
    broker = Broker()
    await broker.start(sock)
    bus = BusClient(sock, "observer")
    await bus.connect(10)
    seen = Seen()
    sub = bus.subscribe("*", maxsize=100_000)

    async def collect() -> None:
        async for rx in sub:
            if rx.topic.startswith(("thermal.", "health.thermal")):
                seen.all.append(rx)

    collector = asyncio.get_running_loop().create_task(collect())
    this = Rig(run_dir, run_dir / "appliance.toml", bus, seen)
    try:
        yield this
    finally:
        if this.proc is not None and this.proc.returncode is None:
            this.proc.kill()
            await this.proc.wait()
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        await bus.close()
        await broker.close()


# The simulated chip's 1 fps output: the mean of ten 0.1 s samples, out when the tenth is taken, so once a
# second at a fixed phase. That phase is the fake's own clock: it starts when the daemon builds the sim
# (appliance.thermal.backend.build_sim), some time after the test's scene epoch, so the test does not know it.
POLL_PERIOD_1FPS_S = 0.5  # two polls per frame period


def assert_every_1fps_frame_once(*spells: list[tuple[float, ThermalFrame]]) -> None:
    """Each published 1 fps frame is a different chip frame, none skipped, each read within one poll.

    The chip has no data-ready line, so a frame is read at the first poll after it is out: between 0 and
    one poll period (0.5 s) late, depending on where the polls fall against the chip's clock. Two
    published frames can therefore be 0.5 to 1.5 s apart without anything being wrong; what must hold is
    that they are consecutive chip frames, each read promptly: that one phase of the chip's clock (the
    same through every spell at 1 fps, as the clock runs on) puts the frames of each spell in consecutive
    one-second slots, each read no later than one poll period after its slot began.

    The phase is searched for, not assumed. Lags only grow as it moves back, so if one fits, the latest
    fitting one does too, and that puts some read at lag 0: trying the reads' own phases is enough.
    """
    reads = [t for spell in spells for t, _ in spell]
    tried = []
    for phase in sorted({t % 1.0 for t in reads}):
        lags = [[(t % 1.0 - phase) % 1.0 for t, _ in spell] for spell in spells]
        slots = [
            [round(t - lag - phase) for (t, _), lag in zip(spell, spell_lags, strict=True)]
            for spell, spell_lags in zip(spells, lags, strict=True)
        ]
        # One poll period, plus slack for the sim's 50 ms tick and a loaded test machine.
        prompt = all(lag <= POLL_PERIOD_1FPS_S + 0.25 for spell_lags in lags for lag in spell_lags)
        consecutive = all(s == list(range(s[0], s[0] + len(s))) for s in slots if s)
        if prompt and consecutive:
            return
        tried.append((round(phase, 3), slots, [[round(lag, 3) for lag in spell_lags] for spell_lags in lags]))
    raise AssertionError(f"no phase of the chip's 1 fps clock fits the reads {reads}: {tried}")


async def test_idle_presence_interrupt_and_back(rig: Rig) -> None:
    await rig.start(scenario_toml(30.0, TOP_LEFT_2X2.format(enter=5.0, exit=7.5)))
    await rig.until(12.0)
    assert await rig.stop() == 0

    # warming-up for warmup_s after power-up, then ok.
    states = [(ts - rig.epoch, s.state) for ts, s in rig.seen.statuses()]
    assert states[0][1] == "warming-up"
    first_ok = next(t for t, s in states if s == "ok")
    assert 0.4 <= first_ok - states[0][0] <= 1.6  # 0.5 s, seen at the next 2 Hz poll
    assert "fault" not in {s for _, s in states}
    assert all(h.state in ("starting", "ready", "stopping") for h in rig.seen.health())

    # Nobody there: 1 fps.
    idle = rig.frames_between(first_ok, 5.0)
    assert len(idle) >= 2
    assert all(f.rate_hz == 1.0 for _, f in idle)

    # The heater appears at 5.0: the chip's interrupt fires on the next 1 fps output frame, through the
    # MockFactory pin and gpiozero's callback, with exactly the four pixels it covers.
    interrupts = [(rx.ts - rig.epoch, rx.msg) for rx in rig.seen.of("thermal.interrupt")]
    assert len(interrupts) == 1, interrupts
    t_int, interrupt = interrupts[0]
    assert isinstance(interrupt, ThermalInterrupt)
    assert 5.0 <= t_int <= 6.3
    assert interrupt.mask == TOP_LEFT_MASK
    assert interrupt.mode == "absolute"
    assert 24.0 <= interrupt.upper_c <= 27.0  # the room (~22 °C ± the sensor's offset) + 3 °C
    assert interrupt.upper_c * 4 == round(interrupt.upper_c * 4)  # what the chip holds

    # Someone there: 10 fps, and the frames agree with the mask (same pixel order on both topics).
    active = rig.frames_between(t_int + 0.4, 7.5)
    assert all(f.rate_hz == 10.0 for _, f in active)
    assert 8.0 <= (len(active) - 1) / (active[-1][0] - active[0][0]) <= 12.0
    for _, frame in active:
        hot = {i for i, value in enumerate(frame.pixels) if value > interrupt.upper_c}
        assert hot == {0, 1, 8, 9}

    # Gone at 7.5; idle_after_s = 1.0 later it drops back to 1 fps.
    assert any(f.rate_hz == 10.0 for _, f in rig.frames_between(7.5, 8.4))
    back = rig.frames_between(9.6, 12.0)
    assert len(back) >= 2 and all(f.rate_hz == 1.0 for _, f in back)
    # The chip's clock runs on through the 10 fps spell: one phase for both idle spells.
    assert_every_1fps_frame_once(idle, back)

    # Frames are numbered without gaps and never repeat.
    frames = rig.seen.frames()
    assert [f.frame_seq for _, f in frames] == list(range(1, len(frames) + 1))
    assert all(a.pixels != b.pixels for (_, a), (_, b) in itertools.pairwise(frames))


# One retry's own time on a loaded machine: the re-initialisation's I2C transfers, the poll that follows
# at once, and the loop's wake-up from the backoff sleep.
RETRY_SLACK_S = 0.4


def backoff_in_force(fault_s: float) -> float:
    """The longest backoff the daemon can be sleeping when a fault it has seen for fault_s ends.

    The daemon retries after BACKOFF_INITIAL_S, then doubling up to BACKOFF_MAX_S; a retry can only have
    failed if the backoffs before it add up to less than fault_s (each retry comes no sooner than that).
    """
    waited, backoff = 0.0, BACKOFF_INITIAL_S
    while waited + backoff < fault_s:
        waited += backoff
        backoff = min(backoff * 2, BACKOFF_MAX_S)
    return backoff


async def test_faults_are_reported_never_published_and_recovered(rig: Rig) -> None:
    faults = """
[[fault]]
kind = "i2c_error"
start = 0.0
duration = 2.5

[[fault]]
kind = "stuck_frames"
start = 4.5
duration = 1.0

[[fault]]
kind = "out_of_range"
start = 7.0
duration = 1.0
"""
    # idle_fps = 10 here, for a fine time resolution around the faults.
    await rig.start(scenario_toml(30.0, faults), idle_fps=10)
    await rig.until(10.5)
    assert await rig.stop() == 0

    # The sensor is silent at start: the daemon comes up anyway, reports the fault, and recovers.
    health = rig.seen.health()
    assert [h.state for h in health][:2] == ["starting", "ready"]
    assert "degraded" in [h.state for h in health]
    assert health[-2].state == "ready" and health[-1].state == "stopping"

    changes: list[tuple[float, str, str]] = []  # (scene time, state, first reason) per change of state
    for ts, status in rig.seen.statuses():
        if not changes or changes[-1][1] != status.state:
            changes.append((ts - rig.epoch, status.state, status.reason))
    assert [s for _, s, _ in changes] == ["fault", "warming-up", "ok"] * 3, changes
    faults_seen = [(t, reason) for t, s, reason in changes if s == "fault"]
    assert "did not initialise" in faults_seen[0][1] or "I2C" in faults_seen[0][1]
    assert "stuck" in faults_seen[1][1]
    assert "outside" in faults_seen[2][1]
    # Stuck: the driver gives up after 5 frame periods (0.5 s); out of range: at the first bad
    # frame. The upper bounds leave a few frame periods for a loaded machine's loop; what was
    # published meanwhile is checked exactly below.
    assert 4.9 <= faults_seen[1][0] <= 5.6
    assert 7.0 <= faults_seen[2][0] <= 7.6

    # Nothing is published while the sensor is faulty: not the I2C outage, not the frozen frame (read
    # again and again until the driver calls it stuck), not the broken pixels.
    assert rig.frames_between(0.0, 2.5) == []
    assert rig.frames_between(4.56, 5.5) == []
    assert rig.frames_between(7.06, 8.0) == []
    # Back with the first re-initialisation after the sensor is: within the backoff the daemon was
    # waiting out when the fault ended (it doubles from BACKOFF_INITIAL_S while the fault lasts, so it
    # depends on how long the daemon had seen the fault), plus one retry's reinit and poll.
    for (reported, _), end, until in zip(faults_seen, (2.5, 5.5, 8.0), (4.5, 7.0, 10.5), strict=True):
        resumed = rig.frames_between(end, until)
        waiting = backoff_in_force(end - reported)
        assert resumed and resumed[0][0] - end < waiting + RETRY_SLACK_S, (end, reported, resumed[:1])
    frames = rig.seen.frames()
    assert all(max(f.pixels) < 100.0 for _, f in frames)
    assert all(a.pixels != b.pixels for (_, a), (_, b) in itertools.pairwise(frames))
    assert [f.frame_seq for _, f in frames] == list(range(1, len(frames) + 1))


async def test_record_cli_from_the_live_daemon(rig: Rig) -> None:
    await rig.start(scenario_toml(60.0), idle_fps=10, warmup_s=0.0)
    deadline = time.monotonic() + 15
    while not rig.seen.frames():
        assert time.monotonic() < deadline, "no frames from the daemon"
        await asyncio.sleep(0.05)
    out = rig.run_dir / "live.jsonl"
    args = argparse.Namespace(seconds=1.5, out=str(out), config=str(rig.config_file))
    assert await asyncio.to_thread(record.main, args) == 0
    assert await rig.stop() == 0

    recorded = list(read_recording(out))
    assert 12 <= len(recorded) <= 17  # 1.5 s at 10 fps, both ends included
    assert recorded[0].t == 0.0 and recorded[-1].t <= 1.5
    published = {tuple(f.pixels): f for _, f in rig.seen.frames()}
    for frame in recorded:  # every recorded frame is one the daemon published, unchanged
        source = published[tuple(float(v) for v in frame.pixels.reshape(64))]
        assert frame.thermistor == pytest.approx(source.thermistor, abs=1e-4)


async def test_bad_sim_config_stops_the_daemon_with_the_key_named(rig: Rig) -> None:
    rig.config_file.write_text(config_toml(rig.run_dir, rig.run_dir / "missing.toml"))
    env = dict(os.environ, APPLIANCE_CONFIG=str(rig.config_file))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance", "run", "thermal", env=env, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"missing.toml" in err and b"cannot start" in err


def test_sim_backend_config_errors(tmp_path: Path) -> None:
    sim = replace(AppConfig(), thermal={"backend": "sim"})
    with pytest.raises(ConfigError, match=r"gpio\.pin_factory.*mock"):
        open_hardware(replace(sim, gpio={"pin_factory": "lgpio"}))
    with pytest.raises(ConfigError, match=r"sim\.scenario.*bundled: demo"):
        open_hardware(replace(sim, sim={"scenario": "nosuchscene"}))


def test_sim_rig_wires_the_fake_to_the_daemons_pin() -> None:
    config = replace(AppConfig(), thermal={"backend": "sim", "int_pin": 17}, gpio={"pin_factory": "mock"})
    rig = build_sim(config)
    try:
        assert rig.pin is not None and rig.pin_factory is not None
        assert rig.pin is rig.pin_factory.pin(17)  # the same MockPin a DigitalInputDevice on 17 gets
        assert list(rig.i2c.devices) == [0x69]
        assert rig.scenario.name == "demo"
        image, _ = rig.scene.field(0.0)
        assert len(image) == 64 and all(type(v) is float for v in image)  # row-major
    finally:
        if rig.pin_factory is not None:
            rig.pin_factory.close()


class ManualChip(NamedTuple):
    clock: ManualClock
    scene: StaticScene
    factory: Any  # gpiozero's MockFactory
    device: FakeAMG8833
    i2c: FakeI2C
    hardware: Hardware


def manual_chip() -> ManualChip:
    """The fake chip on a clock that moves only when told, its INT line on a gpiozero MockPin
    (GPIO4), behind the real driver, as the daemon's Hardware."""
    from gpiozero.pins.mock import MockFactory

    clock = ManualClock(100.0)
    scene = StaticScene(22.0, ambient_c=22.0)
    factory = MockFactory()
    device = FakeAMG8833(scene, clock=clock, seed=2, int_pin=factory.pin(4))
    i2c = FakeI2C(devices={0x69: device})
    hardware = Hardware("fake", 0x69, lambda: AMG8833(i2c, clock=clock), 4, factory, tick=device.tick)
    return ManualChip(clock, scene, factory, device, i2c, hardware)


async def test_int_edge_from_gpiozeros_thread_becomes_thermal_interrupt(rig: Rig) -> None:
    """In-process and step by step, on a clock that moves only when told: the fake pulls its MockPin
    low on the I2C thread, gpiozero calls the daemon there, the edge crosses to the event loop, and the
    loop publishes the latched pixels in image order."""
    clock, scene, factory, device, _, hardware = manual_chip()
    config = replace(AppConfig(), thermal={"warmup_s": 0.0, "idle_fps": 1}).thermal
    bus = BusClient(rig.bus.path, "thermal")
    await bus.connect(10)
    sampler = ThermalSampler(bus, hardware, config, clock=clock)
    callers: list[str] = []

    def on_edge() -> None:
        callers.append(threading.current_thread().name)
        ThermalSampler._on_edge(sampler)

    sampler._on_edge = on_edge  # type: ignore[method-assign]  # spy on what gpiozero calls
    sampler.attach_interrupt()
    try:
        assert sampler.int_device is not None
        await sampler.start()
        clock.advance(1.0)
        await sampler._cycle()  # the first frame: background learned, interrupt armed above it
        assert sampler.levels is not None and device.regs[reg.INTC] & reg.INTC_INTEN
        assert not sampler.edge.is_set() and not callers

        hot = np.full((8, 8), 22.0)
        hot[0, 2] = hot[1, 2] = 40.0  # image order: top row, third column, and the one below
        scene.field_c = hot
        clock.advance(1.0)
        await sampler.io(device.tick)  # the chip's next 1 fps frame, on the I2C thread
        async with asyncio.timeout(2):
            await sampler.edge.wait()
        assert callers == ["thermal-i2c_0"]  # gpiozero called back on the thread that drove the pin

        await sampler._cycle()  # the loop serves the edge
        interrupts = rig.seen.of("thermal.interrupt")
        for _ in range(100):
            if interrupts:
                break
            await asyncio.sleep(0.02)
            interrupts = rig.seen.of("thermal.interrupt")
        assert len(interrupts) == 1
        msg = interrupts[0].msg
        assert isinstance(msg, ThermalInterrupt)
        assert msg.mask == (1 << 2) | (1 << 10)
        assert sampler.last_levels is not None and msg.upper_c == sampler.last_levels.upper_c
        # Someone there: 10 fps, interrupt off (frames show presence now), INT released.
        assert device.regs[reg.FPSC] == reg.FPSC_10FPS
        assert device.regs[reg.INTC] == 0 and not device.int_asserted
        assert factory.pin(4).state == 1
    finally:
        sampler.close()
        await bus.close()
        factory.close()


class _Bus:
    """What ThermalSampler needs of the bus: publish, recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    async def publish(self, topic: str, msg: object, **_: object) -> None:
        self.sent.append((topic, msg))

    def statuses(self) -> list[ThermalStatus]:
        return [m for t, m in self.sent if t == "thermal.status" and isinstance(m, ThermalStatus)]


async def test_a_chip_that_resets_mid_run_gets_its_settings_back() -> None:
    """A brown-out resets the AMG8833 to 10 fps, interrupt off, no averaging, with no I2C error
    and frames that look fine: the daemon must notice and restore what it had set."""
    from appliance.errors import SensorFault

    clock, _, factory, device, i2c, hardware = manual_chip()
    thermal = {"warmup_s": 0.0, "idle_fps": 1, "moving_average": True}
    config = replace(AppConfig(), thermal=thermal).thermal
    bus = _Bus()
    sampler = ThermalSampler(bus, hardware, config, clock=clock)  # type: ignore[arg-type]
    sampler.attach_interrupt()

    async def run_for(seconds: float) -> None:
        """What run() does, half a second of the manual clock at a time."""
        for _ in range(round(seconds / 0.5)):
            clock.advance(0.5)
            await sampler.io(device.tick)
            try:
                await sampler._ensure_sensor()
                await sampler._cycle()
            except SensorFault as exc:
                await sampler._failed(exc)

    def settings() -> tuple[int, int, int]:
        return device.regs[reg.FPSC], device.regs[reg.INTC], device.regs[reg.AVE]

    idle = (reg.FPSC_1FPS, reg.INTC_INTEN | reg.INTC_ABSOLUTE, reg.AVE_MAMOD)
    try:
        await sampler.start()
        await run_for(3.0)
        assert settings() == idle and sampler.state == "ok"

        i2c.writeto(0x69, bytes([reg.RST, reg.RST_INITIAL]))  # what a brown-out does to the chip
        assert settings() == (reg.FPSC_10FPS, 0, 0)
        await run_for(5.0)

        assert settings() == idle
        after = [s for s in bus.statuses() if s.state == "fault"]
        assert after and "reset" in after[-1].reason, bus.statuses()
        assert sampler.state == "ok"
    finally:
        sampler.close()
        factory.close()


async def test_an_interrupt_whose_clear_fails_is_served_again_not_left_asserted() -> None:
    """The chip holds INT low until the flag is cleared, and gpiozero reports edges only: a clear
    lost to one NACK must be retried, or the line stays low and no interrupt ever comes again."""
    from appliance.errors import SensorFault

    clock, scene, factory, device, _, hardware = manual_chip()
    config = replace(AppConfig(), thermal={"warmup_s": 0.0, "idle_fps": 1}).thermal
    bus = _Bus()
    sampler = ThermalSampler(bus, hardware, config, clock=clock)  # type: ignore[arg-type]
    sampler.attach_interrupt()

    async def step() -> None:
        """One pass of run(), as it runs it."""
        try:
            await sampler._ensure_sensor()
            await sampler._cycle()
        except SensorFault as exc:
            await sampler._failed(exc)

    try:
        await sampler.start()
        clock.advance(1.0)
        await step()  # the first frame: background learned, interrupt armed
        assert sampler.levels is not None
        # Someone passes between two polls: one hot frame latches the interrupt.
        hot = np.full((8, 8), 22.0)
        hot[3, 3] = 40.0
        scene.field_c = hot
        clock.advance(1.0)
        await sampler.io(device.tick)
        async with asyncio.timeout(2):
            await sampler.edge.wait()
        # Gone by the next frame: the frames never show them, only the latched interrupt does.
        scene.field_c = np.full((8, 8), 22.0)
        clock.advance(1.0)
        await sampler.io(device.tick)
        driver = sampler.driver
        assert driver is not None
        real_read = driver.read_interrupt

        def read_then_fail_the_clear() -> object:
            state = real_read()
            device.fail_next(1)
            return state

        driver.read_interrupt = read_then_fail_the_clear  # type: ignore[method-assign]
        await step()  # serving the edge fails on the clear
        assert device.int_asserted
        driver.read_interrupt = real_read  # type: ignore[method-assign]
        for _ in range(3):
            clock.advance(0.5)
            await step()
        assert not device.int_asserted, "INT left asserted: no edge will ever come again"
        assert [m for t, m in bus.sent if t == "thermal.interrupt"], "the interrupt was never reported"
    finally:
        sampler.close()
        factory.close()


async def test_a_radiator_in_view_is_learned_and_the_sensor_idles_again() -> None:
    """The real driver against the fake chip: a hot corner that never moves keeps the sensor at 10 fps
    only until it is learned as a fixture; then 1 fps with the interrupt off, the count in the status
    text, and someone arriving beside it still wakes the sensor at the next frame."""
    from appliance.errors import SensorFault

    clock, scene, factory, device, _, hardware = manual_chip()
    thermal = {"warmup_s": 0.0, "idle_fps": 1, "idle_after_s": 2.0, "fixture_after_s": 60.0}
    config = replace(AppConfig(), thermal=thermal).thermal
    bus = _Bus()
    texts: list[str] = []
    sampler = ThermalSampler(
        bus,  # type: ignore[arg-type]
        hardware,
        config,
        clock=clock,
        on_status=lambda text, _: texts.append(text),
    )
    sampler.attach_interrupt()

    async def run_for(seconds: float) -> None:
        """What run() does, one poll period of the manual clock at a time."""
        end = clock() + seconds
        while clock() < end:
            clock.advance(1.0 / (sampler._fps() * 2))
            await sampler.io(device.tick)
            try:
                await sampler._ensure_sensor()
                await sampler._cycle()
            except SensorFault as exc:
                await sampler._failed(exc)

    radiator = np.full((8, 8), 22.0)
    radiator[0:2, 0:2] = 50.0
    try:
        await sampler.start()
        await run_for(3.0)
        assert device.regs[reg.FPSC] == reg.FPSC_1FPS and device.regs[reg.INTC] & reg.INTC_INTEN

        scene.field_c = radiator  # switched on, and there it stays
        await run_for(30.0)
        assert device.regs[reg.FPSC] == reg.FPSC_10FPS  # not learned yet: counts as someone there
        await run_for(40.0)  # the fixture time, then idle_after_s
        assert device.regs[reg.FPSC] == reg.FPSC_1FPS
        assert device.regs[reg.INTC] == 0 and not device.int_asserted  # it would fire on every frame
        assert sampler.policy.fixture_count == 4
        assert "4 fixture pixel(s) ignored" in texts[-1] and "idle" in texts[-1]
        await run_for(60.0)
        assert device.regs[reg.FPSC] == reg.FPSC_1FPS  # and it stays there

        person = radiator.copy()
        person[3:6, 4:6] = 34.0
        scene.field_c = person
        await run_for(1.5)  # the chip's next 1 fps frame, read at the next poll
        assert device.regs[reg.FPSC] == reg.FPSC_10FPS
        assert sampler.policy.fixture_count == 4

        scene.field_c = np.full((8, 8), 22.0)  # everybody gone, the radiator off and cold
        await run_for(5.0)
        assert sampler.policy.fixture_count == 0
        assert device.regs[reg.FPSC] == reg.FPSC_1FPS and device.regs[reg.INTC] & reg.INTC_INTEN
        assert "fixture" not in texts[-1]
    finally:
        sampler.close()
        factory.close()
