"""The frame limit on the sending side, and messages the client drops while the bus is down.

A frame over the limit is refused by whoever reads it by closing the connection it came on, so
the sender must never send one: a handler's oversized reply becomes an error reply (the server
keeps its connection, the requester gets a RemoteError at once), an oversized publish raises in
the publisher, and the broker never builds an oversized frame of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.bus.framing import (
    PREFIX_SIZE,
    ErrorInfo,
    FrameDecoder,
    Kind,
    encode_error,
    encode_frame,
    encode_payload,
)
from appliance.bus.topics import EchoParams, Scratch
from appliance.errors import FrameError, RemoteError

from .helpers import RawClient, wait_until

MakeClient = Callable[..., Awaitable[BusClient]]
MakeBroker = Callable[..., Awaitable[Broker]]

LIMIT = 64 * 1024


def _scratch_filling(limit: int, kind: Kind, topic: str, seq: int, ts: float = 0.0) -> Scratch:
    """A Scratch whose frame (kind, topic, seq, ts) is exactly `limit` bytes past the prefix."""
    n = limit
    while True:
        msg = Scratch(data=b"x" * n)
        size = len(encode_frame(kind, topic, encode_payload(msg), seq=seq, ts=ts)) - PREFIX_SIZE
        if size == limit:
            return msg
        n -= size - limit


async def _limited(make_broker: MakeBroker, make_client: MakeClient) -> tuple[Broker, BusClient, BusClient]:
    broker = await make_broker(max_frame=LIMIT)
    server = await make_client("server", max_frame=LIMIT)
    caller = await make_client("caller", max_frame=LIMIT)
    return broker, server, caller


@pytest.mark.parametrize("size", [LIMIT - 20, 4 * LIMIT], ids=["just-over", "huge"])
async def test_an_oversized_reply_becomes_an_error_reply(
    make_broker: MakeBroker, make_client: MakeClient, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    """The payload alone may be under the limit: the envelope pushes the frame over. The server
    sends a reply-too-large error instead and keeps its connection; the caller gets it at once."""
    broker, server, caller = await _limited(make_broker, make_client)

    async def big(p: Scratch) -> Scratch:
        return Scratch(data=b"x" * size)

    async def small(p: Scratch) -> Scratch:
        return Scratch(n=p.n)

    if size < LIMIT:
        assert len(encode_payload(Scratch(data=b"x" * size))) < LIMIT  # the envelope pushes it over
    server.serve("test.big", big)
    server.serve("test.small", small)
    await server.request("bus.echo", EchoParams())  # the registrations are in place
    with (
        caplog.at_level(logging.ERROR, logger="appliance.bus.client"),
        pytest.raises(RemoteError, match=r"reply-too-large: reply of \d+ bytes exceeds the frame limit"),
    ):
        await caller.request("test.big", Scratch(n=1), timeout=30)
    assert any("reply-too-large" in r.getMessage() for r in caplog.records)
    # The server kept its connection and serves on.
    assert await caller.request("test.small", Scratch(n=7)) == Scratch(n=7)
    assert server.reconnects == 0 and server.last_error is None
    assert caller.reconnects == 0
    assert broker.stats.bad_frames == 0


async def test_a_reply_of_exactly_the_limit_is_delivered(
    make_broker: MakeBroker, make_client: MakeClient
) -> None:
    broker, server, caller = await _limited(make_broker, make_client)

    async def exact(p: Scratch) -> Scratch:
        # Its reply frame carries the broker's request id, 1, as the caller's own id is 1:
        # the frame the caller gets is exactly the limit too.
        return _scratch_filling(LIMIT, "rep", "test.exact", seq=1)

    server.serve("test.exact", exact)
    await server.request("bus.echo", EchoParams())
    reply = await caller.request("test.exact", Scratch(), timeout=30)
    assert len(reply.data) > LIMIT - 64
    assert server.reconnects == 0 and caller.reconnects == 0 and broker.stats.bad_frames == 0


async def test_an_oversized_publish_raises_and_sends_nothing(
    make_broker: MakeBroker, make_client: MakeClient
) -> None:
    broker, pub, listener = await _limited(make_broker, make_client)
    sub = listener.subscribe("test.*")
    await listener.request("bus.echo", EchoParams())
    with pytest.raises(FrameError, match=r"test.x: frame of \d+ bytes exceeds the frame limit of 65536"):
        pub.publish_nowait("test.x", Scratch(n=1), attachment=b"a" * LIMIT)
    with pytest.raises(FrameError, match=r"exceeds the frame limit"):
        await pub.publish("test.state.s", Scratch(data=b"d" * LIMIT))
    # Refused before anything was kept: no state to re-publish on reconnect, no seq used up.
    assert "test.state.s" not in pub._states and "test.x" not in pub._seqs
    exact = _scratch_filling(LIMIT, "pub", "test.x", seq=1, ts=1.0)
    assert pub.publish_nowait("test.x", exact, ts=1.0)
    got = await sub.get(10)
    assert (got.topic, got.seq, got.msg) == ("test.x", 1, exact)
    assert pub.connected and pub.reconnects == 0 and broker.stats.bad_frames == 0


async def test_an_oversized_request_raises_before_it_is_sent(
    make_broker: MakeBroker, make_client: MakeClient
) -> None:
    broker, _, caller = await _limited(make_broker, make_client)
    with pytest.raises(FrameError, match=r"exceeds the frame limit"):
        await caller.request("bus.echo", EchoParams(data=b"e" * LIMIT))
    assert caller.reconnects == 0 and broker.stats.bad_frames == 0


async def test_the_broker_never_forwards_a_reply_grown_past_the_limit(
    make_broker: MakeBroker, sock_path: Path
) -> None:
    """The broker re-encodes a reply with the requester's id: a large id makes it a few bytes
    longer than the server's reply, which was within the limit. The requester gets an error
    frame, not a frame its decoder refuses (which would cost it its connection)."""
    broker = await make_broker(max_frame=LIMIT)
    server = await RawClient.connect(sock_path)
    await server.send("serve", "test.m")
    caller = await RawClient.connect(sock_path)
    await wait_until(lambda: "test.m" in broker.servers, "registration")
    await caller.send("req", "test.m", {}, seq=2**40)
    req = await server.recv()
    payload = encode_payload(_scratch_filling(LIMIT, "rep", "test.m", seq=req.env.seq))
    await server.send("rep", "test.m", raw_payload=payload, seq=req.env.seq)
    frame = await caller.recv()
    assert frame.raw is not None and len(frame.raw) - PREFIX_SIZE <= LIMIT
    assert (frame.env.kind, frame.env.seq) == ("err", 2**40)
    info = msgspec.msgpack.decode(frame.env.payload, type=ErrorInfo)
    assert info.code == "reply-too-large" and str(LIMIT) in info.message
    assert broker.stats.bad_frames == 0 and not broker.inflight
    # Both keep their connections.
    await caller.send("req", "bus.echo", {}, seq=5)
    assert (await caller.recv()).env.kind == "rep"
    await server.send("req", "bus.echo", {}, seq=6)
    assert (await server.recv()).env.kind == "rep"


async def test_the_broker_never_forwards_a_request_grown_past_the_limit(
    make_broker: MakeBroker, sock_path: Path
) -> None:
    """The same for a request: the forwarded frame carries the broker's id, after 2**32
    requests longer than the caller's. The caller gets request-too-large; the server nothing."""
    broker = await make_broker(max_frame=LIMIT)
    server = await RawClient.connect(sock_path)
    await server.send("serve", "test.m")
    caller = await RawClient.connect(sock_path)
    await wait_until(lambda: "test.m" in broker.servers, "registration")
    broker._next_id = 2**40
    params = _scratch_filling(LIMIT, "req", "test.m", seq=1)
    await caller.send("req", "test.m", raw_payload=encode_payload(params), seq=1)
    frame = await caller.recv()
    assert (frame.env.kind, frame.env.seq) == ("err", 1)
    info = msgspec.msgpack.decode(frame.env.payload, type=ErrorInfo)
    assert info.code == "request-too-large" and str(LIMIT) in info.message
    assert broker.stats.bad_frames == 0 and not broker.inflight
    await server.send("req", "bus.echo", {}, seq=6)
    got = await server.recv()
    assert (got.env.kind, got.env.topic) == ("rep", "bus.echo")  # no forwarded request before it


