"""CameraService (the daemon's core) with scripted backends, against an in-process broker:
faults, absence, stalls and hangs are reported with their reasons and retried."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient, Subscription
from appliance.bus.framering import FrameRingReader, FrameRingWriter
from appliance.bus.topics import CameraStatus, Empty, FrameRingNotice, H264AccessUnit, Ok
from appliance.camera import daemon
from appliance.camera.base import AccessUnit, Backend, CameraAbsent, CameraStuck, FrameSink, StreamSettings
from appliance.camera.daemon import CameraService
from appliance.camera.sim_backend import SimBackend
from appliance.config import AppConfig, replace

from .helpers import settings


class Scripted(Backend):
    """A backend that sends `units` access units from a thread, then does `then`."""

    name = "scripted"
    starts = 0

    def __init__(self, s: StreamSettings, units: int, then: str, absent: bool = False) -> None:
        super().__init__(s)
        self.units, self.then, self.absent = units, then, absent
        self.keyframes = 0
        self.stopped = threading.Event()
        self.unblock = threading.Event()

    def start(self, sink: FrameSink) -> None:
        type(self).starts += 1
        if self.absent:
            raise CameraAbsent("no camera in this test")

        def run() -> None:
            for i in range(self.units):
                sink.access_unit(AccessUnit(b"\x00\x00\x01\x65" + bytes([i]), i, i == 0, float(i), 320, 240))
            if self.then == "fault":
                sink.fault("the scripted camera broke")

        threading.Thread(target=run, daemon=True).start()

    def stop(self) -> None:
        if self.then == "hang":
            self.unblock.wait(10)
        self.stopped.set()

    def request_keyframe(self) -> bool:
        self.keyframes += 1
        return True


@pytest.fixture
async def bus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BusClient]:
    path = tmp_path_factory.mktemp("svc") / "bus.sock"
    broker = Broker()
    await broker.start(path)
    client = BusClient(path, "camera")
    await client.connect(5)
    yield client
    await client.close()
    await broker.close()


def config() -> AppConfig:
    return replace(AppConfig(), camera={"backend": "sim", "width": 320, "height": 240})


async def statuses(sub: Subscription, n: int) -> list[CameraStatus]:
    out = []
    for _ in range(n):
        msg = (await sub.get(10)).msg
        assert isinstance(msg, CameraStatus)
        out.append(msg)
    return out


async def test_a_fault_is_reported_and_the_camera_restarted(bus: BusClient) -> None:
    Scripted.starts = 0
    status = bus.subscribe("camera.status")
    video = bus.subscribe("camera.h264")
    backends: list[Scripted] = []

    def factory() -> Backend:
        backends.append(Scripted(settings(), 3, "fault"))
        return backends[-1]

    degraded: list[bool] = []
    service = CameraService(
        bus, config(), ring=None, backend_factory=factory, on_status=lambda t, d: degraded.append(d)
    )
    task = asyncio.create_task(service.run())
    try:
        got = await statuses(status, 5)
        assert [s.state for s in got] == ["starting", "ok", "fault", "starting", "ok"]
        assert got[2].reason == "the scripted camera broke; retrying in 1 s"
        assert (got[1].width, got[1].height, got[1].fps) == (320, 240, 10.0)
        units = [await video.get(5) for _ in range(3)]
        assert [u.attachment for u in units] == [b"\x00\x00\x01\x65" + bytes([i]) for i in range(3)]
        assert isinstance(units[0].msg, H264AccessUnit) and units[0].msg.keyframe
        assert backends[0].stopped.is_set()  # the failed run was stopped before the retry
        assert Scripted.starts >= 2
        # starting, ok, fault (degraded), starting, ok: health follows the camera both ways.
        assert degraded[:5] == [False, False, True, False, False]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_absent_camera_backs_off_and_refuses_keyframes(bus: BusClient) -> None:
    status = bus.subscribe("camera.status")
    service = CameraService(
        bus, config(), ring=None, backend_factory=lambda: Scripted(settings(), 0, "", absent=True)
    )
    task = asyncio.create_task(service.run())
    try:
        got = [s for s in await statuses(status, 4) if s.state != "starting"]
        assert [s.reason for s in got] == [
            "no camera in this test; retrying in 1 s",
            "no camera in this test; retrying in 2 s",
        ]
        reply = await service.keyframe(Empty())
        assert isinstance(reply, Ok) and not reply.ok and "absent" in reply.detail
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_silent_camera_is_a_stall(bus: BusClient) -> None:
    status = bus.subscribe("camera.status")
    backend = Scripted(settings(), 1, "silence")
    service = CameraService(bus, config(), ring=None, backend_factory=lambda: backend, stall_s=0.3)
    task = asyncio.create_task(service.run())
    try:
        got = await statuses(status, 3)
        assert got[2].state == "fault" and got[2].reason.startswith("no frames from the camera for 0.")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_keyframe_reaches_a_streaming_backend(bus: BusClient) -> None:
    status = bus.subscribe("camera.status")
    backend = Scripted(settings(), 1, "silence")
    service = CameraService(bus, config(), ring=None, backend_factory=lambda: backend, stall_s=30)
    task = asyncio.create_task(service.run())
    try:
        assert [s.state for s in await statuses(status, 2)] == ["starting", "ok"]
        reply = await service.keyframe(Empty())
        assert isinstance(reply, Ok) and reply.ok and backend.keyframes == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert backend.stopped.is_set()  # shutting down stops the camera


async def test_a_camera_that_hangs_on_stop_ends_the_service(
    bus: BusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "STOP_TIMEOUT_S", 0.2)
    backend = Scripted(settings(), 2, "fault")
    backend.then = "hang"
    service = CameraService(bus, config(), ring=None, backend_factory=lambda: backend, stall_s=0.3)
    try:
        async with asyncio.timeout(10):
            await service.run()
        assert service.hung and service.state == "fault"
    finally:
        backend.unblock.set()


class SlowStart(Backend):
    """A backend whose start takes `delay` s (a picamera2 configure, a webcam's fallback open),
    then streams one access unit every `period` s, beginning `first_after` s after start returns."""

    name = "slow"

    def __init__(
        self, s: StreamSettings, delay: float, first_after: float = 0.0, period: float = 0.1
    ) -> None:
        super().__init__(s)
        self.delay, self.first_after, self.period = delay, first_after, period
        self.events: list[str] = []
        self.running = threading.Event()
        self.started = threading.Event()
        self._lock = threading.Lock()

    def start(self, sink: FrameSink) -> None:
        time.sleep(self.delay)
        with self._lock:
            self.events.append("started")
            self.running.set()
            self.started.set()

        def run() -> None:
            time.sleep(self.first_after)
            i = 0
            while self.running.is_set():
                sink.access_unit(AccessUnit(b"\x00\x00\x01\x65", i, i == 0, float(i), 320, 240))
                i += 1
                time.sleep(self.period)

        threading.Thread(target=run, daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self.events.append("stop")
            self.running.clear()

    def request_keyframe(self) -> bool:
        return self.running.is_set()


async def test_a_start_that_times_out_is_stopped_once_it_returns(
    bus: BusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stopping a camera while its start is still running in another thread does nothing (there
    # is nothing open yet), and the start then opens it behind the daemon's back: it streams
    # into nowhere and holds the device, so every later start finds it busy.
    monkeypatch.setattr(daemon, "START_TIMEOUT_S", 0.2)
    status = bus.subscribe("camera.status")
    backends: list[SlowStart] = []

    def factory() -> Backend:
        backends.append(SlowStart(settings(), delay=0.8))
        return backends[-1]

    service = CameraService(bus, config(), ring=None, backend_factory=factory, stall_s=30)
    task = asyncio.create_task(service.run())
    try:
        got = await statuses(status, 2)
        assert got[1].state == "fault" and "did not start within" in got[1].reason
        first = backends[0]
        assert await asyncio.to_thread(first.started.wait, 10)
        for _ in range(60):  # up to 3 s for the stop that should follow
            if not first.running.is_set():
                break
            await asyncio.sleep(0.05)
        # Stopped after its start returned, not before: the camera is not left streaming.
        assert not first.running.is_set() and first.events[-1] == "stop", first.events
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_slow_start_is_not_mistaken_for_a_stall(bus: BusClient) -> None:
    # The stall clock starts when the camera is streaming, not when we began opening it: a
    # camera that took most of the stall timeout to start still gets its first frames' time.
    status = bus.subscribe("camera.status")
    backend = SlowStart(settings(), delay=1.5, first_after=1.2)
    service = CameraService(bus, config(), ring=None, backend_factory=lambda: backend, stall_s=2.0)
    video = bus.subscribe("camera.h264")
    task = asyncio.create_task(service.run())
    try:
        assert [s.state for s in await statuses(status, 2)] == ["starting", "ok"]
        try:
            await video.get(5)  # the first unit, 1.2 s after the start returned
        except TimeoutError:
            pytest.fail(f"no access unit; the camera is {service.status_line}")
        assert service.state == "ok", service.status_line
        assert backend.events == ["started"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_camera_stuck_on_stop_ends_the_service(bus: BusClient) -> None:
    # A backend that says it could not release the camera: a retry in this process would find
    # the device busy forever, so the daemon exits to be restarted (as for a stop that hangs).
    backend = Scripted(settings(), 2, "fault")

    def stuck() -> None:
        raise CameraStuck("a read from the camera did not return")

    backend.stop = stuck  # type: ignore[method-assign]
    service = CameraService(bus, config(), ring=None, backend_factory=lambda: backend, stall_s=0.3)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await asyncio.shield(task)
        assert service.hung and service.state == "fault"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Previewing(SlowStart):
    """Streams access units and, beside each, a preview frame."""

    def start(self, sink: FrameSink) -> None:
        super().start(sink)

        def previews() -> None:
            while self.running.is_set():
                sink.preview(np.full((6, 8, 3), 7, np.uint8), time.monotonic())
                time.sleep(self.period)

        threading.Thread(target=previews, daemon=True).start()


async def test_a_ring_that_could_not_be_created_is_tried_again(
    bus: BusClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /run full (or not there yet) when the daemon started: the screen goes without a preview
    # until the ring can be made, not until the daemon happens to restart weeks later.
    monkeypatch.setattr(daemon, "RING_RETRY_S", 0.2)
    path = tmp_path / "camera-preview"
    attempts: list[bool] = []

    def open_ring() -> FrameRingWriter | None:
        ok = len(attempts) >= 2  # the first two attempts find the tmpfs full
        attempts.append(ok)
        return FrameRingWriter.create(path, 8, 6, "RGB888") if ok else None

    previews = bus.subscribe("camera.preview")
    backend = Previewing(settings(), delay=0.0)
    service = CameraService(
        bus, config(), ring=open_ring(), open_ring=open_ring, backend_factory=lambda: backend, stall_s=30
    )
    task = asyncio.create_task(service.run())
    try:
        notice = (await previews.get(10)).msg
        assert isinstance(notice, FrameRingNotice) and (notice.width, notice.height) == (8, 6)
        assert service.ring is not None and service.ring.layout.generation == notice.generation
        assert backend.events == ["started"]  # found without restarting the camera
        with FrameRingReader.open(path) as reader:
            frame = reader.latest()
            assert frame is not None and (frame.pixels == 7).all()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if service.ring is not None:
            service.ring.close()


class FlakySim(SimBackend):
    """The real sim pipeline (capture and encoder threads, libx264) that fails after 3 units."""

    def start(self, sink: FrameSink) -> None:
        count = 0

        class Tap:
            def access_unit(self, au: AccessUnit) -> None:
                nonlocal count
                sink.access_unit(au)
                count += 1
                if count == 3:
                    sink.fault("the flaky camera broke")

            def preview(self, image: npt.NDArray[np.uint8], capture_ts: float) -> None:
                sink.preview(image, capture_ts)

            def fault(self, reason: str) -> None:
                sink.fault(reason)

        super().start(Tap())


async def test_restarting_a_failing_camera_leaks_no_threads_or_descriptors(
    bus: BusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weeks of a flaky camera are thousands of restarts: threads and fds must stay flat."""
    monkeypatch.setattr(daemon, "BACKOFF_INITIAL_S", 0.01)
    monkeypatch.setattr(daemon, "BACKOFF_MAX_S", 0.01)
    status = bus.subscribe("camera.status")
    service = CameraService(
        bus, config(), ring=None, backend_factory=lambda: FlakySim(settings(160, 120, fps=30))
    )
    task = asyncio.create_task(service.run())

    async def faults(n: int) -> None:
        seen = 0
        while seen < n:
            msg = (await status.get(10)).msg
            assert isinstance(msg, CameraStatus)
            if msg.state == "fault":
                assert msg.reason.startswith("the flaky camera broke")
                seen += 1

    try:
        await faults(3)  # warm up: libraries loaded, the executor's threads made
        fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
        await faults(15)
        await faults(1)  # the thread of the run just failed may still be ending
        assert len(os.listdir("/proc/self/fd")) <= fds
        assert threading.active_count() <= threads
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
