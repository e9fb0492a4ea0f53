"""The kiosk's link to the room service: URL, backoff, reconnects, refused tokens, bad input."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from appliance.publisher.signaling import Backoff, Credentials, RoomLink, ws_url
from appliance.room import protocol as p

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
