"""Slow consumers: telemetry is latest-wins for them, events cut them off; nobody else waits.

The slow consumer is a raw socket that stops reading, with a small receive buffer, so the
kernel buffer fills, then the broker's transport buffer, then the broker's per-client policy
takes over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from appliance.bus.broker import Broker, Connection
from appliance.bus.client import BusClient
from appliance.bus.framing import encode_frame, encode_payload
from appliance.bus.topics import EchoParams, Scratch

from .helpers import RawClient, wait_until

MakeClient = Callable[..., Awaitable[BusClient]]
N = 1500
BLOB = b"\xaa" * 4096  # N * BLOB is far more than the kernel and transport buffers hold


def connection(broker: Broker, name: str) -> Connection:
    [conn] = [c for c in broker.clients if c.name == name]
    return conn


async def slow_subscriber(broker: Broker, sock_path: Path, pattern: str) -> RawClient:
    slow = await RawClient.connect(sock_path, rcvbuf=4096)
    await slow.send("hello", "", "slow")
    await slow.send("sub", pattern)
    await wait_until(lambda: any(c.name == "slow" and c.patterns for c in broker.clients), "subscription")
    return slow


async def fill_event_queue(broker: Broker, conn: Connection, pub: BusClient) -> int:
    """Publish events on test.event.x until the slow consumer `conn` holds a full event queue
    in the broker (it is not cut off yet); how many were published."""
    n = 0
    while not (conn.paused and conn.pending.events == broker.event_queue):
        await pub.publish("test.event.x", Scratch(n=n, data=BLOB))
        await pub.request("bus.echo", EchoParams())  # the broker has routed it
        n += 1
        assert n < N, "the slow consumer never filled its event queue"
    return n


async def test_slow_telemetry_subscriber_gets_the_latest_and_drops_the_rest(
    broker: Broker, sock_path: Path, make_client: MakeClient
) -> None:
    slow = await slow_subscriber(broker, sock_path, "test.x")
    fast_bus = await make_client("fast")
    fast = fast_bus.subscribe("test.x", maxsize=N)
    await fast_bus.request("bus.echo", EchoParams())
    pub = await make_client("pub")

    for n in range(N):
        await pub.publish("test.x", Scratch(n=n, data=BLOB))
    # The fast subscriber gets every message, in order, while the slow one reads nothing: the
    # publisher was never held up by it.
    assert [(await fast.get(10)).msg.n for _ in range(N)] == list(range(N))
    assert fast.dropped == 0

    conn = connection(broker, "slow")
    assert conn.paused
    assert conn.dropped > 0 and broker.stats.dropped == conn.dropped
    assert broker.stats.cut_off == 0

    # The slow one resumes: what sat in the buffers arrives, then the latest value.
    seen: list[int] = []
    while not seen or seen[-1] != N - 1:
        frame = await slow.recv()
        seen.append(msgspec.msgpack.decode(frame.env.payload, type=Scratch).n)
    assert seen == sorted(set(seen))
    assert len(seen) < N
    assert N - len(seen) >= conn.dropped
    # Still connected, still subscribed.
    await pub.publish("test.x", Scratch(n=N))
    assert msgspec.msgpack.decode((await slow.recv()).env.payload, type=Scratch).n == N
    slow.close()


async def test_slow_event_subscriber_is_cut_off(
    make_broker: Callable[..., Awaitable[Broker]], sock_path: Path, make_client: MakeClient
) -> None:
    broker = await make_broker(event_queue=16)
    # The slow one connects first, so the broker fans out to it first: it is cut off in the
    # middle of a fan-out, and the fast one after it must still get that frame and the rest.
    slow = await slow_subscriber(broker, sock_path, "test.event.x")
    fast_bus = await make_client("fast")
    fast = fast_bus.subscribe("test.event.x", maxsize=N)
    await fast_bus.request("bus.echo", EchoParams())
    pub = await make_client("pub")

    for n in range(N):
        await pub.publish("test.event.x", Scratch(n=n, data=BLOB))
    assert [(await fast.get(10)).msg.n for _ in range(N)] == list(range(N))

    assert broker.stats.cut_off == 1
    assert broker.stats.dropped == 0  # events are never dropped, the consumer is cut off instead
    assert "slow" not in {c.name for c in broker.clients}

    # What it gets when it reads again: events without a gap, then the reason, then the end.
    frames = await slow.read_all()
    *events, last = frames
    got = [msgspec.msgpack.decode(f.env.payload, type=Scratch).n for f in events]
    assert got == list(range(len(got)))
    assert (last.env.kind, last.env.seq) == ("err", 0)
    info = msgspec.msgpack.decode(last.env.payload)
    assert info["code"] == "too-slow"
    assert info["message"] == "more than 16 events pending"
    slow.close()

    # Others unaffected.
    await pub.publish("test.event.x", Scratch(n=N))
    assert (await fast.get(10)).msg.n == N
    assert fast_bus.reconnects == 0 and pub.reconnects == 0


async def test_a_server_leaving_cuts_off_its_slow_requester_cleanly(
    make_broker: Callable[..., Awaitable[Broker]], sock_path: Path, make_client: MakeClient
) -> None:
    """The server of two requests goes away. The broker answers the first with server-gone;
    the requester is paused with a full event queue, so that answer cuts it off, which forgets
    its second request too, before the broker's loop over the server's requests reaches it."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    broker = await make_broker(event_queue=16)
    slow = await slow_subscriber(broker, sock_path, "test.event.x")
    server = await RawClient.connect(sock_path)
    await server.send("hello", "", "server")
    await server.send("serve", "test.echo")
    await wait_until(lambda: "test.echo" in broker.servers, "the server")
    for rid in (1, 2):
        await slow.send("req", "test.echo", Scratch(n=rid), seq=rid)
    await wait_until(lambda: len(broker.inflight) == 2, "both requests in flight")

    pub = await make_client("pub")
    conn = connection(broker, "slow")
    await fill_event_queue(broker, conn, pub)
    assert broker.stats.cut_off == 0

    server.close()
    await wait_until(lambda: not broker.inflight, "the server's requests to be settled")
    await wait_until(lambda: not {"server", "slow"} & {c.name for c in broker.clients}, "both gone")
    assert broker.stats.cut_off == 1
    assert errors == []  # nothing failed inside the broker's connection_lost
    # The broker carries on for everyone else.
    fast_bus = await make_client("fast")
    fast = fast_bus.subscribe("test.event.x")
    await fast_bus.request("bus.echo", EchoParams())
    await pub.publish("test.event.x", Scratch(n=-1))
    assert (await fast.get(10)).msg.n == -1
    slow.close()


