"""The kiosk's link to the room service: URL, backoff, reconnects, refused tokens, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from appliance.bus.client import BusClient
from appliance.publisher.service import PublisherService
from appliance.publisher.signaling import Backoff, Credentials, RoomLink, ws_url
from appliance.room import protocol as p

from .conftest import publisher_config
from .helpers import wait_until
from .room import DEVICE_TOKEN, RoomServer


@pytest.mark.parametrize(
    "room_url, expected",
    [
        ("https://rooms.example.org", "wss://rooms.example.org/api/v1/ws"),
        ("https://rooms.example.org/", "wss://rooms.example.org/api/v1/ws"),
        ("http://127.0.0.1:8080/kiosks", "ws://127.0.0.1:8080/kiosks/api/v1/ws"),
    ],
)
def test_ws_url(room_url: str, expected: str) -> None:
    assert ws_url(room_url) == expected


@pytest.mark.parametrize("bad", ["rooms.example.org", "ftp://x", "https://"])
def test_ws_url_refuses_what_is_not_http(bad: str) -> None:
    with pytest.raises(ValueError):
        ws_url(bad)


def test_backoff_doubles_with_full_jitter_and_resets() -> None:
    low = Backoff(initial=0.5, maximum=4.0, rand=lambda: 0.0)
    assert [low.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    high = Backoff(initial=0.5, maximum=4.0, rand=lambda: 0.999)
    assert high.next_delay() == pytest.approx(0.7495)
    high.reset()
    assert high.next_delay() == pytest.approx(0.7495)


def test_backoff_step_capped_lower_for_an_unreachable_service() -> None:
    steady = Backoff(initial=0.5, maximum=30.0, rand=lambda: 0.5)  # jitter factor exactly 1
    assert [steady.next_delay(2.0) for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    # A refusal after that goes on doubling towards the usual maximum.
    assert steady.next_delay() == 4.0
    # The lower cap never raises the usual maximum.
    small = Backoff(initial=0.5, maximum=1.0, rand=lambda: 0.5)
    assert [small.next_delay(5.0) for _ in range(3)] == [0.5, 1.0, 1.0]


class RecordingBackoff(Backoff):
    """Remembers the cap asked for at each step: None for a refusal, the link's cap when
    nothing answered."""

    def __init__(self) -> None:
        super().__init__(initial=0.05, maximum=30.0)
        self.caps: list[float | None] = []
        self.at: list[float] = []

    def next_delay(self, maximum: float | None = None) -> float:
        self.caps.append(maximum)
        self.at.append(time.monotonic())
        return super().next_delay(maximum)


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port on 127.0.0.1 whose SYNs go unanswered, as into a network that went away: a
    listener that never accepts, its queue filled by one connection (the kernel drops SYNs
    to a full accept queue and the client retransmits them, at 1, 3, 7 s...)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        yield port
    finally:
        filler.close()
        listener.close()


@contextlib.asynccontextmanager
async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """The app on a free port of 127.0.0.1 (over TLS with ssl_context); yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def fixed(creds: Credentials) -> Callable[[], Awaitable[Credentials]]:
    """A credential source that always gives these."""

    async def credentials() -> Credentials:
        return creds

    return credentials


