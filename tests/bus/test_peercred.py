"""SO_PEERCRED: a peer whose uid and gid are not allowed is refused, and told so.

The peer is a forked child that drops to nobody (uid/gid 65534) before it connects; the broker
runs in this process, as root, on a 0666 socket in a world-accessible directory, so only the
broker's own check stands between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.bus.framing import ErrorInfo, Frame, FrameDecoder, encode_frame, encode_payload
from appliance.bus.topics import EchoParams, Scratch

from .helpers import wait_until

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")


def _child(path: str, uid: int, gid: int, out_fd: int) -> None:
    """In the forked child: become uid/gid, connect, ask for an echo, write what came back."""
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        with contextlib.suppress(OSError):  # the broker may have closed the connection already
            sock.sendall(encode_frame("req", "bus.echo", encode_payload(EchoParams(data=b"hi")), seq=1))
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            if b"bus.echo" in data and b"rep" in data:
                break
        os.write(out_fd, data)
        os._exit(0)
    except BaseException:
        os._exit(3)


async def connect_as(path: Path, uid: int, gid: int) -> list[Frame]:
    """Run a client as uid/gid; the frames it received."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(str(path), uid, gid, w)
    os.close(w)
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(None, _read_all, r)
        _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
    finally:
        os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    frames = FrameDecoder().feed(data)
    return [Frame(f.env, f.attachment, memoryview(bytes(f.raw))) for f in frames]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    # pytest's tmp dirs are 0700: nobody could not even reach the socket.
    path = Path(tempfile.mkdtemp(prefix="buspeer", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
async def start(open_dir: Path) -> AsyncIterator[Callable[..., Awaitable[Broker]]]:
    brokers = []

    async def start(**kwargs: object) -> Broker:
        broker = Broker(**kwargs)  # type: ignore[arg-type]
        await broker.start(open_dir / "bus.sock", mode=0o666)
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        await broker.close()


async def test_wrong_uid_is_refused_and_allowed_clients_still_work(
    start: Callable[..., Awaitable[Broker]], open_dir: Path
) -> None:
    broker = await start(allowed_uids=[1234], allowed_gids=[4321])
    path = open_dir / "bus.sock"
    async with BusClient(path, "allowed") as allowed:
        sub = allowed.subscribe("test.x")
        await allowed.request("bus.echo", EchoParams())
        frames_in = broker.stats.frames_in

        [frame] = await connect_as(path, NOBODY, NOBODY)
        assert (frame.env.kind, frame.env.seq) == ("err", 0)
        info = msgspec.msgpack.decode(frame.env.payload, type=ErrorInfo)
        assert (info.code, info.message) == ("permission", "peer uid/gid not allowed on this bus")
        assert broker.stats.refused == 1
        assert broker.stats.frames_in == frames_in  # nothing nobody sent was handled
        assert [c.name for c in broker.clients] == ["allowed"]

        await allowed.publish("test.x", Scratch(n=1))
        assert (await sub.get(5)).msg == Scratch(n=1)
        assert allowed.reconnects == 0


@pytest.mark.parametrize(("uids", "gids"), [([NOBODY], []), ([], [NOBODY])], ids=["by-uid", "by-gid"])
async def test_allowed_uid_or_gid_is_served(
    start: Callable[..., Awaitable[Broker]], open_dir: Path, uids: list[int], gids: list[int]
) -> None:
    broker = await start(allowed_uids=uids, allowed_gids=gids)
    frames = await connect_as(open_dir / "bus.sock", NOBODY, NOBODY)
    assert [(f.env.kind, f.env.topic) for f in frames] == [("rep", "bus.echo")]
    assert msgspec.msgpack.decode(frames[0].env.payload, type=EchoParams) == EchoParams(data=b"hi")
    assert broker.stats.refused == 0
    await wait_until(lambda: not broker.clients, "the child's connection to be gone")
