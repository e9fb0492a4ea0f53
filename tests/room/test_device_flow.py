"""Pairing, RFC 8628 shape, against the real service: codes, polling answers, single use,
the wrong-code limit at /activate, and the rate limits per address and overall."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.room.device_flow import SLOW_DOWN_STEP_S, CodeState, decide_poll
from appliance.room.tokens import USER_CODE_ALPHABET, format_user_code, normalize_user_code

from .helpers import Browser, Room, api, csrf_of, room_config, running_room

DEVICE = {"device_id": "kiosk-1", "model": "Raspberry Pi 4 Model B Rev 1.4", "firmware": "0.4.0"}


async def authorize(room: Room, http: aiohttp.ClientSession, body: dict[str, str] = DEVICE) -> dict[str, Any]:
    status, grant = await api(http, "POST", room.url + "/api/v1/device/authorize", body)
    assert status == 200, grant
    return grant  # type: ignore[no-any-return]


async def poll(room: Room, http: aiohttp.ClientSession, device_code: str) -> tuple[int, dict[str, Any]]:
    return await api(http, "POST", room.url + "/api/v1/device/token", {"device_code": device_code})


# --- the pure parts ----------------------------------------------------------------------------


def test_user_codes_ignore_case_and_punctuation() -> None:
    assert normalize_user_code("bcdf-ghjk") == "BCDFGHJK"
    assert normalize_user_code(" BCDF ghjk ") == "BCDFGHJK"
    assert normalize_user_code("B.C.D.F_G-H J/K") == "BCDFGHJK"
    assert normalize_user_code("BCDF-GHJA") is None  # a vowel is never in a code
    assert normalize_user_code("BCDF-GHJ1") is None
    assert normalize_user_code("BCDF-GHJ") is None
    assert format_user_code("BCDFGHJK") == "BCDF-GHJK"


@pytest.mark.parametrize(
    ("state", "last_poll", "now", "answer"),
    [
        ("pending", None, 100.0, "authorization_pending"),
        ("pending", 96.0, 100.0, "slow_down"),
        ("pending", 95.0, 100.0, "authorization_pending"),
        ("denied", 99.0, 100.0, "access_denied"),
        ("approved", 99.0, 100.0, "issue"),
        ("issued", 90.0, 100.0, "invalid_grant"),
        ("pending", 90.0, 700.0, "expired_token"),
        ("approved", 90.0, 700.0, "expired_token"),
    ],
)
def test_poll_decisions(state: Any, last_poll: float | None, now: float, answer: str) -> None:
    decision = decide_poll(CodeState(state, expires=600.0, interval=5.0, last_poll=last_poll), now)
    assert decision.answer == answer
    assert decision.interval == (
        5.0 + SLOW_DOWN_STEP_S if answer == "slow_down" else 5.0 if answer != "invalid_grant" else 0.0
    )


# --- over HTTP ---------------------------------------------------------------------------------


async def test_authorize_answers_in_rfc_8628_shape(room: Room, http: aiohttp.ClientSession) -> None:
    grant = await authorize(room, http)
    assert set(grant) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert len(base64.urlsafe_b64decode(grant["device_code"] + "==")) * 8 >= 256
    assert re.fullmatch(f"[{USER_CODE_ALPHABET}]{{4}}-[{USER_CODE_ALPHABET}]{{4}}", grant["user_code"])
    assert grant["verification_uri"] == room.url + "/activate"
    assert grant["verification_uri_complete"] == f"{room.url}/activate?code={grant['user_code']}"
    assert grant["expires_in"] == 600 and grant["interval"] == 5


async def test_public_url_goes_into_the_links(tmp_path: Path) -> None:
    config = room_config(tmp_path, service={"public_url": "https://rooms.example.org/"})
    async with running_room(config) as room, aiohttp.ClientSession() as http:
        grant = await authorize(room, http)
        assert grant["verification_uri"] == "https://rooms.example.org/activate"


async def test_pending_then_paired_then_single_use(
    room: Room, admin: Browser, http: aiohttp.ClientSession
) -> None:
    room_id = await admin.create_room("Lobby")
    grant = await authorize(room, http)
    status, body = await poll(room, http, grant["device_code"])
    assert (status, body["error"]) == (400, "authorization_pending")

    # The admin sees what the kiosk said about itself before confirming.
    page = await admin.submit(
        "/activate", "/activate", {"code": grant["user_code"].lower().replace("-", " ")}
    )
    assert page.status == 200
    for fact in ("Raspberry Pi 4 Model B Rev 1.4", "kiosk-1", "0.4.0", grant["user_code"]):
        assert fact in page.text
    page = await admin.post(
        "/activate/confirm",
        {"code": grant["user_code"], "room": room_id, "action": "approve", "csrf": csrf_of(page.text)},
    )
    assert "Kiosk paired" in page.text and "Lobby" in page.text

    room.clock.advance(5)
    status, body = await poll(room, http, grant["device_code"])
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["room"] == {"id": room_id, "name": "Lobby"}
    assert len(base64.urlsafe_b64decode(body["access_token"].removeprefix("rdt_") + "==")) * 8 >= 256
    token = body["access_token"]
    status, me = await api(http, "GET", room.url + "/api/v1/device/me", token=token)
    assert status == 200 and me["device"]["device_id"] == "kiosk-1" and me["room"]["name"] == "Lobby"
    # Stored hashed: the token is nowhere in the database.
    dump = "\n".join(room.s.conn.iterdump())
    assert token not in dump and grant["device_code"] not in dump

    # Single use: the device code is spent, and the user code no longer pairs anything.
    room.clock.advance(5)
    status, body = await poll(room, http, grant["device_code"])
    assert (status, body["error"]) == (400, "invalid_grant")
    page = await admin.submit("/activate", "/activate", {"code": grant["user_code"]})
    assert page.status == 400 and "No kiosk is waiting with that code" in page.text


async def test_slow_down_grows_the_interval(room: Room, http: aiohttp.ClientSession) -> None:
    grant = await authorize(room, http)
    assert (await poll(room, http, grant["device_code"]))[1]["error"] == "authorization_pending"
    room.clock.advance(2)  # too early: interval is 5 s
    assert (await poll(room, http, grant["device_code"]))[1]["error"] == "slow_down"
    room.clock.advance(6)  # 5 s would be enough before; now 10 s are needed
    assert (await poll(room, http, grant["device_code"]))[1]["error"] == "slow_down"
    room.clock.advance(15)
    assert (await poll(room, http, grant["device_code"]))[1]["error"] == "authorization_pending"


async def test_expired_token(room: Room, admin: Browser, http: aiohttp.ClientSession) -> None:
    room_id = await admin.create_room("Lobby")
    grant = await authorize(room, http)
    room.clock.advance(601)
    status, body = await poll(room, http, grant["device_code"])
    assert (status, body["error"]) == (400, "expired_token")
    page = await admin.activate(grant["user_code"], room_id)
    assert page.status == 400  # an expired code cannot be entered either


async def test_access_denied(room: Room, admin: Browser, http: aiohttp.ClientSession) -> None:
    await admin.create_room("Lobby")
    grant = await authorize(room, http)
    page = await admin.activate(grant["user_code"], None, action="deny")
    assert "Pairing refused" in page.text
    status, body = await poll(room, http, grant["device_code"])
    assert (status, body["error"]) == (400, "access_denied")
    assert room.s.devices.active() == []


async def test_sixth_wrong_code_is_refused(room: Room, admin: Browser, http: aiohttp.ClientSession) -> None:
    room_id = await admin.create_room("Lobby")
    grant = await authorize(room, http)
    wrong = "BBBB-BBBB" if grant["user_code"] != "BBBB-BBBB" else "CCCC-CCCC"
    for left in (4, 3, 2, 1, 0):
        page = await admin.submit("/activate", "/activate", {"code": wrong})
        assert page.status == 400 and f"({left} attempts left)" in page.text
    page = await admin.submit("/activate", "/activate", {"code": wrong})
    assert page.status == 429 and "5 wrong codes" in page.text
    # Locked out for the code's lifetime: the right code is not even looked at...
    page = await admin.submit("/activate", "/activate", {"code": grant["user_code"]})
    assert page.status == 429
    # ...nor through the confirmation step.
    token = csrf_of((await admin.get("/activate")).text)
    page = await admin.post(
        "/activate/confirm", {"code": grant["user_code"], "room": room_id, "action": "approve", "csrf": token}
    )
    assert page.status == 429
    assert (await poll(room, http, grant["device_code"]))[1]["error"] == "authorization_pending"
    # The limit is per code lifetime: once the wrong entries are that old, codes count again.
    room.clock.advance(601)
    fresh = await authorize(room, http)
    page = await admin.activate(fresh["user_code"], room_id)
    assert "Kiosk paired" in page.text


async def test_malformed_pairing_requests_are_400(room: Room, http: aiohttp.ClientSession) -> None:
    url = room.url + "/api/v1/device/authorize"
    for body in [
        None,
        [],
        {"device_id": "kiosk-1"},
        {**DEVICE, "extra": 1},
        {**DEVICE, "device_id": "bad id with spaces"},
        {**DEVICE, "model": "x" * 129},
        {**DEVICE, "model": "line\nbreak"},
        {**DEVICE, "firmware": 7},
    ]:
        status, answer = await api(http, "POST", url, body)
        assert status == 400 and answer["error"] == "invalid_request", body
    async with http.post(
        url, data=b"\xff\xfe not json", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
    async with http.post(url, data=b"x" * 100_000) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"] == "request_entity_too_large"
    for body in [{"device_code": ""}, {"device_code": "x", "grant_type": "password"}, {"code": "x"}]:
        status, answer = (
            await poll(room, http, "unused")
            if body is None
            else await api(http, "POST", room.url + "/api/v1/device/token", body)
        )
        assert status == 400 and answer["error"] == "invalid_request", body
    assert (await poll(room, http, "no-such-code"))[1]["error"] == "invalid_grant"


async def test_rate_limits_per_address_and_overall(tmp_path: Path) -> None:
    config = room_config(
        tmp_path,
        pairing={
            "authorize_per_address_per_min": 3,
            "authorize_overall_per_min": 5,
            "token_per_address_per_min": 2,
            "token_overall_per_min": 3,
        },
    )
    async with running_room(config) as room:
        one = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.1", 0)))
        two = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
        url = room.url + "/api/v1/device/authorize"
        try:
            assert [(await api(one, "POST", url, DEVICE))[0] for _ in range(4)] == [200, 200, 200, 429]
            # 127.0.0.2 has its own allowance of 3, but only 2 remain of the overall 5.
            assert [(await api(two, "POST", url, DEVICE))[0] for _ in range(3)] == [200, 200, 429]
            async with one.post(url, json=DEVICE) as resp:
                assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
                assert (await resp.json())["error"] == "rate_limited"
            tok = room.url + "/api/v1/device/token"
            assert [(await api(one, "POST", tok, {"device_code": "x"}))[0] for _ in range(3)] == [
                400,
                400,
                429,
            ]
            assert [(await api(two, "POST", tok, {"device_code": "x"}))[0] for _ in range(2)] == [400, 429]
            room.clock.advance(60)
            assert (await api(two, "POST", url, DEVICE))[0] == 200  # refilled
        finally:
            await one.close()
            await two.close()


async def test_activate_rate_limit_per_address(tmp_path: Path) -> None:
    config = room_config(tmp_path, pairing={"activate_per_address_per_min": 2, "wrong_codes_per_admin": 50})
    async with running_room(config) as room:
        room.add_admin()
        browser = Browser(room)
        try:
            await browser.login()
            statuses = [
                (await browser.submit("/activate", "/activate", {"code": "BBBB-BBBB"})).status
                for _ in range(3)
            ]
            assert statuses == [400, 400, 429]
        finally:
            await browser.close()


async def test_a_forwarded_address_that_is_not_text_is_no_500(tmp_path: Path) -> None:
    """Behind a proxy the address comes from X-Forwarded-For; bytes there that are not UTF-8
    arrive as lone surrogates, and storing one with the pairing request (SQLite) raised
    UnicodeEncodeError: a 500."""
    async with running_room(room_config(tmp_path, service={"behind_proxy": True})) as room:
        host, port = room.url.removeprefix("http://").split(":")
        body = b'{"device_id": "kiosk-1", "model": "Pi", "firmware": "1"}'
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /api/v1/device/authorize HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1, \xff\xfe\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % len(body)
            + body
        )
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
