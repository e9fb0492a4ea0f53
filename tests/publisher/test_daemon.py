"""Integration: `appliance run publisher` as a real process, with the real broker and camera
daemons, paired (credentials on disk as pairing stores them) with the in-test room service."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bus.helpers import BrokerProcess, NotifySocket, daemon_env  # tests/bus, a sibling package

from appliance.bus.client import BusClient
from appliance.bus.topics import CallState, PairingStatus
from appliance.pairing.credentials import DeviceCredentials, save_credentials
from appliance.screening.events import EventStore

from .helpers import Screening, wait_until
from .room import DEVICE_TOKEN, ROOM, RoomServer
from .viewer import AiortcViewer

pytestmark = pytest.mark.slow

CONFIG = """[bus]
allowed_groups = []

[camera]
backend = "sim"
width = 160
height = 120
fps = 15
bitrate = 200000
keyframe_interval_s = 10.0
preview_width = 80
preview_height = 60

[publisher]
audio_backend = "sim"
"""


class Daemon:
    def __init__(self, name: str, run_dir: Path) -> None:
        self.name = name
        self.run_dir = run_dir
        self.notify = NotifySocket(run_dir / f"{name}.notify")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        env = daemon_env(self.run_dir, self.notify)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance", "run", self.name, env=env
        )
        return await self.notify.expect("READY=1", timeout=30)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                return await self.proc.wait()
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            self.notify.close()


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def proc_threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("Threads:")).split()[1])


@pytest.fixture
async def kiosk(tmp_path_factory: pytest.TempPathFactory, room: RoomServer) -> AsyncIterator[Daemon]:
    """Broker, camera and publisher daemons; the kiosk paired with the room service."""
    run_dir = tmp_path_factory.mktemp("kiosk")
    (run_dir / "appliance.toml").write_text(CONFIG)
    save_credentials(
        run_dir,
        DeviceCredentials(
            room_url=room.url, token=DEVICE_TOKEN, room_id=ROOM.id, room_name=ROOM.name, paired_at=time.time()
        ),
    )
    broker = BrokerProcess(run_dir)
    await broker.start()
    camera = Daemon("camera", run_dir)
    publisher = Daemon("publisher", run_dir)
    # The screening daemon's side: its event history answers at once, so the publisher's
    # finite start-up work (learning that history) ends while the daemon runs on.
    screening_bus = BusClient(run_dir / "bus.sock", "screening")
    await screening_bus.connect()
    screening = Screening(screening_bus, EventStore.open(run_dir / "events.db", boot_id="b"))
    screening.record()
    try:
        await camera.start()
        ready = await publisher.start()
        assert "STATUS=up to 4 viewers; audio sim" in ready.split("\n")
        await wait_until(lambda: screening.requests >= 1, "the publisher asking for the history")
        yield publisher
        assert publisher.proc is not None and publisher.proc.returncode is None, "the daemon died"
        assert await publisher.stop() == 0
    finally:
        await screening_bus.close()
        for daemon in (publisher, camera):
            if daemon.proc is not None and daemon.proc.returncode is None:
                await daemon.stop()
        await broker.stop()


async def test_the_daemon_serves_a_viewer_and_survives_the_room_service_dying(
    kiosk: Daemon, room: RoomServer
) -> None:
    await room.wait_device(15)
    async with BusClient(kiosk.run_dir / "bus.sock", "observer") as bus:
        pairing = bus.subscribe("pairing.status")
        status = (await pairing.get(10)).msg
        assert isinstance(status, PairingStatus) and status.state == "paired"
        states = bus.subscribe("call.state")

        viewer = AiortcViewer(room.url)
        try:
            await viewer.connect()
            await viewer.wait_for(lambda: len(viewer.got.video) >= 5, "video from the daemon", 20)
            await room.kill()  # the hosted service dies mid-call
            async with asyncio.timeout(10):
                while True:
                    state = (await states.get()).msg
                    assert isinstance(state, CallState)
                    if not state.room_connected:
                        break
            before = len(viewer.got.video)
            await viewer.wait_for(lambda: len(viewer.got.video) > before + 5, "video during the outage", 10)
        finally:
            await viewer.close(bye=False)
        await room.start()  # back on the same port: the daemon reconnects by itself
        await room.wait_device(30)
        again = AiortcViewer(room.url)
        try:
            await again.connect()
            await again.wait_for(lambda: len(again.got.video) >= 5, "video after the reconnect", 20)
        finally:
            await again.close()
        assert room.device_connects == 2


async def test_fifty_joins_and_leaves_leave_the_daemon_flat(kiosk: Daemon, room: RoomServer) -> None:
    await room.wait_device(15)

    async def one_call() -> None:
        viewer = AiortcViewer(room.url)
        try:
            await viewer.connect()
            await viewer.wait_for(lambda: len(viewer.got.video) >= 1, "a first frame", 20)
        finally:
            await viewer.close()

    async def idle() -> None:
        await asyncio.sleep(1.0)  # the daemon closes a call's connection after its bye

    # Warm up: codecs, pools and the allocator's arenas. Measured here over 200 calls, the
    # daemon's RSS rose 5 MiB over the first 125 and 0.3 MiB over the next 75: it settles.
    for _ in range(25):
        await one_call()
    await idle()
    fds0, rss0, threads0 = proc_fds(kiosk.pid), proc_rss(kiosk.pid), proc_threads(kiosk.pid)
    for _ in range(50):
        await one_call()
    await idle()
    await wait_until(lambda: proc_fds(kiosk.pid) <= fds0, f"the daemon's fds back to {fds0}", 10)
    fds1, rss1, threads1 = proc_fds(kiosk.pid), proc_rss(kiosk.pid), proc_threads(kiosk.pid)
    print(
        f"publisher daemon: fds {fds0} -> {fds1}, rss {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB, "
        f"threads {threads0} -> {threads1}"
    )
    assert threads1 <= threads0
    # A call that left its peer connection, codec contexts or buffers behind would cost far
    # more than 160 KiB each (50 calls: 8 MiB); allocator settling stays below that.
    assert rss1 - rss0 < 8 * 2**20, f"the daemon's memory grew by {(rss1 - rss0) / 2**20:.1f} MiB"
    assert room.offers_relayed == 75
