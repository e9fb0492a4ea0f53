"""Fixtures for the publisher's tests: a real bus, the real camera service with its sim backend
(small frames), the in-test room service, and the publisher's service wired as in the daemon."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.camera.daemon import CameraService
from appliance.camera.sim_backend import SimBackend
from appliance.config import AppConfig, parse_config
from appliance.publisher.service import PublisherService
from appliance.publisher.signaling import Credentials

from .helpers import camera_settings
from .room import DEVICE_TOKEN, RoomServer
from .viewer import AiortcViewer


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short: a Unix socket path must fit in 108 bytes.
    path = tmp_path_factory.mktemp("pub")
    assert len(str(path / "bus.sock")) < 100
    return path


@pytest.fixture
async def broker(run_dir: Path) -> AsyncIterator[Broker]:
    b = Broker()
    await b.start(run_dir / "bus.sock")
    yield b
    await b.close()


@pytest.fixture
async def bus_factory(run_dir: Path, broker: Broker) -> AsyncIterator[Callable[[str], Awaitable[BusClient]]]:
    clients: list[BusClient] = []

    async def make(name: str) -> BusClient:
        client = BusClient(run_dir / "bus.sock", name)
        await client.connect(10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


class Camera:
    """The camera daemon's service with the sim backend, in this process; counts keyframe calls."""

    def __init__(self, service: CameraService) -> None:
        self.service = service
        self.keyframe_calls = 0

    async def keyframe(self, params: Any) -> Any:
        self.keyframe_calls += 1
        return await self.service.keyframe(params)


@pytest.fixture
async def camera(run_dir: Path, bus_factory: Callable[[str], Awaitable[BusClient]]) -> AsyncIterator[Camera]:
    bus = await bus_factory("camera")
    config = parse_config({"camera": {"backend": "sim"}})
    settings = camera_settings()
    service = CameraService(bus, config, ring=None, backend_factory=lambda: SimBackend(settings))
    cam = Camera(service)
    bus.serve("camera.keyframe", cam.keyframe)
    task = asyncio.ensure_future(service.run())
    async with asyncio.timeout(20):
        await service.first_attempt.wait()
    assert service.state == "ok", service.status_line
    yield cam
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def room() -> AsyncIterator[RoomServer]:
    server = RoomServer()
    await server.start()
    yield server
    await server.kill()


def publisher_config(run_dir: Path, **publisher: Any) -> AppConfig:
    return parse_config(
        {
            "paths": {"run_dir": str(run_dir), "state_dir": str(run_dir)},
            "publisher": {"audio_backend": "sim", **publisher},
            "camera": {"backend": "sim"},
        }
    )


class Publisher:
    def __init__(self, service: PublisherService, tasks: list[asyncio.Task[Any]]) -> None:
        self.service = service
        self.tasks = tasks

    @property
    def call(self) -> Any:
        return self.service.call

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.service.aclose()


@pytest.fixture
async def start_publisher(
    run_dir: Path, bus_factory: Callable[[str], Awaitable[BusClient]], room: RoomServer
) -> AsyncIterator[Callable[..., Awaitable[Publisher]]]:
    started: list[Publisher] = []

    async def start(**publisher: Any) -> Publisher:
        bus = await bus_factory("publisher")
        config = publisher_config(run_dir, **publisher)

        async def credentials() -> Credentials:
            return Credentials(room.url, DEVICE_TOKEN)

        service = PublisherService(bus, config, credentials)
        tasks: list[asyncio.Task[Any]] = []

        def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
            task = asyncio.ensure_future(coro)
            task.set_name(name)
            tasks.append(task)
            return task

        await service.start(spawn)
        service.link.backoff.initial = 0.05  # tests should not wait out a production backoff
        service.link.backoff.maximum = 0.5
        pub = Publisher(service, tasks)
        started.append(pub)
        await room.wait_device()
        return pub

    yield start
    for pub in started:
        await pub.stop()


@pytest.fixture
async def viewers(room: RoomServer) -> AsyncIterator[Callable[..., Awaitable[AiortcViewer]]]:
    """make(kind=AiortcViewer, **kwargs): an aiortc viewer joined through the room, closed at the end."""
    made: list[AiortcViewer] = []

    async def make(kind: type[AiortcViewer] = AiortcViewer, **kwargs: Any) -> AiortcViewer:
        viewer = kind(room.url, **kwargs)
        made.append(viewer)
        await viewer.connect()
        return viewer

    yield make
    for viewer in made:
        await viewer.close()