async def test_events_corked_when_the_connection_dies_into_a_full_outbox_are_counted(
    broker: Broker, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames corked for a connection that died move to the outbox at the flush; past its
    bound the oldest event goes, and that is a drop like any other while the bus is down, as is
    corked telemetry, which is not kept at all. Counted, and logged at the reconnect."""
    pub = await make_client("pub", outbox=2, backoff_max=0.05)
    listener = await make_client("listener")
    sub = listener.subscribe("test.event.*")
    await listener.request("bus.echo", EchoParams())
    proto = pub._proto
    assert proto is not None and proto.transport is not None

    with caplog.at_level(logging.WARNING, logger="appliance.bus.client"):
        proto.transport.abort()  # queues connection_lost, before the flush of the cork
        for n in range(1, 4):
            assert pub.publish_nowait("test.event.x", Scratch(n=n))
        pub.publish_nowait("test.tele", Scratch(n=9))
        await wait_until(lambda: pub.reconnects == 1 and pub.connected, "the publisher to reconnect")
        got = [(await sub.get(10)).msg.n for _ in range(2)]

    assert got == [2, 3]  # the outbox keeps the newest
    assert pub.dropped_while_down == 2  # event 1 and the telemetry
    assert any("2 messages dropped" in r.getMessage() for r in caplog.records)


async def test_a_topic_name_the_broker_refuses_is_refused_by_the_client(
    broker: Broker, make_client: MakeClient
) -> None:
    """A scratch topic or pattern past the broker's limit on names: sent, it would cost the
    client its connection, and a subscription is sent again on every reconnect, so forever."""
    bus = await make_client()
    long = "test." + "x" * 300
    with pytest.raises(FrameError, match=r"topic name of \d+ characters"):
        bus.subscribe(long)
    with pytest.raises(FrameError, match=r"topic name of \d+ characters"):
        bus.publish_nowait(long, Scratch())
    await bus.request("bus.echo", EchoParams())  # nothing went out that cost the connection
    assert bus.reconnects == 0 and broker.stats.bad_frames == 0 and not bus._subs


def test_an_error_frame_always_fits_the_limit() -> None:
    """Error messages may quote what the peer sent; cut to fit, never a frame the reader refuses."""
    frame = encode_error("test.m", "bad-frame", "é" * 5000, seq=2**40, max_frame=1024)
    assert len(frame) - PREFIX_SIZE <= 1024
    [decoded] = FrameDecoder(1024).feed(frame)
    info = msgspec.msgpack.decode(decoded.env.payload, type=ErrorInfo)
    assert info.code == "bad-frame" and info.message.startswith("é" * 100)
