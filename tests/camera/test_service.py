"""CameraService (the daemon's core) with scripted backends, against an in-process broker:
faults, absence, stalls and hangs are reported with their reasons and retried."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient, Subscription
from appliance.bus.topics import CameraStatus, Empty, H264AccessUnit, Ok
from appliance.camera import daemon
from appliance.camera.base import AccessUnit, Backend, CameraAbsent, FrameSink, StreamSettings
from appliance.camera.daemon import CameraService
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
