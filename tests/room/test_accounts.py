"""Admin accounts over real HTTP: login, sessions, cookies, CSRF, login rate limits."""

from __future__ import annotations

import asyncio
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from appliance.room.app import make_app, serving, tls_context
from appliance.room.passwords import ITERATIONS, hash_password, verify_password
from appliance.room.services import SERVICES

from .helpers import PASSWORD, Browser, Room, csrf_of, room_config, running_room


def test_password_hash_is_pbkdf2_with_at_least_600000_iterations() -> None:
    stored = hash_password("a long enough password")
    scheme, iterations, _, _ = stored.split("$")
    assert scheme == "pbkdf2_sha256" and int(iterations) >= 600_000 == ITERATIONS
    assert verify_password("a long enough password", stored)
    assert not verify_password("a long enough passworD", stored)
    assert hash_password("a long enough password") != stored  # salted


async def test_pages_need_a_login(browser: Browser) -> None:
    for path in ("/rooms", "/devices", "/activate?code=BCDF-GHJK"):
        page = await browser.get(path)
        assert page.url.startswith(browser.room.url + "/login?next="), path
        assert 'type="password"' in page.text


async def test_login_sets_a_strict_httponly_session_cookie_and_returns_to_next(browser: Browser) -> None:
    page = await browser.get("/activate?code=BCDF-GHJK")
    async with browser.session.post(
        browser.room.url + "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "next": "/activate?code=BCDF-GHJK",
            "csrf": csrf_of(page.text),
        },
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/activate?code=BCDF-GHJK"
        cookie = resp.headers["Set-Cookie"]
    assert "room_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the https test below
    page = await browser.get("/activate?code=BCDF-GHJK")
    assert 'value="BCDF-GHJK"' in page.text


async def test_wrong_password_and_unknown_user_are_refused_alike(browser: Browser) -> None:
    wrong = await browser.login(password="not the password at all")
    nobody = await browser.login(username="mallory")
    assert wrong.status == nobody.status == 401
    assert "Wrong username or password." in wrong.text and "Wrong username or password." in nobody.text
    assert (await browser.get("/rooms")).url.startswith(browser.room.url + "/login")


async def test_post_without_csrf_token_is_403(admin: Browser) -> None:
    for path, data in [
        ("/rooms", {"name": "Lobby"}),
        ("/logout", {}),
        ("/activate", {"code": "BCDF-GHJK"}),
        ("/login", {"username": "alice", "password": PASSWORD}),
    ]:
        page = await admin.post(path, data)
        assert page.status == 403, path
        page = await admin.post(path, {**data, "csrf": "0" * 64})
        assert page.status == 403, path
    assert "Lobby" not in (await admin.get("/rooms")).text


async def test_csrf_token_is_bound_to_the_session(room: Room, admin: Browser) -> None:
    """A token from another visitor's page is worth nothing here."""
    other = Browser(room)
    try:
        foreign = csrf_of((await other.get("/login")).text)
    finally:
        await other.close()
    page = await admin.post("/rooms", {"name": "Lobby", "csrf": foreign})
    assert page.status == 403


async def test_logout_ends_the_session(admin: Browser) -> None:
    page = await admin.submit("/rooms", "/logout", {})
    assert page.url.endswith("/login")
    assert (await admin.get("/rooms")).url.startswith(admin.room.url + "/login")


async def test_session_expires(room: Room, admin: Browser) -> None:
    room.clock.advance(room.s.config.accounts.session_ttl_s + 1)
    assert (await admin.get("/rooms")).url.startswith(room.url + "/login")


async def test_next_cannot_leave_the_site(browser: Browser) -> None:
    page = await browser.get("/login?next=//evil.example/x")
    assert 'name="next" value="/rooms"' in page.text
    async with browser.session.post(
        browser.room.url + "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "next": "https://evil.example/",
            "csrf": csrf_of(page.text),
        },
        allow_redirects=False,
    ) as resp:
        assert resp.headers["Location"] == "/rooms"


async def test_login_rate_limit_per_account(tmp_path: Path) -> None:
    config = room_config(tmp_path, accounts={"login_failures_per_user": 3, "login_per_address_per_min": 1000})
    async with running_room(config) as room:
        room.add_admin()
        browser = Browser(room)
        try:
            for _ in range(3):
                assert (await browser.login(password="wrong wrong wrong")).status == 401
            # Even the right password is refused now: the account is throttled, not the guess.
            page = await browser.login()
            assert page.status == 429
            assert "Too many wrong passwords" in page.text
            room.clock.advance(15 * 60)
            assert (await browser.login()).status == 200
        finally:
            await browser.close()


async def test_login_rate_limit_per_address_and_overall(tmp_path: Path) -> None:
    config = room_config(
        tmp_path,
        accounts={"login_per_address_per_min": 2, "login_overall_per_min": 3, "login_failures_per_user": 100},
    )
    async with running_room(config) as room:
        room.add_admin()
        first, second = Browser(room, "127.0.0.1"), Browser(room, "127.0.0.2")
        try:
            assert (await first.login(password="wrong wrong wrong")).status == 401
            assert (await first.login(password="wrong wrong wrong")).status == 401
            limited = await first.login()
            assert limited.status == 429 and "from your address" in limited.text
            assert int(limited.headers["Retry-After"]) >= 1
            # Another address has its own allowance, but the overall one is nearly spent.
            assert (await second.login(password="wrong wrong wrong")).status == 401
            assert (await second.login()).status == 429
        finally:
            await first.close()
            await second.close()


