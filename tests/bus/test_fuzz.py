"""Garbage at a live broker: it never crashes, keeps serving, and lets go of what it held.

The hypothesis tests are synchronous and run the broker on its own event loop in a thread, so
its state can be checked between examples. The memory test runs the real broker process and
reads its RSS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import socket
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.bus.broker import Broker
from appliance.bus.framing import PREFIX, ErrorInfo, FrameDecoder, Kind, encode_frame, encode_payload
from appliance.bus.topics import METHODS, TOPICS, EchoParams

from .helpers import NotifySocket, daemon_env

T = TypeVar("T")
KINDS: list[Kind] = list(typing.get_args(Kind))
NAMES = [*TOPICS, *METHODS, "health.thermal", "test.x", "test.event.x", "test.state.x", "", "*", "thermal.*"]


class ThreadedBroker:
    """A Broker on its own loop in a thread; `call` runs a function on that loop."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.broker = Broker(**kwargs)
        asyncio.run_coroutine_threadsafe(self.broker.start(path), self.loop).result(10)

    def call(self, fn: Callable[[], T]) -> T:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.broker.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class GoodClient:
    """A well-behaved blocking client that asks the broker for echoes."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.decoder = FrameDecoder()
        self.seq = 0

    def echo(self) -> None:
        self.seq += 1
        data = self.seq.to_bytes(4, "big")
        self.sock.sendall(
            encode_frame("req", "bus.echo", encode_payload(EchoParams(data=data)), seq=self.seq)
        )
        while True:
            chunk = self.sock.recv(65536)
            assert chunk, "the broker closed the well-behaved client"
            frames = self.decoder.feed(chunk)
            if frames:
                [frame] = frames
                assert (frame.env.kind, frame.env.seq) == ("rep", self.seq)
                assert msgspec.msgpack.decode(frame.env.payload, type=EchoParams).data == data
                return


def throw(path: Path, data: bytes) -> bytes:
    """Send data on a fresh connection, end it, and read what the broker says until it closes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    received = b""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass  # the broker closed on a bad frame while the rest was still being sent
    finally:
        sock.close()
    return received


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedBroker]:
    tb = ThreadedBroker(tmp_path_factory.mktemp("fuzz") / "bus.sock", max_frame=64 * 1024, event_queue=16)
    yield tb
    tb.close()


@pytest.fixture(scope="module")
def good(threaded: ThreadedBroker) -> Iterator[GoodClient]:
    client = GoodClient(threaded.path)
    client.echo()
    yield client
    client.sock.close()


def check_released(tb: ThreadedBroker, good: GoodClient) -> None:
    """Back to the baseline: only the good client is connected, and nothing is held for others."""
    for _ in range(1000):
        if tb.call(lambda: len(tb.broker.clients)) == 1:
            break
        time.sleep(0.005)

    def state() -> dict[str, Any]:
        b = tb.broker
        return {
            "clients": len(b.clients),
            "buffered": sum(c.decoder.buffered for c in b.clients),
            "pending": sum(len(c.pending.frames) for c in b.clients),
            "inflight": len(b.inflight),
            "servers": len(b.servers),
            "out_batch": len(b.out_batch),
        }

    assert tb.call(state) == {
        "clients": 1,
        "buffered": 0,
        "pending": 0,
        "inflight": 0,
        "servers": 0,
        "out_batch": 0,
    }
    good.echo()


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=64),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


