"""Rooms and viewer links over real HTTP and SQLite: create, list, revoke, expire, delete."""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp

from .helpers import Browser, Room, api, csrf_of, pair_device, room_config, running_room, viewer_session


async def test_create_list_and_open_a_room(admin: Browser) -> None:
    room_id = await admin.create_room("Main <entrance>")
    listing = await admin.get("/rooms")
    assert "Main &lt;entrance&gt;" in listing.text and "<entrance>" not in listing.text
    assert f'href="/rooms/{room_id}"' in listing.text
    page = await admin.get(f"/rooms/{room_id}")
    assert page.status == 200 and "No kiosk paired yet" in page.text


async def test_bad_room_names_are_400_not_500(admin: Browser) -> None:
    for name in ["", "   ", "x" * 81, "\x00\x01"]:
        page = await admin.submit("/rooms", "/rooms", {"name": name})
        assert page.status == 400, repr(name)
    assert (await admin.get("/rooms/rdeadbeef0000")).status == 404
    assert (await admin.get("/rooms/../../etc/passwd")).status == 404


async def test_invite_lifecycle(room: Room, admin: Browser, http: aiohttp.ClientSession) -> None:
    room_id = await admin.create_room("Lobby")
    invite = await admin.create_invite(room_id, "front desk")
    assert len(base64.urlsafe_b64decode(invite + "==")) * 8 >= 128
    page = await admin.get(f"/rooms/{room_id}")
    assert "front desk" in page.text and "active" in page.text
    assert invite not in page.text  # shown once, at creation; only its hash is kept

    status, body = await api(http, "POST", room.url + "/api/v1/viewer/session", {"invite": invite})
    assert status == 200
    assert body["room"] == {"id": room_id, "name": "Lobby"}
    assert body["expires_in"] == room.s.config.rooms.viewer_session_ttl_s
    session = body["session"]
    assert len(base64.urlsafe_b64decode(session + "==")) * 8 >= 128
    assert room.s.rooms.session(session, room.clock()) is not None

    invite_id = room.s.rooms.invites(room_id)[0].id
    revoked = await admin.submit(f"/rooms/{room_id}", f"/invites/{invite_id}/revoke", {})
    assert revoked.status == 200 and "revoked" in revoked.text
    status, body = await api(http, "POST", room.url + "/api/v1/viewer/session", {"invite": invite})
    assert status == 403 and body["error"] == "invalid_invite"
    # The sessions it gave out die with it.
    assert room.s.rooms.session(session, room.clock()) is None


async def test_invite_expiry_caps_the_session(
    room: Room, admin: Browser, http: aiohttp.ClientSession
) -> None:
    room_id = await admin.create_room("Lobby")
    invite = await admin.create_invite(room_id, "one hour", expires_h="1")
    room.clock.advance(3600 - 600)
    session = await viewer_session(room, http, invite)
    assert room.s.rooms.session(session, room.clock()) is not None
    room.clock.advance(601)
    assert room.s.rooms.session(session, room.clock()) is None  # the invite ended, so did the session
    status, _ = await api(http, "POST", room.url + "/api/v1/viewer/session", {"invite": invite})
    assert status == 403
    page = await admin.get(f"/rooms/{room_id}")
    assert "expired" in page.text


async def test_invite_expiry_is_validated(admin: Browser) -> None:
    room_id = await admin.create_room("Lobby")
    for bad in ["0", "-1", "abc", "1e9", "nan"]:
        page = await admin.submit(f"/rooms/{room_id}", f"/rooms/{room_id}/invites", {"expires_h": bad})
        assert page.status == 400, bad


async def test_delete_room_needs_confirmation_and_takes_everything(
    room: Room, admin: Browser, http: aiohttp.ClientSession
) -> None:
    room_id = await admin.create_room("Lobby")
    invite = await admin.create_invite(room_id)
    token = await pair_device(room, admin, room_id, http)
    page = await admin.submit(f"/rooms/{room_id}", f"/rooms/{room_id}/delete", {})
    assert page.status == 400 and room.s.rooms.get(room_id) is not None
    page = await admin.submit(f"/rooms/{room_id}", f"/rooms/{room_id}/delete", {"confirm": "yes"})
    assert page.url.endswith("/rooms") and "Lobby" not in page.text
    status, _ = await api(http, "GET", room.url + "/api/v1/device/me", token=token)
    assert status == 401
    status, _ = await api(http, "POST", room.url + "/api/v1/viewer/session", {"invite": invite})
    assert status == 403


async def test_one_device_per_room_unless_configured(tmp_path: Path) -> None:
    for limit, second_ok in [(1, False), (2, True)]:
        async with running_room(
            room_config(tmp_path / str(limit), rooms={"max_devices_per_room": limit})
        ) as room:
            room.add_admin()
            browser = Browser(room)
            async with aiohttp.ClientSession() as http:
                try:
                    await browser.login()
                    room_id = await browser.create_room("Lobby")
                    await pair_device(room, browser, room_id, http, "kiosk-1")
                    body = {"device_id": "kiosk-2", "model": "Pi", "firmware": "1"}
                    _, grant = await api(http, "POST", room.url + "/api/v1/device/authorize", body)
                    page = await browser.activate(grant["user_code"], room_id)
                    if second_ok:
                        assert "Kiosk paired" in page.text
                    else:
                        assert page.status == 409 and "has its kiosk already" in page.text
                        # The confirm page marks the room as taken.
                        form = await browser.submit("/activate", "/activate", {"code": grant["user_code"]})
                        assert "(has a kiosk)" in form.text and "Pair with this room" not in form.text
                finally:
                    await browser.close()


async def test_the_same_kiosk_pairing_again_replaces_its_token(
    room: Room, admin: Browser, http: aiohttp.ClientSession
) -> None:
    room_id = await admin.create_room("Lobby")
    old = await pair_device(room, admin, room_id, http, "kiosk-1")
    new = await pair_device(room, admin, room_id, http, "kiosk-1")  # a full room does not stop it
    assert (await api(http, "GET", room.url + "/api/v1/device/me", token=old))[0] == 401
    assert (await api(http, "GET", room.url + "/api/v1/device/me", token=new))[0] == 200


async def test_devices_page_and_revoke(room: Room, admin: Browser, http: aiohttp.ClientSession) -> None:
    room_id = await admin.create_room("Lobby")
    token = await pair_device(room, admin, room_id, http)
    page = await admin.get("/devices")
    assert "Raspberry Pi 4 Model B" in page.text and "kiosk-1" in page.text and "offline" in page.text
    device = room.s.devices.active()[0]
    page = await admin.post(f"/devices/{device.id}/revoke", {"csrf": csrf_of(page.text), "next": "/devices"})
    assert page.url.endswith("/devices") and "No kiosk is paired" in page.text
    assert (await api(http, "GET", room.url + "/api/v1/device/me", token=token))[0] == 401
    assert room.s.devices.authenticate(token) is None