async def run_link(link: RoomLink, seconds: float) -> None:
    task = asyncio.ensure_future(link.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_an_attempt_into_a_black_hole_is_cut_off_and_retried_soon(black_hole: int) -> None:
    backoff = RecordingBackoff()
    creds = Credentials(f"http://127.0.0.1:{black_hole}", DEVICE_TOKEN)
    link = RoomLink(fixed(creds), lambda m: None, backoff=backoff, link_retry_max=0.2, connect_timeout=0.3)
    await run_link(link, 2.0)
    # Each attempt gave up on its SYNs after the connect timeout rather than waiting on the
    # kernel's retransmissions, and the next came after the short cap, not the long backoff.
    assert len(backoff.caps) >= 4, backoff.at
    assert set(backoff.caps) == {0.2}
    gaps = [b - a for a, b in zip(backoff.at, backoff.at[1:], strict=False)]
    assert max(gaps) < 0.3 + 0.2 * 1.5 + 0.2, gaps
    assert "cannot connect" in link.last_error


async def test_a_refusal_by_the_service_backs_off_the_long_way() -> None:
    async def overloaded(request: web.Request) -> web.Response:
        return web.Response(status=503, text="overloaded")

    app = web.Application()
    app.router.add_get("/api/v1/ws", overloaded)
    backoff = RecordingBackoff()
    async with serve(app) as port:
        creds = Credentials(f"http://127.0.0.1:{port}", DEVICE_TOKEN)
        link = RoomLink(fixed(creds), lambda m: None, backoff=backoff, link_retry_max=0.01)
        await run_link(link, 0.5)
    assert backoff.caps and set(backoff.caps) == {None}
    assert "503" in link.last_error


class Link:
    def __init__(self, room: RoomServer, token: str = DEVICE_TOKEN) -> None:
        self.creds: Credentials | None = Credentials(room.url, token)
        self.messages: list[p.ToClient] = []
        self.states: list[bool] = []
        self.unauthorized = 0
        self.link = RoomLink(
            self.credentials,
            self.messages.append,
            on_state=self.states.append,
            on_unauthorized=self.count_unauthorized,
            backoff=Backoff(initial=0.05, maximum=0.2),
        )

    async def credentials(self) -> Credentials | None:
        return self.creds

    def count_unauthorized(self) -> None:
        self.unauthorized += 1


@pytest.fixture
async def link(room: RoomServer) -> AsyncIterator[Link]:
    made = Link(room)
    task = asyncio.ensure_future(made.link.run())
    yield made
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_the_link_connects_with_the_token_and_reconnects(link: Link, room: RoomServer) -> None:
    await room.wait_device()
    await wait_until(lambda: link.states == [True], "connected")
    welcome = link.messages[0]
    assert isinstance(welcome, p.Welcome) and welcome.role == "device"
    await room.kill()
    await wait_until(lambda: link.states == [True, False], "the loss noticed")
    assert not await link.link.send(p.Ping())  # nothing to send on: dropped, not queued
    await asyncio.sleep(0.5)  # the service is down for a while: attempts back off meanwhile
    await room.start()
    await room.wait_device()
    await wait_until(lambda: link.states == [True, False, True], "connected again")
    assert room.device_connects == 2


async def test_a_refused_token_is_reported_to_pairing(room: RoomServer) -> None:
    bad = Link(room, token="revoked")
    task = asyncio.ensure_future(bad.link.run())
    try:
        await wait_until(lambda: bad.unauthorized >= 2, "refusals reported")
        assert "refused the device token" in bad.link.last_error
        assert room.device is None and not bad.states
        # Paired again with a good token: refresh() connects now rather than after the backoff.
        bad.creds = Credentials(room.url, DEVICE_TOKEN)
        bad.link.backoff.maximum = 30.0
        bad.link.backoff.current = 30.0
        bad.link.refresh()
        await room.wait_device(2.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_unpaired_the_link_waits_and_refresh_drops_a_connection(link: Link, room: RoomServer) -> None:
    await room.wait_device()
    link.creds = None  # unpaired
    link.link.refresh()
    await wait_until(lambda: room.device is None, "the connection dropped")
    await wait_until(lambda: link.link.last_error == "not paired with a room yet", "waiting unpaired")
    assert room.device_connects == 1


async def test_malformed_messages_from_the_service_are_dropped(link: Link, room: RoomServer) -> None:
    await room.wait_device()
    assert room.device is not None
    ws = room.device.ws
    await ws.send_str("{not json")
    await ws.send_str('{"type":"viewer-joined"}')
    await ws.send_str(p.encode(p.ViewerJoined(viewer_id="v1")))
    await wait_until(lambda: any(isinstance(m, p.ViewerJoined) for m in link.messages), "the good message")
    assert link.link.connected and room.device_connects == 1
    assert [type(m).__name__ for m in link.messages] == ["Welcome", "ViewerJoined"]


async def test_a_refused_token_degrades_the_publishers_health_until_it_connects(
    room: RoomServer, run_dir: Path, bus_factory: Callable[[str], Awaitable[BusClient]]
) -> None:
    """Pairing checks a refused token and forgets it if the service confirms; until then (or
    when the service refuses for another reason: the device disabled, the room gone) the link
    retries slowly, and nothing but a log line said why no viewer can reach the kiosk. The
    daemon's health must say so, and stop saying so once the link is welcomed."""
    creds = [Credentials(room.url, "revoked")]

    async def credentials() -> Credentials:
        return creds[0]

    service = PublisherService(await bus_factory("publisher"), publisher_config(run_dir), credentials)
    service.link.backoff = Backoff(initial=0.05, maximum=0.2)
    text, degraded = service.status()
    assert not degraded
    task = asyncio.ensure_future(service.link.run())
    try:
        await wait_until(lambda: service.status()[1], "a degraded status")
        assert "refused the device token" in service.status()[0]
        creds[0] = Credentials(room.url, DEVICE_TOKEN)
        service.link.refresh()
        await room.wait_device(2.0)
        await wait_until(lambda: service.link.connected, "welcomed")
        assert service.status() == (text, False)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await service.aclose()
