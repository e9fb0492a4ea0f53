"""`appliance bench bus`: bus throughput and request latency against a raw baseline.

Everything runs as separate processes, as on the device: the real broker (`appliance run bus`),
one publisher, three subscribers, and for latency a requester and a server. The baseline, run
in the same invocation, is the least a Unix-socket relay in asyncio can do with the same
framing: it splits frames on the length prefix and forwards the bytes, with no decoding,
validation, routing or queue policy; its RTT is a direct echo (one hop, where the bus has two).

Throughput is measured on a telemetry topic (latest-wins): a subscriber that cannot keep up
loses messages instead of slowing the publisher; `dropped` reports how many, and the figure is
what each subscriber actually received per second, the slowest of the three.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from appliance.bench.measure import quantile
from appliance.bus.client import BusClient
from appliance.bus.framing import PREFIX, encode_frame
from appliance.bus.topics import Scratch

PAYLOAD = b"x" * 185  # with the counter, the msgpack payload is 200 bytes
TOPIC = "test.bench"
END_TOPIC = "test.state.bench_end"
SUBSCRIBERS = 3


# --- the bus ---------------------------------------------------------------------------------


def _bus_subscriber(path: str, ready: Event, out: Any) -> None:
    async def run() -> None:
        async with BusClient(path, "bench-sub") as bus:
            # One pattern covers the data topic and the end marker, which is a state topic so
            # latest-wins on the data topic can never swallow it.
            sub = bus.subscribe("test.*", maxsize=10_000)
            await asyncio.sleep(0.2)
            ready.set()
            count = 0
            first = last = 0.0
            async for rx in sub:
                if rx.topic == END_TOPIC:
                    break
                assert isinstance(rx.msg, Scratch)
                last = time.perf_counter()
                if count == 0:
                    first = last
                count += 1
            out.put({"count": count, "elapsed": last - first, "client_dropped": sub.dropped})

    asyncio.run(run())


def _bus_publisher(path: str, n: int, out: Any) -> None:
    async def run() -> None:
        async with BusClient(path, "bench-pub") as bus:
            t0 = time.perf_counter()
            for i in range(n):
                await bus.publish(TOPIC, Scratch(data=PAYLOAD, n=i))
            elapsed = time.perf_counter() - t0
            await asyncio.sleep(0.3)
            await bus.publish(END_TOPIC, Scratch(n=n))
            await asyncio.sleep(0.2)
            out.put({"publish_elapsed": elapsed})

    asyncio.run(run())


def _bus_echo_server(path: str, ready: Event, stop: Event) -> None:
    async def run() -> None:
        async with BusClient(path, "bench-echo") as bus:

            async def echo(params: Any) -> Scratch:
                assert isinstance(params, Scratch)
                return params

            bus.serve("test.echo", echo)
            await asyncio.sleep(0.2)
            ready.set()
            while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing Event, polled
                await asyncio.sleep(0.1)

    asyncio.run(run())


def _bus_requester(path: str, n: int, out: Any) -> None:
    async def run() -> None:
        async with BusClient(path, "bench-req") as bus:
            rtts = []
            msg = Scratch(data=PAYLOAD)
            for _ in range(n):
                t0 = time.perf_counter()
                await bus.request("test.echo", msg)
                rtts.append((time.perf_counter() - t0) * 1000)
            out.put(rtts[n // 10 :])  # the first tenth warms up

    asyncio.run(run())


# --- the baseline ----------------------------------------------------------------------------


class _Relay(asyncio.Protocol):
    """Forward every frame to every other connection; no decoding at all."""

    peers: set[_Relay]

    def __init__(self, peers: set[_Relay]) -> None:
        self.peers = peers
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.peers.discard(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        frames = []
        while len(buf) - pos >= 8:
            h, a = PREFIX.unpack_from(buf, pos)
            total = 8 + h + a
            if len(buf) - pos < total:
                break
            frames.append(bytes(buf[pos : pos + total]))
            pos += total
        del buf[:pos]
        if frames:
            for peer in self.peers:
                if peer is not self and peer.transport is not None:
                    peer.transport.writelines(frames)


def _baseline_relay(path: str, ready: Event, stop: Event, echo: bool) -> None:
    async def run() -> None:
        peers: set[_Relay] = set()
        loop = asyncio.get_running_loop()
        if echo:

            class Echo(_Relay):
                def data_received(self, data: bytes) -> None:
                    assert self.transport is not None
                    self.transport.write(data)

            server = await loop.create_unix_server(lambda: Echo(peers), path)
        else:
            server = await loop.create_unix_server(lambda: _Relay(peers), path)
        ready.set()
        while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing Event, polled
            await asyncio.sleep(0.1)
        server.close()

    asyncio.run(run())


class _Counter(asyncio.Protocol):
    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.n = n
        self.count = 0
        self.buf = bytearray()
        self.first = self.last = 0.0
        self.done = done

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 8:
            h, a = PREFIX.unpack_from(buf, pos)
            total = 8 + h + a
            if len(buf) - pos < total:
                break
            pos += total
            self.count += 1
        del buf[:pos]
        self.last = time.perf_counter()
        if not self.first:
            self.first = self.last
        if self.count >= self.n and not self.done.done():
            self.done.set_result(None)


def _baseline_subscriber(path: str, n: int, ready: Event, out: Any) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        transport, proto = await loop.create_unix_connection(lambda: _Counter(n, done), path)
        ready.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(120):
                await done
        out.put({"count": proto.count, "elapsed": proto.last - proto.first})
        transport.close()

    asyncio.run(run())


class _Writer(asyncio.Protocol):
    def __init__(self) -> None:
        self.paused = False
        self.resumed: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)


def _baseline_publisher(path: str, n: int) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_unix_connection(_Writer, path)
        import msgspec

        enc = msgspec.msgpack.Encoder()
        for i in range(n):
            transport.write(encode_frame("pub", TOPIC, enc.encode(Scratch(data=PAYLOAD, n=i)), seq=i))
            if proto.paused:
                proto.resumed = loop.create_future()
                await proto.resumed
        await asyncio.sleep(0.5)
        transport.close()

    asyncio.run(run())


def _baseline_rtt(path: str, n: int, out: Any) -> None:
    async def run() -> None:
        reader, writer = await asyncio.open_unix_connection(path)
        import msgspec

        frame = encode_frame("req", "test.echo", msgspec.msgpack.encode(Scratch(data=PAYLOAD)), seq=1)
        rtts = []
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(frame)
            head = await reader.readexactly(8)
            h, a = PREFIX.unpack(head)
            await reader.readexactly(h + a)
            rtts.append((time.perf_counter() - t0) * 1000)
        writer.close()
        out.put(rtts[n // 10 :])

    asyncio.run(run())


# --- orchestration ---------------------------------------------------------------------------


def _start_broker(run_dir: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        APPLIANCE_RUN_DIR=str(run_dir),
        APPLIANCE_CONFIG="/dev/null",
        APPLIANCE_LOG_LEVEL="WARNING",
    )
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "bus"], env=env)
    sock_path = run_dir / "bus.sock"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sock_path.exists():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock_path))
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the broker did not come up")


def _throughput(ctx: Any, path: str, n: int, baseline: bool) -> dict[str, Any]:
    out = ctx.Queue()
    readies = [ctx.Event() for _ in range(SUBSCRIBERS)]
    if baseline:
        subs = [ctx.Process(target=_baseline_subscriber, args=(path, n, r, out)) for r in readies]
    else:
        subs = [ctx.Process(target=_bus_subscriber, args=(path, r, out)) for r in readies]
    for p in subs:
        p.start()
    for r in readies:
        r.wait(30)
    pub_out = ctx.Queue()
    if baseline:
        pub = ctx.Process(target=_baseline_publisher, args=(path, n))
    else:
        pub = ctx.Process(target=_bus_publisher, args=(path, n, pub_out))
    pub.start()
    results = [out.get(timeout=300) for _ in subs]
    pub.join(60)
    for p in subs:
        p.join(10)
    rates = [r["count"] / r["elapsed"] for r in results if r["elapsed"] > 0]
    received = [r["count"] for r in results]
    return {"rate": min(rates) if rates else 0.0, "received": received, "dropped": [n - c for c in received]}


def _rtt(ctx: Any, path: str, n: int, baseline: bool, stop: Event) -> list[float]:
    out = ctx.Queue()
    server = None
    if not baseline:
        ready = ctx.Event()
        server = ctx.Process(target=_bus_echo_server, args=(path, ready, stop))
        server.start()
        ready.wait(30)
    req = ctx.Process(target=_baseline_rtt if baseline else _bus_requester, args=(path, n, out))
    req.start()
    rtts: list[float] = out.get(timeout=120)
    req.join(10)
    if server is not None:
        stop.set()
        server.join(10)
    return rtts


def bench_bus(*, quick: bool = False) -> dict[str, Any]:
    n = 20_000 if quick else 200_000
    n_rtt = 500 if quick else 5_000
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        run_dir = Path(tmp)
        broker = _start_broker(run_dir)
        try:
            path = str(run_dir / "bus.sock")
            bus_tp = _throughput(ctx, path, n, baseline=False)
            bus_rtt = _rtt(ctx, path, n_rtt, baseline=False, stop=ctx.Event())
        finally:
            broker.terminate()
            broker.wait(10)

        base_path = str(run_dir / "baseline.sock")
        stop = ctx.Event()
        ready = ctx.Event()
        relay = ctx.Process(target=_baseline_relay, args=(base_path, ready, stop, False))
        relay.start()
        ready.wait(30)
        base_tp = _throughput(ctx, base_path, n, baseline=True)
        stop.set()
        relay.join(10)
        os.unlink(base_path)

        stop = ctx.Event()
        ready = ctx.Event()
        echo = ctx.Process(target=_baseline_relay, args=(base_path, ready, stop, True))
        echo.start()
        ready.wait(30)
        base_rtt = _rtt(ctx, base_path, n_rtt, baseline=True, stop=stop)
        stop.set()
        echo.join(10)

    return {
        "throughput_msgs_per_s": round(bus_tp["rate"]),
        "rtt_p50_ms": round(statistics.median(bus_rtt), 4),
        "rtt_p99_ms": round(quantile(bus_rtt, 0.99), 4),
        "baseline_throughput_msgs_per_s": round(base_tp["rate"]),
        "baseline_rtt_p50_ms": round(statistics.median(base_rtt), 4),
        "baseline_rtt_p99_ms": round(quantile(base_rtt, 0.99), 4),
        "throughput_vs_baseline": round(bus_tp["rate"] / base_tp["rate"], 3) if base_tp["rate"] else None,
        "messages": n,
        "message_bytes": 200,
        "subscribers": SUBSCRIBERS,
        "received_per_subscriber": bus_tp["received"],
        "dropped_per_subscriber": bus_tp["dropped"],
        "baseline_received_per_subscriber": base_tp["received"],
        "targets": {
            "throughput_msgs_per_s": ">= 50000",
            "rtt_p99_ms": "<= 1.0",
            "throughput_vs_baseline": ">= 0.5",
        },
    }