@st.composite
def wrong_frames(draw: st.DrawFn) -> bytes:
    """Frames with a valid envelope around anything: kinds, names and payloads mixed at random."""
    name = draw(st.sampled_from(NAMES) | st.text(max_size=12) | st.just("test.state." + "y" * 300))
    payload = encode_payload(draw(msgpack_values))
    attachment = draw(st.none() | st.binary(min_size=1, max_size=512))
    frame = encode_frame(
        draw(st.sampled_from(KINDS)),
        name,
        payload,
        seq=draw(st.integers(-(2**63), 2**64 - 1)),
        ts=draw(st.floats()),
        attachment=attachment,
    )
    if draw(st.booleans()):
        # Lie about a length in the prefix.
        hlen, alen = PREFIX.unpack_from(frame)
        hlen = draw(st.sampled_from([hlen, 0, hlen + 1, hlen - 1, 2**32 - 1]))
        alen = draw(st.sampled_from([alen, alen + 1, 2**31, 60_000]))
        frame = PREFIX.pack(max(hlen, 0), alen) + frame[PREFIX.size :]
    return frame


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(threaded: ThreadedBroker, good: GoodClient, data: bytes) -> None:
    received = throw(threaded.path, data)
    frames = FrameDecoder().feed(received)
    # Whatever it said was well-formed; if it refused the stream, it said why, last.
    assert all(f.env.kind in ("rep", "err", "pub", "req") for f in frames)
    check_released(threaded, good)


@FUZZ
@given(frames=st.lists(wrong_frames(), min_size=1, max_size=8))
def test_structurally_valid_but_wrong_frames(
    threaded: ThreadedBroker, good: GoodClient, frames: list[bytes]
) -> None:
    received = throw(threaded.path, b"".join(frames))
    for frame in FrameDecoder().feed(received):
        if frame.env.kind == "err":
            msgspec.msgpack.decode(frame.env.payload, type=ErrorInfo)
    check_released(threaded, good)


def test_the_counts_add_up(threaded: ThreadedBroker, good: GoodClient) -> None:
    before = threaded.call(lambda: (threaded.broker.stats.bad_frames, threaded.broker.stats.connections))
    for n in range(20):
        throw(threaded.path, encode_frame("pub", f"nope.{n}", encode_payload({})))
    check_released(threaded, good)
    after = threaded.call(lambda: (threaded.broker.stats.bad_frames, threaded.broker.stats.connections))
    assert (after[0] - before[0], after[1] - before[1]) == (20, 20)
    assert all(len(topic) <= 256 for topic in threaded.broker.retained)


# --- memory of the real broker process -----------------------------------------------------


def bad_frame(rng: random.Random) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 2048))
    if choice == 1:  # wrong type for the topic
        return encode_frame("pub", "thermal.frame", encode_payload({"pixels": [rng.random()] * 3}))
    if choice == 2:  # unknown topic with a long name
        return encode_frame("pub", "nope." + "x" * rng.randrange(2000), encode_payload({}))
    if choice == 3:  # attachment where none is taken
        return encode_frame("pub", "thermal.status", encode_payload({"state": "ok"}), attachment=b"a" * 1000)
    if choice == 4:  # a big frame announced, half of it sent
        return PREFIX.pack(40, 3_000_000) + rng.randbytes(200_000)
    if choice == 5:  # oversized
        return PREFIX.pack(40, 100_000_000)
    if choice == 6:  # unknown method served
        return encode_frame("serve", f"nope.{rng.randrange(10**9)}")
    return encode_frame("req", "bus.echo", encode_payload({"data": "not bytes"}), seq=rng.randrange(1, 99))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_broker_process_memory_stays_bounded(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir = tmp_path_factory.mktemp("mem")
    notify = NotifySocket(run_dir / "notify.sock")
    notify.sock.setblocking(True)
    notify.sock.settimeout(15)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "bus"], env=daemon_env(run_dir, notify)
    )
    try:
        assert b"READY=1" in notify.sock.recv(4096)
        path = run_dir / "bus.sock"
        good = GoodClient(path)
        rng = random.Random(1)
        for _ in range(500):  # warm-up: allocator pools, decoders, caches reach their size
            throw(path, bad_frame(rng))
        good.echo()
        before = rss_kb(proc.pid)
        for _ in range(3000):
            throw(path, bad_frame(rng))
        good.echo()
        after = rss_kb(proc.pid)
        assert after - before < 8 * 1024, f"RSS grew from {before} kB to {after} kB"
        assert proc.poll() is None
        good.sock.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        notify.close()
