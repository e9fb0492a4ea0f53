"""Request/reply through the broker: routing, errors, a server that goes away, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from appliance.bus import broker as broker_module
from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.bus.framing import ErrorInfo
from appliance.bus.topics import EchoParams, Empty, EventsPage, EventsSince, Ok, Scratch
from appliance.errors import NoSuchMethod, RemoteError, RequestTimeout

from .helpers import RawClient, wait_until

MakeClient = Callable[..., Awaitable[BusClient]]


async def test_echo_served_by_the_broker(broker: Broker, make_client: MakeClient) -> None:
    bus = await make_client()
    assert await bus.request("bus.echo", EchoParams(data=b"\x00\xff" * 100)) == EchoParams(
        data=b"\x00\xff" * 100
    )


async def test_replies_go_back_to_their_requester(broker: Broker, make_client: MakeClient) -> None:
    async def double(p: Scratch) -> Scratch:
        await asyncio.sleep(0.001 * (p.n % 5))  # replies come back out of order
        return Scratch(n=p.n * 2, data=p.data)

    async def page(p: EventsSince) -> EventsPage:
        return EventsPage(events=[], last_seq=p.seq)

    server = await make_client("server")
    server.serve("test.double", double)
    server.serve("screening.events_since", page)
    await server.request("bus.echo", EchoParams())  # the registrations are in place
    a, b = await make_client("a"), await make_client("b")

    async def ask(bus: BusClient, n: int) -> tuple[int, int]:
        reply = await bus.request("test.double", Scratch(n=n, data=bus.name.encode()))
        assert reply.data == bus.name.encode()
        return n, reply.n

    results = await asyncio.gather(*(ask(a if n % 2 else b, n) for n in range(50)))
    assert all(got == 2 * n for n, got in results)
    assert await a.request("screening.events_since", EventsSince(seq=41)) == EventsPage(
        events=[], last_seq=41
    )
    assert not broker.inflight


async def test_unknown_method(broker: Broker, sock_path: Path, make_client: MakeClient) -> None:
    bus = await make_client()
    with pytest.raises(NoSuchMethod, match=r"unknown method 'thermal.nope'"):
        await bus.request("thermal.nope", Empty())
    # Known to topics.py but served by nobody: the broker answers at once.
    with pytest.raises(NoSuchMethod, match=r"nobody serves camera.keyframe"):
        await bus.request("camera.keyframe", Empty())
    # Unknown to the broker: an error reply for that request, the connection stays up.
    raw = await RawClient.connect(sock_path)
    await raw.send("req", "thermal.nope", {}, seq=9)
    reply = await raw.recv()
    assert (reply.env.kind, reply.env.seq) == ("err", 9)
    info = msgspec.msgpack.decode(reply.env.payload, type=ErrorInfo)
    assert (info.code, info.message) == ("no-such-method", "unknown method 'thermal.nope'")
    await raw.send("req", "bus.echo", {"data": b"still here"}, seq=10)
    assert (await raw.recv()).env.kind == "rep"
    raw.close()


async def test_handler_exception_becomes_remote_error(broker: Broker, make_client: MakeClient) -> None:
    async def fail(_: Empty) -> Ok:
        raise ValueError("no camera attached")

    async def wrong_type(_: Empty) -> Ok:
        return Empty()  # type: ignore[return-value]

    server = await make_client("server")
    server.serve("camera.keyframe", fail)
    server.serve("pairing.unpair", wrong_type)
    await server.request("bus.echo", EchoParams())
    bus = await make_client("caller")
    with pytest.raises(RemoteError, match=r"camera.keyframe: no camera attached"):
        await bus.request("camera.keyframe", Empty())
    with pytest.raises(RemoteError, match=r"handler returned Empty, not Ok"):
        await bus.request("pairing.unpair", Empty())
    # The server is still serving.
    server.serve("camera.keyframe", lambda _: _ok())
    assert await bus.request("camera.keyframe", Empty()) == Ok(detail="done")


async def _ok() -> Ok:
    return Ok(detail="done")


async def test_server_disconnect_mid_request_is_an_error_not_a_timeout(
    broker: Broker, make_client: MakeClient
) -> None:
    started = asyncio.Event()

    async def hang(_: Empty) -> Ok:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    server = await make_client("server")
    server.serve("camera.keyframe", hang)
    await server.request("bus.echo", EchoParams())
    bus = await make_client("caller")
    call = asyncio.create_task(bus.request("camera.keyframe", Empty(), timeout=30))
    await started.wait()
    await server.close()
    with pytest.raises(RemoteError, match=r"camera.keyframe: camera.keyframe: server disconnected"):
        await call
    assert not broker.inflight and "camera.keyframe" not in broker.servers


async def test_timeout(broker: Broker, make_client: MakeClient) -> None:
    async def slow(_: Empty) -> Ok:
        await asyncio.sleep(30)
        return Ok()

    server = await make_client("server")
    server.serve("camera.keyframe", slow)
    await server.request("bus.echo", EchoParams())
    bus = await make_client("caller")
    with pytest.raises(RequestTimeout, match=r"camera.keyframe: no reply within 0.2 s"):
        await bus.request("camera.keyframe", Empty(), timeout=0.2)
    assert not bus._pending


async def test_timeout_while_there_is_no_bus(sock_path: Path) -> None:
    bus = BusClient(sock_path, "alone")
    with pytest.raises(RequestTimeout):
        await bus.request("bus.echo", EchoParams(), timeout=0.2)
    await bus.close()


async def test_request_made_before_the_bus_is_up_runs_once(broker: Broker, sock_path: Path) -> None:
    calls = 0

    async def count(p: Scratch) -> Scratch:
        nonlocal calls
        calls += 1
        return Scratch(n=calls)

    server = BusClient(sock_path, "server")
    await server.connect()
    server.serve("test.count", count)
    await server.request("bus.echo", EchoParams())
    # The caller's path appears only now that the server is registered, so the request waits
    # for the first connection; it must then be sent once, not once more as a "resend".
    link = sock_path.with_name("late.sock")
    caller = BusClient(link, "caller")
    call = asyncio.create_task(caller.request("test.count", Scratch(), timeout=10))
    caller_connects = asyncio.create_task(caller.connect(10))
    await asyncio.sleep(0.05)
    link.symlink_to(sock_path)
    await caller_connects
    assert await call == Scratch(n=1)
    await caller.request("bus.echo", EchoParams())
    await server.request("bus.echo", EchoParams())
    assert calls == 1
    await server.close()
    await caller.close()


async def test_bad_replies_are_refused(broker: Broker, sock_path: Path, make_client: MakeClient) -> None:
    raw_server = await RawClient.connect(sock_path)
    await raw_server.send("serve", "camera.keyframe")
    await raw_server.send("serve", "pairing.unpair")
    bus = await make_client("caller")
    await wait_until(lambda: {"camera.keyframe", "pairing.unpair"} <= broker.servers.keys(), "registration")

    # A reply of the wrong type: the caller gets an error, the bad server is cut off.
    call = asyncio.create_task(bus.request("camera.keyframe", Empty()))
    req = await raw_server.recv()
    assert (req.env.kind, req.env.topic) == ("req", "camera.keyframe")
    await raw_server.send("rep", "camera.keyframe", {"ok": "yes"}, seq=req.env.seq)
    with pytest.raises(RemoteError, match=r"payload is not a valid Ok"):
        await call
    info = await raw_server.closed_with()
    assert info.code == "bad-frame" and "not a valid Ok" in info.message

    # A malformed error reply is refused the same way, not relayed to break the caller.
    raw_server = await RawClient.connect(sock_path)
    await raw_server.send("serve", "pairing.unpair")
    await wait_until(lambda: "pairing.unpair" in broker.servers, "registration")
    call = asyncio.create_task(bus.request("pairing.unpair", Empty()))
    req = await raw_server.recv()
    await raw_server.send("err", "pairing.unpair", {"what": 1}, seq=req.env.seq)
    with pytest.raises(RemoteError, match=r"bad-reply|not a valid ErrorInfo"):
        await call
    assert "not a valid ErrorInfo" in (await raw_server.closed_with()).message
    assert bus.reconnects == 0 and bus.connected


async def test_reply_from_a_client_that_was_not_asked(
    broker: Broker, sock_path: Path, make_client: MakeClient
) -> None:
    started = asyncio.Event()

    async def hang(_: Empty) -> Ok:
        started.set()
        await asyncio.sleep(30)
        return Ok()

    server = await make_client("server")
    server.serve("camera.keyframe", hang)
    await server.request("bus.echo", EchoParams())
    bus = await make_client("caller")
    call = asyncio.create_task(bus.request("camera.keyframe", Empty(), timeout=30))
    await started.wait()
    [rid] = broker.inflight
    intruder = await RawClient.connect(sock_path)
    await intruder.send("rep", "camera.keyframe", {"ok": True, "detail": "forged"}, seq=rid)
    info = await intruder.closed_with()
    assert "from a client that was not asked" in info.message
    assert rid in broker.inflight  # the real server can still answer
    call.cancel()


async def test_requests_a_server_never_answers_are_forgotten(
    broker: Broker, sock_path: Path, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_module, "REQUEST_TTL_S", 0.2)
    server = await make_client("server")
    raw = await RawClient.connect(sock_path)  # a server that takes requests and never replies
    await raw.send("hello", "", "mute")
    await raw.send("serve", "camera.keyframe")
    await server.request("bus.echo", EchoParams())
    bus = await make_client("caller")
    with pytest.raises(RequestTimeout):
        await bus.request("camera.keyframe", Empty(), timeout=0.3)
    assert len(broker.inflight) == 1
    await asyncio.sleep(0.3)
    # The next request sweeps the expired one; only the new one is in flight.
    with pytest.raises(RequestTimeout):
        await bus.request("camera.keyframe", Empty(), timeout=0.1)
    assert len(broker.inflight) == 1 and broker.stats.expired_requests == 1
    raw.close()