async def test_bus_client_subscription_policies(
    make_broker: Callable[..., Awaitable[Broker]], make_client: MakeClient
) -> None:
    broker = await make_broker(event_queue=16)
    bus = await make_client("lagging")
    telemetry = bus.subscribe("test.x", maxsize=4)
    events = bus.subscribe("test.event.x", maxsize=2)
    await bus.request("bus.echo", EchoParams())
    pub = await make_client("pub")

    # Telemetry: the subscription keeps the newest maxsize messages and counts the rest.
    for n in range(20):
        await pub.publish("test.x", Scratch(n=n))
    await wait_until(lambda: telemetry.dropped == 16, "the subscription to drop old telemetry")
    assert [(await telemetry.get(1)).msg.n for _ in range(4)] == [16, 17, 18, 19]

    # Events: a subscription that is not read stops the client reading, so the broker's
    # policy applies: the client is cut off, told why, and reconnects by itself.
    for n in range(N):
        await pub.publish("test.event.x", Scratch(n=n, data=BLOB))
    await wait_until(lambda: broker.stats.cut_off == 1, "the lagging client to be cut off")
    # The client learns it when its consumer catches up and reading resumes.
    got: list[int] = []

    async def consume() -> None:
        async for rx in events:
            got.append(rx.msg.n)

    consumer = asyncio.create_task(consume())
    await wait_until(lambda: bus.reconnects == 1 and bus.connected, "the client to reconnect")
    await wait_until(lambda: not events.queue, "the consumer to catch up")
    consumer.cancel()
    assert bus.last_error is not None and bus.last_error.code == "too-slow"
    assert got == list(range(len(got)))  # no gap before the cut: it resumes by seq from there
    assert len(got) < N


