"""Hardening of the room service against a hostile or unlucky internet: rate-limit keys,
clocks that jump, a locked or damaged database, admin lockout, bounded rooms."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from appliance.clientkey import client_key
from appliance.room import protocol as p
from appliance.room.accesslog import redact
from appliance.room.auth import KNOWN_COOKIE
from appliance.room.db import open_database, transaction
from appliance.room.hub import Hub, TooManyViewers
from appliance.room.ratelimit import AddressAndOverall, Bucket, RateLimiter

from .helpers import Browser, Room, admin_makes_room, api, connect, room_config, running_room, viewer_session
from .test_hub import Recorder


def test_ipv6_clients_are_limited_per_64_so_rotating_addresses_does_not_help() -> None:
    limits = AddressAndOverall(per_address_per_min=2, overall_per_min=1000)
    assert limits.hit("2001:db8:1:2::1", 0.0) == 0.0
    assert limits.hit("2001:db8:1:2:aaaa::7", 0.0) == 0.0
    # A third address from the same /64 (one customer's network) shares their allowance.
    assert limits.hit("2001:db8:1:2:ffff:ffff:ffff:ffff", 0.0) > 0
    # The next /64 is somebody else.
    assert limits.hit("2001:db8:1:3::1", 0.0) == 0.0


def test_limit_keys() -> None:
    assert client_key("2001:DB8:0:0:1::5") == client_key("2001:db8::9")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("fe80::1%eth0") == client_key("fe80::2")
    assert client_key("unknown") == "unknown"  # no address (a Unix socket): kept as it is


def test_a_clock_stepping_back_does_not_lock_a_client_out() -> None:
    # The limits run on the service's wall clock; NTP stepping it back an hour made
    # (now - updated) hugely negative: the bucket drained to -N tokens, refusing for an hour.
    bucket = Bucket(capacity=5.0, refill_per_s=5 / 60, tokens=5.0, updated=10_000.0)
    assert bucket.take(10_000.0) == 0.0
    assert bucket.take(10_000.0 - 3600) == 0.0
    assert bucket.peek(10_000.0 - 3600) == 0.0
    limiter = RateLimiter(5, 60.0)
    assert limiter.hit("a", 10_000.0) == 0.0
    assert limiter.blocked_for("a", 6_400.0) == 0.0
    assert limiter.hit("a", 6_400.0) == 0.0


async def test_a_locked_database_is_a_clear_503_and_the_service_recovers(room: Room, admin: Browser) -> None:
    # Another writer (the admin command, the demo) holds the database longer than the busy
    # timeout: the answer was aiohttp's bare "500 Internal Server Error" in text/plain.
    room.s.conn.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(room.s.config.service.database, isolation_level=None)
    body = {"device_id": "kiosk-1", "model": "Pi", "firmware": "1.0"}
    try:
        other.execute("BEGIN IMMEDIATE")
        async with (
            aiohttp.ClientSession() as http,
            http.post(room.url + "/api/v1/device/authorize", json=body) as resp,
        ):
            assert resp.status == 503
            assert resp.content_type == "application/json"
            answer = await resp.json()
            assert answer["error"] == "database_busy", answer
            assert int(resp.headers["Retry-After"]) >= 1
        page = await admin.submit("/rooms", "/rooms", {"name": "Lobby"})
        assert page.status == 503 and "busy" in page.text, page.text
        other.execute("ROLLBACK")
        async with aiohttp.ClientSession() as http:
            status, grant = await api(http, "POST", room.url + "/api/v1/device/authorize", body)
            assert status == 200, grant
    finally:
        other.close()


async def test_a_damaged_database_is_a_clear_503_not_a_traceback(
    room: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    def damaged(*args: object) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(room.s.rooms, "open_session", damaged)
    async with aiohttp.ClientSession() as http:
        status, answer = await api(http, "POST", room.url + "/api/v1/viewer/session", {"invite": "x" * 32})
    assert status == 503
    assert answer["error"] == "database_unavailable", answer
    assert "malformed" not in answer["error_description"]  # the details go to the log


def test_a_failed_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    # COMMIT failing (SQLITE_BUSY, a full disk) left the connection inside the transaction: every
    # later BEGIN IMMEDIATE failed with "cannot start a transaction within a transaction".
    conn = open_database(tmp_path / "room.db")
    conn.execute("PRAGMA busy_timeout=0")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("CREATE TABLE child (p REFERENCES rooms(id))")
    with pytest.raises(sqlite3.IntegrityError), transaction(conn):
        conn.execute("PRAGMA defer_foreign_keys=ON")  # reset by every COMMIT: set inside
        conn.execute("INSERT INTO child (p) VALUES ('no such room')")  # fails only at COMMIT
    assert not conn.in_transaction
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1


async def test_an_attacker_cannot_lock_the_admin_out_of_logging_in(tmp_path: Path) -> None:
    # Wrong passwords for "alice" from anywhere used up her account's allowance, and a few
    # addresses used up the overall one: the real alice was refused with everybody else.
    config = room_config(
        tmp_path,
        accounts={
            "login_failures_per_user": 3,
            "login_overall_per_min": 4,
            "login_per_address_per_min": 1000,
        },
    )
    async with running_room(config) as room:
        room.add_admin()
        alice, attacker = Browser(room, "127.0.0.1"), Browser(room, "127.0.0.2")
        try:
            assert (await alice.login()).status == 200
            assert (await alice.submit("/rooms", "/logout", {})).status == 200
            for _ in range(3):
                assert (await attacker.login(password="wrong wrong wrong")).status == 401
            assert (await attacker.login()).status == 429  # the account is throttled for strangers
            # A forged "known browser" cookie does not get the attacker past it.
            attacker.session.cookie_jar.update_cookies({KNOWN_COOKIE: "abc.def"}, URL(room.url))
            assert (await attacker.login()).status == 429
            # alice's browser logged in before: it is not held to the account's or the overall limit.
            page = await alice.login()
            assert page.status == 200 and "Rooms" in page.text, page.text
        finally:
            await alice.close()
            await attacker.close()


async def test_a_known_browser_still_has_a_limit_of_its_own(tmp_path: Path) -> None:
    config = room_config(tmp_path, accounts={"login_failures_per_user": 3, "login_per_address_per_min": 1000})
    async with running_room(config) as room:
        room.add_admin()
        browser = Browser(room)
        try:
            assert (await browser.login()).status == 200
            assert (await browser.submit("/rooms", "/logout", {})).status == 200
            for _ in range(3):
                assert (await browser.login(password="wrong wrong wrong")).status == 401
            page = await browser.login()
            assert page.status == 429, page.text  # a stolen cookie is no way to guess faster
        finally:
            await browser.close()


def test_the_hub_bounds_the_viewers_of_a_room() -> None:
    hub = Hub(lambda peer, valid_s: [], max_viewers=2)
    info = p.RoomInfo(id="r1", name="Lobby")
    first = hub.join_viewer(Recorder(), info, "i1", session="s1")
    hub.join_viewer(Recorder(), info, "i1", session="s2")
    with pytest.raises(TooManyViewers):
        hub.join_viewer(Recorder(), info, "i1", session="s3")
    # The same session reconnecting replaces its old connection: not one more viewer.
    hub.join_viewer(Recorder(), info, "i1", session="s1")
    assert hub.viewers_in("r1") == 2
    hub.leave(first)  # replaced already: changes nothing
    assert hub.viewers_in("r1") == 2
    # Another room has places of its own.
    hub.join_viewer(Recorder(), p.RoomInfo(id="r2", name="Hall"), "i2", session="s4")


async def test_one_invite_cannot_fill_the_service_with_viewer_sockets(tmp_path: Path) -> None:
    # Every session of one invite link could hold a socket, unbounded: a leaked link let one
    # client hold thousands of connections (and the kiosk a viewer-joined for each).
    async with (
        running_room(room_config(tmp_path)) as room,
        aiohttp.ClientSession() as http,
    ):
        room.s.hub.max_viewers = 2
        _, invite, _ = await admin_makes_room(room, http)
        sessions = [await viewer_session(room, http, invite) for _ in range(3)]
        first = await connect(http, room.ws_url(session=sessions[0]))
        second = await connect(http, room.ws_url(session=sessions[1]))  # kept: unreferenced, it would close
        await first.expect(p.Welcome)
        await second.expect(p.Welcome)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await connect(http, room.ws_url(session=sessions[2]))
        assert refused.value.status == 409
        await first.ws.close()
        await asyncio.sleep(0)
        for _ in range(100):  # the service sees the close and frees the place
            if room.s.hub.viewers_in(next(iter(room.s.hub.rooms))) < 2:
                break
            await asyncio.sleep(0.01)
        third = await connect(http, room.ws_url(session=sessions[2]))
        assert isinstance(await third.expect(p.Welcome), p.Welcome)


def test_the_access_log_hides_invites_anywhere_in_the_path_and_cannot_be_forged() -> None:
    assert "SECRET" not in redact("//view/SECRETSECRETSECRET")  # a 404, but the token is real
    assert "SECRET" not in redact("/static/../view/SECRETSECRETSECRET/x")
    # The path is percent-decoded: %0A would start a forged line of its own in the log.
    line = redact("/x\n1.2.3.4 POST /login 200 1.0 ms\r\x1b[2J")
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert redact("/api/v1/health") == "/api/v1/health"
