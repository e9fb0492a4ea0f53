"""Integration: `appliance run camera` as a real process against the real broker."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from bus.helpers import BrokerProcess, NotifySocket, daemon_env  # tests/bus, a sibling package

from appliance.bus.client import BusClient, Subscription
from appliance.bus.framering import FrameRingReader, ring_path
from appliance.bus.topics import CameraStatus, Empty, FrameRingNotice, H264AccessUnit, Health, Ok
from appliance.camera import h264

from .helpers import decode_all

pytestmark = pytest.mark.slow


class CameraProcess:
    def __init__(self, run_dir: Path, camera_toml: str) -> None:
        self.run_dir = run_dir
        (run_dir / "appliance.toml").write_text(f"[bus]\nallowed_groups = []\n\n[camera]\n{camera_toml}")
        self.notify = NotifySocket(run_dir / "camera.notify")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        env = daemon_env(self.run_dir, self.notify)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance", "run", "camera", env=env
        )
        return await self.notify.expect("READY=1", timeout=30)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                return await self.proc.wait()
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            self.notify.close()


async def next_status(sub: Subscription, *states: str, timeout: float = 15) -> CameraStatus:
    async with asyncio.timeout(timeout):
        while True:
            msg = (await sub.get()).msg
            assert isinstance(msg, CameraStatus)
            if msg.state in states:
                return msg


async def test_sim_camera_publishes_h264_previews_and_status(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run_dir = tmp_path_factory.mktemp("cam")
    broker = BrokerProcess(run_dir)
    await broker.start()
    camera = CameraProcess(
        run_dir,
        'backend = "sim"\nwidth = 320\nheight = 240\nfps = 15\nbitrate = 400000\n'
        "keyframe_interval_s = 10.0\npreview_width = 160\npreview_height = 120\n",
    )
    try:
        async with BusClient(run_dir / "bus.sock", "observer") as bus:
            status = bus.subscribe("camera.status")
            video = bus.subscribe("camera.h264")
            previews = bus.subscribe("camera.preview")
            health = bus.subscribe("health.camera")
            ready = await camera.start()
            assert "STATUS=streaming 320x240 at 15 fps (sim)" in ready.split("\n")

            ok = await next_status(status, "ok")
            assert (ok.backend, ok.width, ok.height, ok.fps) == ("sim", 320, 240, 15.0)

            units = [await video.get(10) for _ in range(10)]
            for rx in units:
                assert isinstance(rx.msg, H264AccessUnit) and rx.attachment
                assert rx.msg.time_base_den == 90000 and (rx.msg.width, rx.msg.height) == (320, 240)
            aus = [rx.msg for rx in units if isinstance(rx.msg, H264AccessUnit)]
            first = next(i for i, m in enumerate(aus) if m.keyframe)
            assert aus[-1].pts > aus[0].pts
            sps = h264.find_sps(units[first].attachment or b"")
            assert sps is not None and sps.constrained_baseline
            # A viewer joining at the first keyframe it sees decodes everything from there.
            tail = [rx.attachment or b"" for rx in units[first:]]
            assert len(decode_all(tail)) == len(tail)

            notice = (await previews.get(10)).msg
            assert isinstance(notice, FrameRingNotice)
            assert (notice.ring, notice.width, notice.height) == ("camera-preview", 160, 120)
            with FrameRingReader.open(ring_path(notice.ring, run_dir)) as reader:
                assert reader.layout.generation == notice.generation
                frame = reader.read(notice.frame_seq) or reader.latest()
                assert frame is not None and frame.pixels.shape == (120, 160, 3)
                assert frame.pixels.std() > 5  # a picture, not an empty slot

            # camera.keyframe: with a 10 s interval no IDR is due, so the one we see is ours.
            video.queue.clear()
            reply = await bus.request("camera.keyframe", Empty())
            assert isinstance(reply, Ok) and reply.ok
            after = [(await video.get(5)).msg for _ in range(3)]
            assert all(isinstance(m, H264AccessUnit) for m in after)
            assert any(getattr(m, "keyframe", False) for m in after[:2]), after

            states = []
            while "ready" not in states:
                msg = (await health.get(5)).msg
                assert isinstance(msg, Health)
                states.append(msg.state)
            assert "degraded" not in states
        assert await camera.stop() == 0
        assert not ring_path("camera-preview", run_dir).exists()
    finally:
        if camera.proc is not None and camera.proc.returncode is None:
            await camera.stop()
        assert await broker.stop() == 0
        broker.notify.close()


@pytest.mark.parametrize(
    "device, state, words",
    [
        ("{run_dir}/video7", "absent", "does not exist"),  # no webcam plugged in
        ("/dev/null", "fault", "/dev/null"),  # a device that is not a camera
    ],
)
async def test_a_missing_or_broken_webcam_degrades_but_the_daemon_stays_up(
    tmp_path_factory: pytest.TempPathFactory, device: str, state: str, words: str
) -> None:
    run_dir = tmp_path_factory.mktemp("nocam")
    device = device.format(run_dir=run_dir)
    broker = BrokerProcess(run_dir)
    await broker.start()
    camera = CameraProcess(run_dir, f'backend = "v4l2"\ndevice = "{device}"\nwidth = 320\nheight = 240\n')
    try:
        async with BusClient(run_dir / "bus.sock", "observer") as bus:
            status = bus.subscribe("camera.status")
            health = bus.subscribe("health.camera")
            await camera.start()
            bad = await next_status(status, state)
            assert bad.backend == "v4l2" and words in bad.reason and "retrying" in bad.reason
            assert (bad.width, bad.height) == (0, 0)

            reply = await bus.request("camera.keyframe", Empty())
            assert isinstance(reply, Ok) and not reply.ok and state in reply.detail

            async with asyncio.timeout(10):
                while True:
                    msg = (await health.get()).msg
                    assert isinstance(msg, Health)
                    if msg.state == "degraded":
                        break
            assert words in msg.status

            # It tries again (after 1 s, then 2 s...) and is still serving.
            await next_status(status, "starting", timeout=5)
            again = await next_status(status, state, timeout=5)
            assert "retrying in 2 s" in again.reason
            assert camera.proc is not None and camera.proc.returncode is None
            echo = await bus.request("camera.keyframe", Empty())
            assert isinstance(echo, Ok)
        assert await camera.stop() == 0
    finally:
        if camera.proc is not None and camera.proc.returncode is None:
            await camera.stop()
        assert await broker.stop() == 0
        broker.notify.close()