async def test_a_full_subscription_never_drops_an_event_for_telemetry(
    broker: Broker, make_client: MakeClient
) -> None:
    """A pattern can match events and telemetry alike ('thermal.*' is thermal.frame and
    thermal.interrupt). When its queue is full, a telemetry message makes room by dropping the
    oldest telemetry, never an event: events are never dropped, whatever else shares the queue."""
    bus = await make_client("lagging")
    mixed = bus.subscribe("test.*", maxsize=2)
    await bus.request("bus.echo", EchoParams())  # the broker has handled the sub frame
    pub = await make_client("pub")

    async def received(count: int, last: int) -> list[tuple[str, int]]:
        await wait_until(lambda: bool(mixed.queue) and mixed.queue[-1].msg.n == last, f"message {last}")
        return [(rx.topic, rx.msg.n) for rx in [await mixed.get(5) for _ in range(count)]]

    await pub.publish("test.event.a", Scratch(n=1))
    await pub.publish("test.x", Scratch(n=10))
    await pub.publish("test.x", Scratch(n=11))  # full: room is made by dropping telemetry 10
    await pub.publish("test.event.a", Scratch(n=2))
    assert await received(3, last=2) == [("test.event.a", 1), ("test.x", 11), ("test.event.a", 2)]
    assert mixed.dropped == 1

    await pub.publish("test.event.a", Scratch(n=3))
    await pub.publish("test.event.a", Scratch(n=4))
    await pub.publish("test.x", Scratch(n=12))  # full of events: nothing in it may go
    assert await received(3, last=12) == [("test.event.a", 3), ("test.event.a", 4), ("test.x", 12)]
    assert mixed.dropped == 1
    # Reading, held while the queue was over its bound, goes on once the consumer caught up.
    await pub.publish("test.event.a", Scratch(n=5))
    assert (await mixed.get(10)).msg.n == 5


async def test_a_client_cut_off_by_its_own_publish_does_not_strand_the_fan_out(
    make_broker: Callable[..., Awaitable[Broker]], sock_path: Path, make_client: MakeClient
) -> None:
    """A slow consumer publishes to a topic it subscribes to: the fan-out reaches it first and
    cuts it off. The subscribers after it must still get the message now, not whenever some
    other client's traffic next makes the broker write."""
    broker = await make_broker(event_queue=16)
    slow = await slow_subscriber(broker, sock_path, "test.event.x")
    fast_bus = await make_client("fast")
    fast = fast_bus.subscribe("test.event.x", maxsize=N)
    await fast_bus.request("bus.echo", EchoParams())
    pub = await make_client("pub")

    conn = connection(broker, "slow")
    n = await fill_event_queue(broker, conn, pub)
    assert [(await fast.get(10)).msg.n for _ in range(n)] == list(range(n))

    # Two frames in one read: the broker handles the second after the first cut the slow one off.
    await slow.send_bytes(
        encode_frame("pub", "test.event.x", encode_payload(Scratch(n=-1)))
        + encode_frame("pub", "test.event.x", encode_payload(Scratch(n=-2)))
    )
    await wait_until(lambda: broker.stats.cut_off == 1, "the slow one to be cut off")
    # Nobody sends anything now: only the broker's handling of that read can deliver it.
    assert (await fast.get(5)).msg.n == -1
    slow.close()
