"""Signaling over real WebSockets: relay, presence, waiting viewers, revocation, bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from appliance.room import protocol as p
from appliance.room.ws import READ_LIMIT

from .helpers import (
    Browser,
    Client,
    Room,
    api,
    connect,
    pair_device,
    room_config,
    running_room,
    viewer_session,
)


@dataclass
class Setup:
    room: Room
    admin: Browser
    http: aiohttp.ClientSession
    room_id: str
    token: str  # the device's
    invite: str

    async def device(self) -> Client:
        client = await connect(self.http, self.room.ws_url(), self.token)
        welcome = await client.recv()
        assert isinstance(welcome, p.Welcome) and welcome.role == "device"
        return client

    async def viewer(self) -> tuple[Client, p.Welcome]:
        session = await viewer_session(self.room, self.http, self.invite)
        client = await connect(self.http, self.room.ws_url(session=session))
        welcome = await client.recv()
        assert isinstance(welcome, p.Welcome) and welcome.role == "viewer"
        return client, welcome


@pytest.fixture
async def setup(room: Room, admin: Browser, http: aiohttp.ClientSession) -> Setup:
    room_id = await admin.create_room("Lobby")
    token = await pair_device(room, admin, room_id, http)
    invite = await admin.create_invite(room_id)
    return Setup(room, admin, http, room_id, token, invite)


async def test_relay_between_a_viewer_and_the_device(setup: Setup) -> None:
    device = await setup.device()
    viewer, welcome = await setup.viewer()
    assert welcome.device_online and welcome.viewers == 1 and welcome.room.name == "Lobby"
    joined = await device.expect(p.ViewerJoined)
    assert joined.viewer_id == welcome.peer_id

    await device.send(p.Offer(to=joined.viewer_id, sdp="v=0 offer"))
    assert await viewer.expect(p.Offer) == p.Offer(sdp="v=0 offer", from_="device")
    await viewer.send(p.Answer(sdp="v=0 answer"))
    assert await device.expect(p.Answer) == p.Answer(sdp="v=0 answer", from_=welcome.peer_id)
    cand = p.IceCandidate(candidate="candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", sdpMid="0")
    await viewer.send(p.Ice(candidate=cand))
    assert (await device.expect(p.Ice)).candidate == cand
    await device.send(p.Ice(to=welcome.peer_id, candidate=None))
    assert await viewer.expect(p.Ice) == p.Ice(candidate=None, from_="device")
    await viewer.send(p.Ping())
    assert isinstance(await viewer.expect(p.Pong), p.Pong)

    # The admin pages see it online, with one viewer.
    page = await setup.admin.get("/rooms")
    assert "online" in page.text
    await viewer.ws.close()
    assert await device.expect(p.ViewerLeft) == p.ViewerLeft(viewer_id=welcome.peer_id)


async def test_a_waiting_viewer_gets_the_offer_when_the_device_returns(setup: Setup) -> None:
    viewer, welcome = await setup.viewer()
    assert not welcome.device_online
    other, _ = await setup.viewer()
    assert await viewer.expect(p.Presence) == p.Presence(device_online=False, viewers=2)

    device = await setup.device()
    joined = {(await device.expect(p.ViewerJoined)).viewer_id for _ in range(2)}
    assert welcome.peer_id in joined and len(joined) == 2
    assert await viewer.expect(p.Presence) == p.Presence(device_online=True, viewers=2)
    await device.send(p.Offer(to=welcome.peer_id, sdp="v=0"))
    assert (await viewer.expect(p.Offer)).from_ == "device"

    await device.ws.close()
    assert await viewer.expect(p.Presence) == p.Presence(device_online=False, viewers=2)
    assert await other.expect(p.Presence) == p.Presence(device_online=True, viewers=2)
    # The kiosk is back: both viewers are offered a call again.
    device = await setup.device()
    assert len({(await device.expect(p.ViewerJoined)).viewer_id for _ in range(2)}) == 2


async def test_revoked_device_is_cut_off_and_refused(setup: Setup) -> None:
    device = await setup.device()
    dev = setup.room.s.devices.active()[0]
    page = await setup.admin.get("/devices")
    from .helpers import csrf_of

    await setup.admin.post(f"/devices/{dev.id}/revoke", {"csrf": csrf_of(page.text)})
    code, reason = await device.closed()
    assert code == 1008 and "revoked" in reason
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await connect(setup.http, setup.room.ws_url(), setup.token)
    assert exc.value.status == 401


async def test_revoked_invite_cuts_its_viewers_off(setup: Setup) -> None:
    viewer, _ = await setup.viewer()
    invite = setup.room.s.rooms.invites(setup.room_id)[0]
    await setup.admin.submit(f"/rooms/{setup.room_id}", f"/invites/{invite.id}/revoke", {})
    code, _ = await viewer.closed()
    assert code == 1008


async def test_unauthenticated_upgrades_are_401(setup: Setup) -> None:
    for headers, url in [
        ({}, setup.room.ws_url()),
        ({"Authorization": "Bearer nope"}, setup.room.ws_url()),
        ({}, setup.room.ws_url(session="nope")),
        ({"Authorization": "Basic " + setup.token}, setup.room.ws_url()),
    ]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await setup.http.ws_connect(url, headers=headers)
        assert exc.value.status == 401
    status, body = await api(setup.http, "GET", setup.room.url + "/api/v1/ws", token=setup.token)
    assert status == 400 and body["error"] == "upgrade_required"


async def test_a_second_device_of_the_room_is_refused(tmp_path: Path) -> None:
    async with running_room(room_config(tmp_path, rooms={"max_devices_per_room": 2})) as room:
        room.add_admin()
        browser = Browser(room)
        async with aiohttp.ClientSession() as http:
            try:
                await browser.login()
                room_id = await browser.create_room("Lobby")
                first = await pair_device(room, browser, room_id, http, "kiosk-1")
                second = await pair_device(room, browser, room_id, http, "kiosk-2")
                online = await connect(http, room.ws_url(), first)
                assert isinstance(await online.recv(), p.Welcome)
                with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                    await connect(http, room.ws_url(), second)
                assert exc.value.status == 409
                await online.ws.close()
                other = await connect(http, room.ws_url(), second)  # free again
                assert isinstance(await other.recv(), p.Welcome)
            finally:
                await browser.close()


# --- bad input -----------------------------------------------------------------------------------


@pytest.fixture
async def viewer(setup: Setup) -> AsyncIterator[Client]:
    client, _ = await setup.viewer()
    yield client
    await client.ws.close()


async def error_for(client: Client, text: str | bytes) -> p.Error:
    if isinstance(text, bytes):
        await client.ws.send_bytes(text)
    else:
        await client.ws.send_str(text)
    err: p.Error = await client.expect(p.Error)
    return err


@pytest.mark.parametrize(
    ("text", "code", "ref"),
    [
        ("{not json", "bad-json", None),
        ("[]", "bad-message", None),
        ('{"type": "teleport"}', "unknown-type", "teleport"),
        ('{"type": "welcome"}', "unknown-type", "welcome"),
        ('{"sdp": "x"}', "bad-message", None),
        ('{"type": "answer"}', "bad-message", "answer"),
        ('{"type": "answer", "sdp": "x", "extra": 1}', "bad-message", "answer"),
        ('{"type": "ice", "candidate": {"candidate": 5}}', "bad-message", "ice"),
        ('{"type": "offer", "sdp": "x", "to": "v1"}', "bad-message", "offer"),
    ],
)
async def test_malformed_messages_get_an_error_and_the_connection_stays(
    viewer: Client, text: str, code: str, ref: str | None
) -> None:
    err = await error_for(viewer, text)
    assert (err.code, err.ref) == (code, ref)
    await viewer.send(p.Ping())
    assert isinstance(await viewer.expect(p.Pong), p.Pong)


async def test_browser_candidates_with_username_fragment_are_accepted(setup: Setup) -> None:
    """RTCIceCandidate.toJSON() in browsers carries usernameFragment: it must pass."""
    device = await setup.device()
    viewer, _ = await setup.viewer()
    await device.expect(p.ViewerJoined)
    cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    await viewer.ws.send_str(json.dumps({"type": "ice", "candidate": {**cand, "usernameFragment": "abcd"}}))
    got = await device.expect(p.Ice)
    assert got.candidate is not None and got.candidate.usernameFragment == "abcd"


async def test_binary_and_oversized_messages(viewer: Client) -> None:
    assert (await error_for(viewer, b"\x00\x01")).code == "bad-message"
    big = json.dumps({"type": "answer", "sdp": "x" * p.MAX_MESSAGE_BYTES})
    assert (await error_for(viewer, big)).code == "too-large"
    await viewer.send(p.Ping())
    assert isinstance(await viewer.expect(p.Pong), p.Pong)
    # Far over the limit: cut off from the frame header, before it is buffered.
    await viewer.ws.send_str("x" * (READ_LIMIT + 1))
    code, _ = await viewer.closed()
    assert code == 1009


async def test_a_flood_is_rate_limited_then_closed(viewer: Client) -> None:
    for _ in range(p.RATE_BURST + 40):
        await viewer.send(p.Ping())
    codes = []
    while True:
        frame = await viewer.ws.receive(5)
        if frame.type != aiohttp.WSMsgType.TEXT:
            break
        msg = p.decode_to_client(frame.data)
        codes.append(msg.code if isinstance(msg, p.Error) else type(msg).__name__)
    assert codes.count("Pong") >= p.RATE_BURST - 1
    assert "rate-limited" in codes
    assert viewer.ws.close_code == 1008


async def test_a_connection_that_keeps_sending_garbage_is_closed(viewer: Client) -> None:
    for _ in range(20):
        await viewer.ws.send_str("{")
    code, reason = await viewer.closed()
    assert code == 1008 and "too many" in reason


async def test_one_bad_client_does_not_disturb_the_others(setup: Setup) -> None:
    device = await setup.device()
    good, welcome = await setup.viewer()
    bad, _ = await setup.viewer()
    await device.expect(p.ViewerJoined)
    for _ in range(50):
        await bad.ws.send_str("{")
    await good.send(p.Answer(sdp="v=0"))
    assert (await device.expect(p.Answer)).from_ == welcome.peer_id
    await asyncio.sleep(0.1)
    assert (await bad.closed())[0] == 1008


async def test_a_viewer_connection_ends_with_its_session(setup: Setup) -> None:
    session = await viewer_session(setup.room, setup.http, setup.invite)
    setup.room.clock.advance(setup.room.s.config.rooms.viewer_session_ttl_s - 1)  # a second left
    viewer = await connect(setup.http, setup.room.ws_url(session=session))
    assert isinstance(await viewer.recv(), p.Welcome)
    code, reason = await viewer.closed(timeout=5)
    assert code == 1008 and "expired" in reason


async def test_clients_that_hang_up_during_the_handshake_are_no_error(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    session = await viewer_session(setup.room, setup.http, setup.invite)
    host, port = setup.room.url.removeprefix("http://").split(":")
    request = (
        f"GET /api/v1/ws?session={session} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    for _ in range(20):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        writer.transport.abort()  # gone before the 101 can be written
    await asyncio.sleep(0.3)
    device = await setup.device()
    assert device.ws is not None and setup.room.s.hub.viewers_in(setup.room_id) == 0
    assert not [r for r in caplog.records if r.levelno >= 40], [r.getMessage() for r in caplog.records]


class StuckSocket:
    """A client that stopped reading: every send waits forever (its TCP window is shut)."""

    def __init__(self) -> None:
        self.sends = 0
        self.closed_with: tuple[int, bytes] | None = None

    async def send_str(self, text: str) -> None:
        self.sends += 1
        await asyncio.Event().wait()

    async def close(self, *, code: int, message: bytes) -> bool:
        self.closed_with = (code, message)
        return True


async def test_a_client_that_stops_reading_is_cut_off() -> None:
    from appliance.room.ws import SEND_QUEUE, WsPeer

    sock = StuckSocket()
    peer = WsPeer(sock)  # type: ignore[arg-type]
    peer.opened()
    for n in range(SEND_QUEUE + 5):
        peer.send(f"message {n}")
        await asyncio.sleep(0)
    async with asyncio.timeout(2):
        await peer.finish()
    assert sock.sends == 1  # stuck in the first
    assert sock.closed_with is not None and sock.closed_with[0] == 1008
    assert b"too slow" in sock.closed_with[1]
    assert not peer.queue


# --- races and re-pairing ------------------------------------------------------------------------


async def test_pairing_again_cuts_off_the_old_tokens_connection(setup: Setup) -> None:
    """Pairing a kiosk again revokes its old token; its connection went on relaying (a revoked
    token still signaling) and held the room, so the new token got 409 device_busy until
    the old TCP stream died."""
    old = await setup.device()
    new_token = await pair_device(setup.room, setup.admin, setup.room_id, setup.http)
    code, reason = await old.closed()
    assert code == 1008 and "paired again" in reason
    device = await connect(setup.http, setup.room.ws_url(), new_token)
    assert isinstance(await device.recv(), p.Welcome)


async def test_a_viewer_session_has_one_connection(setup: Setup) -> None:
    """A second connection with the same session replaces the first: one session cannot take
    every place in the call, and a viewer back from a network drop does not count twice."""
    device = await setup.device()
    session = await viewer_session(setup.room, setup.http, setup.invite)
    first = await connect(setup.http, setup.room.ws_url(session=session))
    one = await first.recv()
    assert isinstance(one, p.Welcome)
    assert (await device.expect(p.ViewerJoined)).viewer_id == one.peer_id
    second = await connect(setup.http, setup.room.ws_url(session=session))
    two = await second.recv()
    assert isinstance(two, p.Welcome) and two.peer_id != one.peer_id and two.viewers == 1
    code, reason = await first.closed()
    assert code == 1008 and "replaced" in reason
    assert (await device.expect(p.ViewerLeft)).viewer_id == one.peer_id  # the kiosk hangs up on it
    assert (await device.expect(p.ViewerJoined)).viewer_id == two.peer_id
    # Another session of the same invite is another viewer, as before.
    _other, welcome = await setup.viewer()
    assert welcome.viewers == 2
    await second.send(p.Answer(sdp="v=0"))
    assert (await device.expect(p.Answer)).from_ == two.peer_id


async def test_messages_racing_a_peer_that_left_do_not_close_the_sender(setup: Setup) -> None:
    """Candidates still in flight when the other side goes are answered no-device or
    no-such-viewer. They are a race, not misbehaviour: counted as strikes, a dozen of them
    closed the device (and with it every viewer's call) or a viewer with 1008."""
    device = await setup.device()
    viewer, welcome = await setup.viewer()
    await device.expect(p.ViewerJoined)
    cand = p.IceCandidate(candidate="candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", sdpMid="0")
    await viewer.ws.close()
    await device.expect(p.ViewerLeft)
    for _ in range(15):
        await device.send(p.Ice(to=welcome.peer_id, candidate=cand))
    for _ in range(15):
        assert (await device.expect(p.Error)).code == "no-such-viewer"
    await device.send(p.Ping())
    assert isinstance(await device.expect(p.Pong), p.Pong)  # still connected

    other, _ = await setup.viewer()
    await device.ws.close()
    await other.expect(p.Presence)
    for _ in range(15):
        await other.send(p.Ice(candidate=cand))
    for _ in range(15):
        assert (await other.expect(p.Error)).code == "no-device"
    await other.send(p.Ping())
    assert isinstance(await other.expect(p.Pong), p.Pong)
