"""The screen daemon against a real broker: states arrive on the bus, the right screen shows.

In this process (the real Runtime and daemon.start, SDL's dummy video and audio drivers,
a real Broker), so the test can read the display surface's pixels; and once as
`appliance run screen`, a process of its own next to `appliance run bus`, seen from outside
through its READY notification and its health.screen status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pygame
import pytest
from bus.helpers import BrokerProcess, NotifySocket, daemon_env  # tests/bus, a sibling package

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.bus.framering import FrameRingWriter, ring_path
from appliance.bus.topics import (
    CallState,
    ChatMessage,
    EchoParams,
    FrameRingNotice,
    Health,
    PairingStatus,
    ScreeningState,
    SetupCode,
    ThermalFrame,
    ThermalStatus,
    ViewerStats,
)
from appliance.camera import PREVIEW_FORMAT, PREVIEW_RING
from appliance.config import AppConfig, load_config
from appliance.runtime import Runtime
from appliance.screen import daemon, view
from appliance.screen.daemon import ScreenService
from appliance.screen.palette import TONES
from appliance.screen.render import Frames, RenderReport
from appliance.screen.strings import CATALOGUE

from .helpers import share_of, thermal_pixels

EN = CATALOGUE["en"]

CONFIG = """\
[paths]
state_dir = "{dir}"
run_dir = "{dir}"

[bus]
allowed_groups = []

