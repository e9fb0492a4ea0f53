"""BusClient state across interleavings: backpressure waiters, the outbox, refused subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.bus.topics import EchoParams, Scratch
from appliance.errors import FrameError, NotConnected

from .helpers import wait_until

MakeClient = Callable[..., Awaitable[BusClient]]


class StalledBroker:
    """A bare listening socket that reads nothing until told to: the client's writes back up.

    A bare socket, not an asyncio server, whose transport would read ahead into its buffer.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.read_now = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.sock)
        with conn:
            await self.read_now.wait()
            while await loop.sock_recv(conn, 1 << 20):
                pass

    def start(self, path: Path) -> None:
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.task = asyncio.create_task(self._serve())

    async def close(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.sock.close()


@pytest.fixture
async def stalled(sock_path: Path) -> AsyncIterator[StalledBroker]:
    server = StalledBroker()
    server.start(sock_path)
    yield server
    await server.close()


async def test_a_cancelled_publish_does_not_cancel_other_publishers(
    stalled: StalledBroker, make_client: MakeClient
) -> None:
    """Publishers waiting for the broker to drain share nothing a cancellation can break.

    One task cancelled while blocked in publish() (a shutdown, an asyncio.timeout) must not
    cancel the other publishers waiting with it, nor make later publish() calls raise.
    """
    bus = await make_client("pub")
    proto = bus._proto
    assert proto is not None
    big = Scratch(data=b"x" * 65536)
    for _ in range(10_000):
        if proto.paused:
            break
        bus.publish_nowait("test.x", big)
    assert proto.paused, "the transport never paused writing"

    a = asyncio.create_task(bus.publish("test.x", Scratch(n=1)))
    b = asyncio.create_task(bus.publish("test.x", Scratch(n=2)))
    # Both tasks run up to their wait for the drain before this task goes on.
    await asyncio.sleep(0)
    assert not a.done() and not b.done()

    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    assert not b.done(), "cancelling one publisher cancelled another"
    # A publish() started after the cancellation waits for the drain like any other.
    c = asyncio.create_task(bus.publish("test.x", Scratch(n=3)))
    await asyncio.sleep(0)
    assert not c.done(), "a later publish() raised CancelledError"

    stalled.read_now.set()
    async with asyncio.timeout(10):
        assert await b is True
        assert await c is True


async def test_events_corked_when_the_connection_dies_keep_their_order(
    broker: Broker, make_client: MakeClient
) -> None:
    """An event corked for a connection that died goes out before one published after it.

    The connection dies (connection_lost runs) while an event is still corked; another task
    publishes before the scheduled flush runs. After the reconnect both reach the subscriber
    in the order they were published.
    """
    pub = await make_client("pub")
    listener = await make_client("listener")
    sub = listener.subscribe("test.event.*")
    await listener.request("bus.echo", EchoParams())  # the broker has handled the sub frame

    proto = pub._proto
    assert proto is not None and proto.transport is not None
    loop = asyncio.get_running_loop()
    other_woken: asyncio.Future[None] = loop.create_future()
    # Another task's turn, queued after connection_lost and before the flush of the cork.
    other_woken.add_done_callback(lambda _: pub.publish_nowait("test.event.x", Scratch(n=2)))

    proto.transport.abort()  # queues connection_lost
    other_woken.set_result(None)  # queues the other publisher
    pub.publish_nowait("test.event.x", Scratch(n=1))  # corked; queues the flush
    await wait_until(lambda: pub.reconnects == 1 and pub.connected, "the publisher to reconnect")

    got = [(await sub.get(10)).msg.n for _ in range(2)]
    assert got == [1, 2]


async def test_a_pattern_the_broker_refuses_is_refused_at_subscribe(
    broker: Broker, make_client: MakeClient
) -> None:
    """subscribe() with a pattern the broker cuts clients off for fails there and then.

    Sent, the broker closes the connection; the client subscribes again on every reconnect and
    so never stays connected: its other subscriptions and its requests stop working for good.
    """
    bus = await make_client("sub")
    with contextlib.suppress(FrameError):
        bus.subscribe("test.*.x")
    good = bus.subscribe("test.event.y")
    await bus.request("bus.echo", EchoParams(), timeout=3)
    await bus.publish("test.event.y", Scratch(n=5))
    assert (await good.get(10)).msg.n == 5
    assert bus.reconnects == 0 and bus.last_error is None
    with pytest.raises(FrameError):
        bus.subscribe("a*b")
    with pytest.raises(FrameError):
        bus.subscribe("")


async def test_a_reply_to_a_request_from_a_lost_connection_is_not_sent_on_the_next(
    make_broker: Callable[..., Awaitable[Broker]], make_client: MakeClient
) -> None:
    """A request id belongs to the broker connection it came in on.

    A handler still running when the connection is lost must not send its reply on the next
    connection: a restarted broker numbers its requests afresh, so the stale reply would answer
    whichever other request got the same id there.
    """
    broker = await make_broker()
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    started: list[int] = []

    async def handler(p: Scratch) -> Scratch:
        started.append(p.n)
        await gates[p.n].wait()
        return Scratch(n=p.n)

    server = await make_client("server", backoff_max=0.05)
    server.serve("test.m", handler)
    first = await make_client("first")
    await server.request("bus.echo", EchoParams())  # the broker has handled the serve frame
    asking = asyncio.create_task(first.request("test.m", Scratch(n=1), timeout=30))
    await wait_until(lambda: started == [1], "the first request to reach its handler")
    await first.close()  # its requester is gone; the handler is still running
    with contextlib.suppress(Exception):
        await asking

    await broker.close()
    await wait_until(lambda: not server.connected, "the server to notice the broker is gone")
    await make_broker()
    await server.wait_connected(10)
    await server.request("bus.echo", EchoParams(), timeout=10)  # serve frame handled again
    second = await make_client("second")
    answer = asyncio.create_task(second.request("test.m", Scratch(n=2), timeout=30))
    await wait_until(lambda: started == [1, 2], "the second request to reach its handler")

    gates[1].set()  # the stale handler finishes first
    await wait_until(lambda: len(server._handler_tasks) == 1, "the stale handler to finish")
    gates[2].set()
    async with asyncio.timeout(10):
        assert await answer == Scratch(n=2)
    assert server.reconnects == 1 and server.last_error is None


async def test_a_subscription_has_one_reader_at_a_time(broker: Broker, make_client: MakeClient) -> None:
    """A second task waiting on the same Subscription would take the first one's wake-up slot
    and leave it waiting for ever (or until a later message): it is refused at once instead.
    Readers one after the other, and a reader that timed out, are fine."""
    bus = await make_client("sub")
    sub = bus.subscribe("test.event.y")
    first = asyncio.create_task(sub.get(10))
    await asyncio.sleep(0)  # the first reader is waiting now
    with pytest.raises(RuntimeError, match="one reader"):
        await sub.get(1)
    await bus.publish("test.event.y", Scratch(n=1))
    assert (await first).msg.n == 1
    with pytest.raises(TimeoutError):
        await sub.get(0.05)
    await bus.publish("test.event.y", Scratch(n=2))
    assert (await sub.get(10)).msg.n == 2


async def test_close_releases_tasks_waiting_for_the_connection(sock_path: Path) -> None:
    """close() while the bus is not there: a task waiting in connect(), wait_connected() or a
    request's wait for the connection gets NotConnected at once, not after its own timeout (a
    connect without one would wait for ever), and the closed client says it is not connected."""
    bus = BusClient(sock_path, "alone")  # nothing listens at sock_path
    connecting = asyncio.create_task(bus.connect(timeout=None))
    waiting = asyncio.create_task(bus.wait_connected())
    asking = asyncio.create_task(bus.request("bus.echo", EchoParams(), timeout=60))
    await asyncio.sleep(0.05)  # all three are waiting for the connection
    assert not (connecting.done() or waiting.done() or asking.done())

    await bus.close()
    async with asyncio.timeout(5):
        for task in (connecting, waiting, asking):
            with pytest.raises(NotConnected):
                await task
    assert not bus.connected
    with pytest.raises(NotConnected):
        await bus.request("bus.echo", EchoParams(), timeout=60)


async def test_a_closed_client_is_not_connected(broker: Broker, sock_path: Path) -> None:
    """A request on a client closed while connected fails at once instead of going out on a
    connection being torn down and waiting for its timeout."""
    bus = BusClient(sock_path, "short-lived")
    await bus.connect()
    await bus.close()
    assert not bus.connected
    async with asyncio.timeout(5):
        with pytest.raises(NotConnected):
            await bus.request("bus.echo", EchoParams(), timeout=60)


async def test_connecting_after_several_failures_is_logged(
    sock_path: Path, make_broker: Callable[..., Awaitable[Broker]], caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon started before the broker logs that it cannot connect; once it can, the journal
    must say so too, however many attempts it took (it said nothing after the second)."""
    caplog.set_level("INFO", logger="appliance.bus.client")
    bus = BusClient(sock_path, "early", backoff_initial=0.01, backoff_max=0.02)
    try:
        connecting = asyncio.create_task(bus.connect(timeout=10))
        await wait_until(lambda: bus_failures(caplog) >= 1, "a failed connect")
        await asyncio.sleep(0.2)  # several more attempts, at most 0.03 s apart
        await make_broker()
        await connecting
        assert any("bus: connected" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        await bus.close()


def bus_failures(caplog: pytest.LogCaptureFixture) -> int:
    return sum("cannot connect" in r.getMessage() for r in caplog.records)