async def test_cookies_are_secure_under_tls(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(  # noqa: ASYNC221 - a one-off before the server starts
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    config = room_config(tmp_path, service={"tls_cert": str(cert), "tls_key": str(key)})
    app = make_app(config)
    app[SERVICES].accounts.add_admin("alice", PASSWORD, time.time())
    async with serving(app, "127.0.0.1", 0, tls_context(config)) as url:
        assert url.startswith("https://")
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(
            cookie_jar=jar, connector=aiohttp.TCPConnector(ssl=False)
        ) as session:
            async with session.get(url + "/login") as resp:
                assert "Secure" in resp.headers["Set-Cookie"]  # the pre-session cookie
                token = csrf_of(await resp.text())
            async with session.post(
                url + "/login",
                data={"username": "alice", "password": PASSWORD, "csrf": token},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
                cookie = resp.headers["Set-Cookie"]
        assert "room_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie


async def test_admin_pages_carry_a_strict_content_security_policy(admin: Browser) -> None:
    page = await admin.get("/rooms")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "<script>" not in page.text and not re.search(r"\son[a-z]+=", page.text)


def test_admin_add_reads_the_password_from_stdin_and_the_database_is_private(tmp_path: Path) -> None:
    cfg = tmp_path / "room.toml"
    db = tmp_path / "db" / "room.db"
    cfg.write_text(f'[service]\ndatabase = "{db}"\n')

    def add(name: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appliance", "room", "admin", "add", name, "--config", str(cfg)],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = add("alice", PASSWORD)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    again = add("alice", PASSWORD)
    assert again.returncode == 1 and "exists already" in again.stderr
    short = add("bob", "short")
    assert short.returncode == 1 and "at least 12" in short.stderr


@pytest.mark.parametrize("name", ["", "Alice Smith", "x" * 65, "-dash"])
def test_usernames_are_checked(tmp_path: Path, name: str) -> None:
    from appliance.room.accounts import AccountError, Accounts
    from appliance.room.db import open_database

    accounts = Accounts(open_database(tmp_path / "room.db"))
    with pytest.raises(AccountError):
        accounts.add_admin(name, PASSWORD, 0.0)


async def test_malformed_form_bodies_are_4xx_never_5xx(admin: Browser) -> None:
    url = admin.room.url
    bodies: list[tuple[str, bytes]] = [
        ("multipart/form-data; boundary=xyz", b"--xyz\r\ngarbage without headers\r\n--xyz--"),
        ("multipart/form-data", b"no boundary at all"),
        ("application/x-www-form-urlencoded", b"csrf=%ZZ&name=%"),
        ("application/x-www-form-urlencoded", b"\xff\xfe\xfd"),
        ("application/x-www-form-urlencoded", b"name=" + b"x" * 100_000),
        ("text/plain", b"whatever"),
    ]
    for path in ("/login", "/rooms", "/activate", "/activate/confirm", "/logout"):
        for content_type, body in bodies:
            async with admin.session.post(
                url + path, data=body, headers={"Content-Type": content_type}
            ) as resp:
                assert 400 <= resp.status < 500, (path, content_type, resp.status)


async def test_next_with_tabs_or_newlines_cannot_leave_the_site(admin: Browser) -> None:
    """Browsers drop tabs and newlines from a Location (WHATWG URL parsing): "/<TAB>/evil.example"
    became "//evil.example", another site, after logging in."""
    for target in ["/%09/evil.example/x", "/%0a/evil.example", "/%0d%0a/evil.example", "/\\evil"]:
        async with admin.session.get(admin.room.url + f"/login?next={target}", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/rooms", (target, resp.headers)


async def test_a_cookie_that_is_not_utf8_gets_a_fresh_one_not_a_500(room: Room) -> None:
    """Header bytes that are not UTF-8 reach the handler as lone surrogates; a pre-session cookie
    like that made the CSRF signature raise UnicodeEncodeError: a 500 on every page."""
    host, port = room.url.removeprefix("http://").split(":")
    for cookie in [b"room_pre=\xff\xfe", b"room_session=\xff; room_pre=\xc3"]:
        reader, writer = await asyncio.open_connection(host, int(port))
        request = b"GET /login HTTP/1.1\r\nHost: x\r\nCookie: " + cookie
        writer.write(request + b"\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        head = answer.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert re.search(rb"Set-Cookie: room_pre=[A-Za-z0-9_-]+;", head), head


async def test_concurrent_wrong_passwords_cannot_outrun_the_account_limit(tmp_path: Path) -> None:
    """The per-account limit was checked before the password (checked off the event loop) and
    charged after it, so guesses sent at once all passed the check: twelve wrong passwords
    were tried against an account that allows three."""
    config = room_config(tmp_path, accounts={"login_failures_per_user": 3, "login_per_address_per_min": 1000})
    async with running_room(config) as room:
        room.add_admin()
        browser = Browser(room)
        try:
            page = await browser.get("/login")
            form = {"username": "alice", "password": "wrong wrong wrong", "csrf": csrf_of(page.text)}
            pages = await asyncio.gather(*(browser.post("/login", form) for _ in range(12)))
            assert sorted(p.status for p in pages) == [401] * 3 + [429] * 9
        finally:
            await browser.close()