[screen]
driver = "dummy"
fullscreen = false
width = 800
height = 480
language = "{language}"
"""


@pytest.fixture
def run_dir() -> AsyncIterator[Path]:
    # Short: a Unix socket path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="scn-", dir="/tmp") as d:
        yield Path(d)


def write_config(run_dir: Path, language: str = "en") -> Path:
    path = run_dir / "appliance.toml"
    path.write_text(CONFIG.format(dir=run_dir, language=language))
    return path


@pytest.fixture
async def broker(run_dir: Path) -> AsyncIterator[Broker]:
    b = Broker()
    await b.start(run_dir / "bus.sock")
    yield b
    await b.close()


@contextlib.asynccontextmanager
async def running(config: AppConfig) -> AsyncIterator[tuple[Runtime, ScreenService, BusClient]]:
    rt = Runtime("screen", config)
    async with rt.stack:
        svc = await daemon.start(rt)
        async with BusClient(config.bus_socket, "test-publisher") as bus:
            yield rt, svc, bus
        rt.stop()
        await rt._shutdown()


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def showing(svc: ScreenService, kind: str) -> Callable[[], bool]:
    return lambda: svc.view is not None and svc.view.kind == kind


async def test_states_from_the_bus_reach_the_screen(
    broker: Broker, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIANCE_CONFIG", str(write_config(run_dir)))
    config = load_config()
    async with running(config) as (rt, svc, bus):
        assert rt.is_ready
        # Nothing from the screening daemon yet: getting ready.
        await until(showing(svc, "warming-up"), "the warming-up screen")
        bus.publish_nowait("thermal.status", ThermalStatus(state="ok"))
        for state, kind in [
            (ScreeningState(state="idle"), "idle"),
            (ScreeningState(state="too-far"), "too-far"),
            (ScreeningState(state="multiple"), "multiple"),
            (ScreeningState(state="hold-still"), "hold-still"),
            (ScreeningState(state="measuring", progress=0.5), "measuring"),
            (ScreeningState(state="result", result="normal", estimate_c=36.6), "normal"),
        ]:
            bus.publish_nowait("screening.state", state)
            await until(showing(svc, kind), f"the {kind} screen")
        assert svc.report is not None
        assert svc.report.text_of("reading") == "36.6 °C"
        assert svc.report.text_of("small-print") == EN["disclaimer"]
        # The pixels of the display surface itself: the normal panel's colour.
        x, y, w, h = svc.report.regions["panel"]
        assert share_of(svc.target, (x + 20, y + 20, w - 40, h - 40), TONES["good"]) > 0.4
        assert svc.sounds.played[-1:] == ["normal"]

        bus.publish_nowait(
            "screening.state", ScreeningState(state="result", result="elevated", estimate_c=38.4)
        )
        await until(showing(svc, "elevated"), "the elevated screen")
        assert svc.report.text_of("body") == EN["elevated_body"]

        # A sensor fault overrides screening.
        bus.publish_nowait("thermal.status", ThermalStatus(state="fault", reason="i2c error"))
        await until(showing(svc, "fault"), "the fault screen")
        bus.publish_nowait("thermal.status", ThermalStatus(state="ok"))
        bus.publish_nowait("screening.state", ScreeningState(state="idle"))
        await until(showing(svc, "idle"), "idle again")

        # The technician asks for the setup code; then pairing shows its code and QR.
        bus.publish_nowait("setup.code", SetupCode(code="123456", expires_at=time.time() + 300))
        await until(showing(svc, "setup-code"), "the setup code")
        assert svc.report.text_of("code") == "1 2 3 4 5 6"
        bus.publish_nowait("setup.code", SetupCode(code=None))
        pairing = PairingStatus(
            state="code",
            user_code="ABCD-EFGH",
            expires_at=time.time() + 600,
            verification_uri_complete="https://r.example/a",
        )
        bus.publish_nowait("pairing.status", pairing)
        await until(showing(svc, "pairing"), "the pairing code")
        assert "qr" in svc.report.regions
        bus.publish_nowait("pairing.status", PairingStatus(state="paired", room_name="Door"))
        await until(showing(svc, "idle"), "idle after pairing")

        # Staff call in and write.
        bus.publish_nowait(
            "call.state", CallState(viewers=[ViewerStats(viewer_id="v")], room_connected=True, talking=True)
        )
        bus.publish_nowait(
            "call.chat", ChatMessage(sender="Ana", text="One moment please", wall_ts=time.time())
        )
        await until(
            lambda: svc.view is not None and svc.view.kind == "call" and len(svc.view.chat) == 1, "the call"
        )
        assert svc.report.text_of("sign") == EN["staff_listening"]
        assert svc.report.text_of("chat") == "Ana: One moment please"

        # The health line follows the screen.
        assert rt._status == "showing call"


async def test_preview_and_overlay_from_the_camera_ring(broker: Broker, run_dir: Path) -> None:
    config = load_config(write_config(run_dir))
    writer = FrameRingWriter.create(ring_path(PREVIEW_RING, run_dir), 320, 240, PREVIEW_FORMAT)
    try:
        async with running(config) as (_, svc, bus):
            bus.publish_nowait("screening.state", ScreeningState(state="idle"))
            await until(showing(svc, "idle"), "idle")
            frame = np.zeros((240, 320, 3), np.uint8)
            frame[..., 0] = 200  # blue, in the ring's B, G, R order
            seq = writer.write(frame, time.monotonic())
            notice = FrameRingNotice(
                ring=PREVIEW_RING,
                frame_seq=seq,
                width=320,
                height=240,
                capture_ts=0.0,
                generation=writer.layout.generation,
            )
            bus.publish_nowait("camera.preview", notice)
            await until(
                lambda: svc.report is not None and "camera" in svc.report.regions, "the camera picture"
            )
            thermal = ThermalFrame(pixels=thermal_pixels(), thermistor=24.0, rate_hz=10.0, frame_seq=1)
            bus.publish_nowait("thermal.frame", thermal)
            await until(
                lambda: svc.report is not None and "overlay" in svc.report.regions, "the thermal overlay"
            )
            x, y, w, h = svc.report.regions["camera"]
            # The cold side of the picture is the camera's blue; the warm side is tinted.
            assert share_of(svc.target, (x + w // 10, y + h - 20, 10, 10), (0, 0, 200)) == 1.0
            draws = svc.draws
            await asyncio.sleep(1.2)  # several ticks without news
            assert svc.draws == draws, "redrawn without a change"
    finally:
        writer.close()


async def test_language_changes_live_when_the_config_file_does(
    broker: Broker, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(run_dir, "en")
    monkeypatch.setenv("APPLIANCE_CONFIG", str(path))
    async with running(load_config()) as (_, svc, bus):
        bus.publish_nowait("screening.state", ScreeningState(state="too-close"))
        await until(showing(svc, "too-close"), "too close")
        assert svc.report is not None and svc.report.text_of("title") == EN["too_close_title"]
        # As the setup page writes it: a new file renamed into place.
        tmp = path.with_suffix(".new")
        tmp.write_text(CONFIG.format(dir=run_dir, language="de"))
        os.replace(tmp, path)
        await until(
            lambda: (
                svc.report is not None and svc.report.text_of("title") == CATALOGUE["de"]["too_close_title"]
            ),
            "the German prompt",
            timeout=3 * daemon.CONFIG_POLL_S + 2,
        )


async def test_appliance_run_screen_as_its_own_process(run_dir: Path) -> None:
    write_config(run_dir)
    bus_proc = BrokerProcess(run_dir)
    await bus_proc.start()
    notify = NotifySocket(run_dir / "notify-screen.sock")
    env = daemon_env(run_dir, notify, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "appliance", "run", "screen", env=env)
    try:
        ready = await notify.expect("READY=1", timeout=30)
        assert "dummy 800x480" in ready
        async with BusClient(run_dir / "bus.sock", "test") as bus:
            health = bus.subscribe("health.screen")
            bus.publish_nowait("thermal.status", ThermalStatus(state="ok"))
            for state, kind in [
                (ScreeningState(state="idle"), "idle"),
                (ScreeningState(state="result", result="elevated", estimate_c=38.9), "elevated"),
            ]:
                bus.publish_nowait("screening.state", state)
                async with asyncio.timeout(10):
                    while True:
                        msg = (await health.get()).msg
                        assert isinstance(msg, Health)
                        if msg.status == f"showing {kind}":
                            break
    finally:
        proc.terminate()
        assert await proc.wait() == 0
        notify.close()
        await bus_proc.stop()
        bus_proc.notify.close()


@contextlib.asynccontextmanager
async def screening_side(config: AppConfig, heartbeat_s: float) -> AsyncIterator[tuple[Runtime, BusClient]]:
    """A stand-in for the screening daemon: the real Runtime (its health.screening, its
    heartbeat), without the sensor. Leaving the block without rt._shutdown() is a crash: the
    connection goes, nothing more is said, the broker keeps the last state and health."""
    rt = Runtime("screening", config)
    async with rt.stack:
        bus = await rt.connect_bus()
        rt.ready("test stand-in")
        beat = asyncio.create_task(rt._heartbeat(heartbeat_s))
        try:
            yield rt, bus
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)


async def test_a_crashed_screening_daemon_takes_its_result_off_the_screen(
    broker: Broker, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Heartbeats every 0.1 s, judged stale after 1 s: the test waits for conditions, never
    # for the real 10 s heartbeat.
    monkeypatch.setattr(view, "HEALTH_STALE_S", 1.0)
    config = load_config(write_config(run_dir))
    async with running(config) as (rt, svc, bus):
        bus.publish_nowait("thermal.status", ThermalStatus(state="ok"))
        async with screening_side(config, 0.1) as (_, screening):
            screening.publish_nowait("screening.state", ScreeningState(state="result", result="normal"))
            await until(showing(svc, "normal"), "the result")
        # The screening daemon is gone (killed): its result stays retained on the broker.
        await until(showing(svc, "unavailable"), "the unavailable screen")
        assert svc.report is not None and svc.report.text_of("title") == EN["unavailable_title"]
        assert rt._status == "showing unavailable"
        # systemd starts it again: fresh health, fresh state, the screen follows.
        async with screening_side(config, 0.1) as (_, screening):
            screening.publish_nowait("screening.state", ScreeningState(state="idle"))
            await until(showing(svc, "idle"), "idle once screening is back")


async def test_a_stopping_screening_daemon_takes_its_prompt_off_the_screen(
    broker: Broker, run_dir: Path
) -> None:
    config = load_config(write_config(run_dir))
    async with running(config) as (_, svc, bus):
        bus.publish_nowait("thermal.status", ThermalStatus(state="ok"))
        async with screening_side(config, 10.0) as (side, screening):
            screening.publish_nowait("screening.state", ScreeningState(state="measuring", progress=0.5))
            await until(showing(svc, "measuring"), "measuring")
            # As `systemctl stop` does: health.screening says stopping. Well before the
            # heartbeat could go stale (HEALTH_STALE_S is more than until()'s timeout).
            assert view.HEALTH_STALE_S > 10.0
            await side._shutdown()
            await until(showing(svc, "unavailable"), "the unavailable screen")


async def test_a_result_retained_from_long_ago_is_not_shown_when_the_screen_starts(
    broker: Broker, run_dir: Path
) -> None:
    config = load_config(write_config(run_dir))
    # A screening daemon that died ten minutes ago: the broker still holds its last health
    # and its last verdict, both published then (the envelope's monotonic time).
    async with BusClient(config.paths.run_dir / "bus.sock", "screening-long-gone") as gone:
        then = time.monotonic() - 600
        gone.publish_nowait("thermal.status", ThermalStatus(state="ok"))
        gone.publish_nowait(
            "health.screening", Health(daemon="screening", state="ready", pid=1, started_ts=1.0), ts=then
        )
        gone.publish_nowait(
            "screening.state", ScreeningState(state="result", result="normal", estimate_c=36.6), ts=then
        )
        await gone.request("bus.echo", EchoParams())  # everything above reached the broker
    async with running(config) as (_, svc, _bus):
        await until(
            lambda: svc.inputs.screening is not None and svc.inputs.screening_health is not None,
            "the retained state and health",
        )
        await until(showing(svc, "unavailable"), "the unavailable screen")
        assert "normal" not in svc.sounds.played
        # The screening daemon starts again: its fresh health and state are shown.
        async with screening_side(config, 10.0) as (_, screening):
            screening.publish_nowait("screening.state", ScreeningState(state="idle"))
            await until(showing(svc, "idle"), "idle")


async def test_losing_the_bus_shows_unavailable_until_it_is_back(
    broker: Broker, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short grace period: the test waits for the screen to give up, not for the real one.
    monkeypatch.setattr(view, "BUS_GRACE_S", 0.5)
    config = load_config(write_config(run_dir))
    async with running(config) as (_, svc, _bus), screening_side(config, 10.0) as (_, screening):
        screening.publish_nowait("thermal.status", ThermalStatus(state="ok"))
        screening.publish_nowait("screening.state", ScreeningState(state="too-far"))
        await until(showing(svc, "too-far"), "too far")
        await broker.close()
        await until(showing(svc, "unavailable"), "the unavailable screen")
        again = Broker()
        await again.start(run_dir / "bus.sock")
        try:
            # Every client reconnects by itself and publishes its states again.
            await until(showing(svc, "too-far"), "too far once the bus is back")
        finally:
            await again.close()


async def test_a_broker_restart_within_the_grace_period_leaves_the_result_up_and_silent(
    broker: Broker, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Generous, so a slow machine's reconnect stays within it: what is tested is that a link
    # back within the grace period is never shown, not how fast the client reconnects.
    monkeypatch.setattr(view, "BUS_GRACE_S", 10.0)
    config = load_config(write_config(run_dir))
    async with running(config) as (_, svc, _bus), screening_side(config, 10.0) as (_, screening):
        shown: list[str] = []
        render = svc.renderer.render

        def recording(v: view.View, frames: Frames, target: pygame.Surface) -> RenderReport:
            shown.append(v.kind)
            return render(v, frames, target)

        monkeypatch.setattr(svc.renderer, "render", recording)
        screening.publish_nowait("thermal.status", ThermalStatus(state="ok"))
        screening.publish_nowait("screening.state", ScreeningState(state="result", result="normal"))
        await until(showing(svc, "normal"), "the result")
        assert svc.sounds.played == ["normal"]
        await broker.close()
        # The screen's tick has seen the link down (before the fix, it then showed unavailable).
        await until(lambda: not svc.inputs.bus_up, "the screen to notice the link is down")
        down = time.monotonic()
        again = Broker()
        await again.start(run_dir / "bus.sock")
        try:
            await until(
                lambda: svc.inputs.bus_since is not None and svc.inputs.bus_since > down,
                "the screen to notice the link is back",
            )
            # The screening daemon, still holding the person's result, publishes it again.
            screening.publish_nowait("screening.state", ScreeningState(state="result", result="normal"))
            await until(
                lambda: svc.inputs.screening_at is not None and svc.inputs.screening_at > down,
                "the result published again to reach the screen",
            )
        finally:
            await again.close()
        assert "unavailable" not in shown
        assert svc.view is not None and svc.view.kind == "normal"
        assert svc.sounds.played == ["normal"]
