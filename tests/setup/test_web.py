"""The setup daemon over HTTP, without a browser: access control on every route, CSRF, rate
limits, and each page's work against the bus, the config file, events.db, the frame ring."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import struct
import time
import tomllib
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yarl

from appliance.bus.framering import FrameRingWriter, ring_path
from appliance.bus.topics import (
    CalibrateParams,
    CalibrateResult,
    Empty,
    Health,
    Ok,
    PairingStart,
    PairingStatus,
    SetupCode,
    ThermalFrame,
    ThermalInterrupt,
)
from appliance.camera import PREVIEW_FORMAT, PREVIEW_RING
from appliance.screening.events import Draft, EventStore, path_in
from appliance.setup import auth
from appliance.setup.app import COOKIE, DEVICE_COOKIE

from .conftest import PASSWORD, Rig, Web, csrf_of, first_use, login, running

# Routes anyone may reach: the way in, and the page's own script and style.
PUBLIC = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/first-use"),
    ("POST", "/first-use"),
    ("POST", "/first-use/code"),
}


@pytest.fixture
async def web(rig: Rig) -> AsyncIterator[Web]:
    w = Web(rig.url)
    yield w
    await w.close()


@pytest.fixture
async def admin(rig: Rig, web: Web) -> Web:
    await first_use(rig, web)
    return web


def routes(rig: Rig) -> list[tuple[str, str]]:
    out = []
    for route in rig.server.runner.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path")
        if path is None or route.method == "HEAD":
            continue  # the static directory
        out.append((route.method, path))
    return sorted(set(out))


async def test_every_endpoint_refuses_an_unauthenticated_request(rig: Rig, web: Web) -> None:
    checked = 0
    for method, path in routes(rig):
        if (method, path) in PUBLIC:
            continue
        if method == "GET":
            status, _, r = await web.get(path)
            if path in ("/ws", "/snapshot.png", "/events.csv"):
                assert status == 401, path
            else:
                assert status == 303 and r.headers["Location"] == "/login", (path, status)
        elif path == "/logout":
            # Logging out without a session is done already: the login page, nothing else.
            status, _, r = await web.post(path, {"csrf": "guess"})
            assert status == 303 and r.headers["Location"] == "/login", (path, status)
        else:
            status, _, _ = await web.post(path, {"csrf": "guess"})
            assert status == 401, (method, path, status)
        checked += 1
    assert checked >= 15
    # A forged cookie is no session either.
    web.session.cookie_jar.update_cookies({COOKIE: "forged"})
    status, _, _ = await web.get("/status")
    assert status == 303


async def test_every_post_without_its_csrf_token_is_refused(rig: Rig, admin: Web) -> None:
    status, html, _ = await admin.get("/status")
    assert status == 200
    token = csrf_of(html)
    posts = [p for m, p in routes(rig) if m == "POST"]
    assert len(posts) >= 10
    for path in posts:
        for data in ({}, {"csrf": token + "x"}):
            status, text, _ = await admin.post(path, data)
            assert status == 403, (path, status, text)
    # Still logged in: nothing above was done.
    assert (await admin.get("/status"))[0] == 200


async def test_a_cross_origin_post_is_refused_even_with_the_token(admin: Web) -> None:
    token = csrf_of((await admin.get("/settings"))[1])
    status, text, _ = await admin.post(
        "/maintenance/reboot", {"csrf": token, "confirm": "yes"}, headers={"Origin": "http://evil.example"}
    )
    assert status == 403 and "cross-origin" in text


async def test_first_use_shows_the_code_on_the_screen_then_clears_it(rig: Rig, web: Web) -> None:
    status, _, r = await web.get("/login")
    assert status == 303 and r.headers["Location"] == "/first-use"
    await first_use(rig, web)
    # setup.code is retained: the screen, subscribing now, sees no code.
    sub = rig.bus.subscribe("setup.code")
    msg = (await sub.get(timeout=5)).msg
    assert isinstance(msg, SetupCode) and msg.code is None
    path = rig.state_dir / auth.PASSWORD_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD not in path.read_text()
    # First use is over: its pages send to the login.
    status, _, r = await web.get("/first-use")
    assert status == 303 and r.headers["Location"] == "/login"


async def test_first_use_refuses_a_wrong_code_and_a_weak_password(rig: Rig, web: Web) -> None:
    token = await web.csrf("/first-use")
    await web.post("/first-use/code", {"csrf": token})
    live = rig.server.ctx.codes.current()
    assert live is not None
    wrong = "000000" if live[0] != "000000" else "111111"
    token = await web.csrf("/first-use")
    status, html, _ = await web.post(
        "/first-use", {"csrf": token, "code": live[0], "password": "short", "confirm": "short"}
    )
    assert status == 400 and "at least 10" in html
    assert rig.server.ctx.codes.current() is not None, "a weak password does not use up the code"
    status, html, _ = await web.post(
        "/first-use", {"csrf": token, "code": wrong, "password": PASSWORD, "confirm": PASSWORD}
    )
    assert status == 401 and "Wrong or expired setup code" in html
    assert not (rig.state_dir / auth.PASSWORD_FILE).exists()


async def test_logins_are_rate_limited(rig: Rig, admin: Web) -> None:
    other = Web(rig.url)
    try:
        for _ in range(rig.server.ctx.limiter.per_client):
            assert await login(other, "wrong password!") == 401
        status = await login(other, PASSWORD)
        assert status == 429, "even the right password waits once the limit is reached"
        status, _, r = await other.post("/login", {"csrf": await other.csrf("/login"), "password": PASSWORD})
        assert status == 429 and int(r.headers["Retry-After"]) > 0
    finally:
        await other.close()


async def test_session_cookie_attributes(rig: Rig) -> None:
    web = Web(rig.url)
    try:
        async with web.session.get(rig.url + "/first-use", allow_redirects=False) as r:
            cookie = r.cookies[COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
            assert not cookie["secure"], "plain HTTP: a Secure cookie would never come back"
    finally:
        await web.close()


async def test_logout_ends_the_session(admin: Web) -> None:
    token = csrf_of((await admin.get("/status"))[1])
    status, _, r = await admin.post("/logout", {"csrf": token})
    assert status == 303 and r.headers["Location"] == "/login"
    assert (await admin.get("/status"))[0] == 303
    # Logging out again (a second tab, or a session that already timed out): still the login
    # page, not a bare "log in first" error.
    status, _, r = await admin.post("/logout", {"csrf": token})
    assert status == 303 and r.headers["Location"] == "/login"


async def test_settings_validated_written_atomically_comments_kept(rig: Rig, admin: Web) -> None:
    before = rig.config_file.read_bytes()
    status, html, _ = await admin.get("/settings")
    assert status == 200 and 'value="38.0"' in html
    token = csrf_of(html)
    form = {
        "csrf": token,
        "screening.threshold_c": "37.9",
        "screening.hysteresis_c": "0.2",
        "screening.units": "C",
        "screening.distance_min_m": "0.3",
        "screening.distance_max_m": "0.55",
        "screen.language": "en",
        "screen.sounds": "on",
        "gpio.relay": "",
        "gpio.relay_open_s": "3.0",
    }
    bad = dict(form, **{"screening.threshold_c": "44", "screening.distance_min_m": "abc"})
    status, html, _ = await admin.post("/settings", bad)
    assert status == 400 and "Nothing saved" in html
    assert 'data-error="screening.distance_min_m"' in html
    assert rig.config_file.read_bytes() == before
    status, html, _ = await admin.post("/settings", dict(form, **{"screen.language": "de"}))
    assert status == 200 and "Saved: screening.threshold_c, screen.language" in html
    assert "Takes effect when the screening daemon restarts" in html and "restart-screening" in html
    text = rig.config_file.read_text()
    assert "threshold_c = 37.9  # degC" in text and "# Our site's policy." in text
    assert tomllib.loads(text)["screen"]["language"] == "de"


async def test_pairing_through_the_bus(rig: Rig, admin: Web) -> None:
    token = csrf_of((await admin.get("/pairing"))[1])
    status, html, _ = await admin.post("/pairing/start", {"csrf": token, "room_url": "ftp://x"})
    assert status == 400 and "http://" in html
    status, html, _ = await admin.post(
        "/pairing/start", {"csrf": token, "room_url": "https://rooms.example.org"}
    )
    assert status == 502 and "publisher daemon" in html, "nobody serves pairing.start yet"
    asked: list[str | None] = []

    async def start(params: PairingStart) -> Ok:
        asked.append(params.room_url)
        rig.bus.publish_nowait(
            "pairing.status",
            PairingStatus(
                state="code",
                user_code="WDJB-MJHT",
                expires_at=time.time() + 600,
                verification_uri_complete="https://rooms.example.org/a?c=WDJB-MJHT",
            ),
        )
        return Ok()

    async def unpair(params: Empty) -> Ok:
        rig.bus.publish_nowait("pairing.status", PairingStatus(state="unpaired"))
        return Ok()

    rig.bus.serve("pairing.start", start)
    rig.bus.serve("pairing.unpair", unpair)
    await asyncio.sleep(0.1)
    status, html, _ = await admin.post(
        "/pairing/start", {"csrf": token, "room_url": "https://rooms.example.org"}
    )
    assert status == 200 and "Pairing started" in html and asked == ["https://rooms.example.org"]
    for _ in range(50):
        html = (await admin.get("/pairing"))[1]
        if "WDJB-MJHT" in html:
            break
        await asyncio.sleep(0.05)
    assert 'data-field="pairing.user_code">WDJB-MJHT<' in html
    status, html, _ = await admin.post("/pairing/unpair", {"csrf": token})
    assert status == 400 and "tick the box" in html
    status, html, _ = await admin.post("/pairing/unpair", {"csrf": token, "confirm": "yes"})
    assert status == 200 and "Unpaired." in html


async def test_calibration_errors_are_clear(rig: Rig, admin: Web) -> None:
    token = csrf_of((await admin.get("/calibration"))[1])
    for ref, problem in (("hot", "as a number"), ("50", "between 30 and 45")):
        status, html, _ = await admin.post("/calibration", {"csrf": token, "reference": ref, "frames": "5"})
        assert status == 400 and problem in html
    status, html, _ = await admin.post("/calibration", {"csrf": token, "reference": "36.8", "frames": "5"})
    assert status == 502 and "screening daemon is not running" in html

    async def calibrate(params: CalibrateParams) -> CalibrateResult:
        raise ValueError("no usable target in the window: nobody at the mark")

    rig.bus.serve("screening.calibrate", calibrate)
    await asyncio.sleep(0.1)
    status, html, _ = await admin.post("/calibration", {"csrf": token, "reference": "36,8", "frames": "5"})
    assert status == 502 and "nobody at the mark" in html


async def test_maintenance_off_a_kiosk_does_nothing_and_says_what_it_would(rig: Rig, admin: Web) -> None:
    assert not rig.server.ctx.system.active
    (rig.state_dir / "calibration.json").write_text("{}")
    token = csrf_of((await admin.get("/maintenance"))[1])
    status, html, _ = await admin.post(
        "/maintenance/restart", {"csrf": token, "daemon": "screening", "confirm": "yes"}
    )
    assert status == 200 and "would run `systemctl --no-block restart appliance-screening.service`" in html
    status, html, _ = await admin.post("/maintenance/restart", {"csrf": token, "daemon": "screening"})
    assert status == 400
    status, html, _ = await admin.post("/maintenance/reboot", {"csrf": token, "confirm": "yes"})
    assert status == 200 and "Nothing was done" in html
    status, html, _ = await admin.post("/maintenance/factory-reset", {"csrf": token, "confirm": "reset"})
    assert status == 400 and "type RESET" in html
    status, html, _ = await admin.post("/maintenance/factory-reset", {"csrf": token, "confirm": "RESET"})
    assert status == 200 and "calibration.json" in html and "Nothing was done" in html
    assert (rig.state_dir / "calibration.json").exists() and rig.config_file.exists()


async def test_password_change_logs_out_every_other_session(rig: Rig, admin: Web) -> None:
    other = Web(rig.url)
    try:
        assert await login(other) == 303
        token = csrf_of((await admin.get("/maintenance"))[1])
        new = "a new password 2"
        status, html, _ = await admin.post(
            "/maintenance/password", {"csrf": token, "current": "nope", "password": new, "confirm": new}
        )
        assert status == 401
        status, html, _ = await admin.post(
            "/maintenance/password", {"csrf": token, "current": PASSWORD, "password": new, "confirm": new}
        )
        assert status == 200 and "Password changed" in html
        assert (await admin.get("/status"))[0] == 200, "this session goes on"
        assert (await other.get("/status"))[0] == 303, "the other one ended"
        # Browsers known under the old password are not any more; this one is, anew.
        for i in range(rig.server.ctx.limiter.overall):
            rig.server.ctx.limiter.failed(f"2001:db8:{i}::/64")
        assert await login(other, new) == 429
        token = csrf_of((await admin.get("/status"))[1])
        assert (await admin.post("/logout", {"csrf": token}))[0] == 303
        assert await login(admin, new) == 303
    finally:
        await other.close()


async def test_events_table_chart_and_csv(rig: Rig, admin: Web) -> None:
    now = time.time()
    with EventStore.open(path_in(rig.state_dir)) as store:
        for i, (result, est) in enumerate(
            [("normal", 36.5), ("elevated", 38.6), ("retry", None), ("normal", 36.9)]
        ):
            store.append(
                Draft(
                    wall_ts=now - 3600 + i * 60,
                    start=i,
                    end=i + 1,
                    result=result,
                    estimate_c=est,
                    confidence=0.9,
                    threshold_c=38.0,
                )  # type: ignore[arg-type]
            )
    status, html, _ = await admin.get("/events")
    assert status == 200 and "4 events match" in html
    assert html.count('class="mark normal"') == 2 and html.count('class="mark elevated"') == 1
    assert "<svg" in html and "threshold" in html
    status, html, _ = await admin.get("/events?result=elevated")
    assert "1 events match" in html and "38.6 °C" in html
    status, html, _ = await admin.get("/events?alerts=1")
    assert "1 events match" in html
    status, html, _ = await admin.get("/events?since=not-a-date")
    assert "not a date" in html
    async with admin.session.get(rig.url + "/events.csv?result=normal") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in r.headers["Content-Disposition"]
        lines = (await r.text()).strip().splitlines()
    assert lines[0].startswith("seq,wall_time_utc,topic,result,estimate_c")
    assert [line.split(",")[3] for line in lines[1:]] == ["normal", "normal"]


async def test_a_damaged_events_database_is_a_page_that_says_so(rig: Rig, admin: Web) -> None:
    """Pages of events.db damaged past its first ones (an SD card going bad): the database
    opens, reading its rows fails part way. The page says the events cannot be read, as it
    does for a database that does not open, instead of an unhandled error."""
    path = path_in(rig.state_dir)
    with EventStore.open(path) as store:
        for i in range(400):  # several pages of rows
            store.append(
                Draft(
                    wall_ts=1e9 + i,
                    start=i,
                    end=i + 1,
                    result="normal",
                    estimate_c=36.6,
                    confidence=0.9,
                    threshold_c=38.0,
                )  # type: ignore[arg-type]
            )
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[-3 * page : -page] = b"\xa5" * (2 * page)  # table pages near the end, not the schema
    path.write_bytes(bytes(data))
    for url in ("/events", "/events.csv"):
        async with admin.session.get(rig.url + url) as r:
            text = await r.text()
        assert r.status == 500 and "cannot be read" in text, (url, r.status, text[:300])


async def test_events_without_a_database(admin: Web) -> None:
    status, html, _ = await admin.get("/events")
    assert status == 200 and "0 events match" in html and "No readings" in html


async def test_snapshot_is_a_png_of_the_preview_ring(rig: Rig, admin: Web) -> None:
    assert (await admin.get("/snapshot.png"))[0] == 404
    writer = FrameRingWriter.create(ring_path(PREVIEW_RING, rig.run_dir), 8, 4, PREVIEW_FORMAT)
    try:
        frame = np.zeros((4, 8, 3), np.uint8)
        frame[..., 2] = 250  # R, in the ring's B, G, R order
        writer.write(frame, 1.0)
        async with admin.session.get(rig.url + "/snapshot.png") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/png"
            png = await r.read()
    finally:
        writer.close()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (8, 4)
    idat = png.index(b"IDAT")
    (length,) = struct.unpack(">I", png[idat - 4 : idat])
    rows = zlib.decompress(png[idat + 4 : idat + 4 + length])
    assert rows[0] == 0 and tuple(rows[1:4]) == (250, 0, 0)


async def test_logs_page_reads_log_files(run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # as setup_logging does in the daemon
    logs = run_dir / "logs"
    logs.mkdir()
    (logs / "thermal.log").write_text(
        "2026-01-01 thermal[1] WARNING x: sensor slow\n2026-01-01 thermal[1] INFO x: ok\n"
    )
    async with running(run_dir, extra=f'log_dir = "{logs}"') as rig:
        web = Web(rig.url)
        try:
            await first_use(rig, web)
            status, html, _ = await web.get("/logs?level=warning")
            assert status == 200 and "sensor slow" in html and "INFO x: ok" not in html
            status, html, _ = await web.get("/logs?daemon=thermal&level=all")
            assert "INFO x: ok" in html
            # This daemon's own lines, always there.
            assert "setup password set" in html
        finally:
            await web.close()


async def test_unreadable_logs_are_a_notice_not_an_error(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal or log file that cannot be read (rotated away, damaged, no permission): the
    page says so and still shows this daemon's own lines."""
    from appliance.setup import logs as sources

    caplog.set_level(logging.INFO)
    logs = run_dir / "logs"
    logs.mkdir()

    def unreadable(*args: object) -> list[object]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sources, "read_files", unreadable)
    async with running(run_dir, extra=f'log_dir = "{logs}"') as rig:
        web = Web(rig.url)
        try:
            await first_use(rig, web)
            status, html, _ = await web.get("/logs")
            assert status == 200 and "Cannot read the logs (Permission denied)" in html
            assert "setup password set" in html
        finally:
            await web.close()


async def test_status_and_about(rig: Rig, admin: Web) -> None:
    rig.bus.publish_nowait(
        "health.thermal",
        Health(
            daemon="thermal",
            state="degraded",
            pid=1,
            started_ts=time.monotonic() - 100,
            status="sensor <slow>",
        ),
    )
    for _ in range(50):
        html = (await admin.get("/status"))[1]
        if "sensor &lt;slow&gt;" in html:
            break
        await asyncio.sleep(0.05)
    assert 'data-field="daemon.thermal.state">degraded<' in html
    assert "sensor &lt;slow&gt;" in html, "escaped"
    assert 'data-field="daemon.camera.state">not heard from<' in html
    assert 'data-field="daemon.bus.state">reachable<' in html
    status, html, _ = await admin.get("/about")
    assert status == 200 and "appliance 0." in html and "device id" in html


async def test_websocket_needs_a_session_and_streams_live_data(rig: Rig, admin: Web) -> None:
    anon = aiohttp.ClientSession()
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await anon.ws_connect(rig.url + "/ws", headers={"Origin": rig.url})
        assert err.value.status == 401
    finally:
        await anon.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await admin.session.ws_connect(rig.url + "/ws", headers={"Origin": "http://evil.example"})
    assert err.value.status == 403
    ws = await admin.session.ws_connect(rig.url + "/ws", headers={"Origin": rig.url})
    try:
        first = json.loads((await ws.receive(timeout=5)).data)
        assert first["type"] == "status" and "daemon.setup.state" in first["fields"]
        pixels = [20.0 + i / 10 for i in range(64)]
        rig.bus.publish_nowait(
            "thermal.interrupt", ThermalInterrupt(mask=(1 << 63) | 1, mode="absolute", upper_c=30, lower_c=0)
        )
        rig.bus.publish_nowait(
            "thermal.frame", ThermalFrame(pixels=pixels, thermistor=25.0, rate_hz=10.0, frame_seq=7)
        )
        async with asyncio.timeout(5):
            while True:
                msg = json.loads((await ws.receive()).data)
                if msg["type"] == "thermal" and msg["frame_seq"] == 7:
                    break
        assert msg["pixels"] == pixels and msg["mask"] == [0, 63]
        # Logging out elsewhere ends the socket.
        rig.server.ctx.sessions.drop_all()
        async with asyncio.timeout(10):
            while not ws.closed:
                await ws.receive()
        assert ws.close_code == 4401
    finally:
        await ws.close()


async def test_https_with_a_self_signed_certificate(run_dir: Path) -> None:
    import ssl

    async with running(run_dir, tls=True) as rig:
        assert rig.url.startswith("https://")
        cert = rig.state_dir / "setup-tls" / "cert.pem"
        key = rig.state_dir / "setup-tls" / "key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        # The certificate verifies as itself for 127.0.0.1 (its SAN), as a browser would once trusted.
        ctx = ssl.create_default_context(cafile=str(cert))
        web = Web(rig.url, connector=aiohttp.TCPConnector(ssl=ctx))
        try:
            async with web.session.get(rig.url + "/first-use", allow_redirects=False) as r:
                assert r.status == 200
                assert r.cookies[COOKIE]["secure"], "Secure under TLS"
        finally:
            await web.close()


async def test_a_non_ascii_csrf_token_is_a_403_not_a_500(rig: Rig, web: Web) -> None:
    await web.csrf("/first-use")  # a pre-login session
    status, _, _ = await web.post("/first-use/code", {"csrf": "é"})
    assert status == 403
    async with web.session.post(
        rig.url + "/first-use/code", headers={"X-CSRF-Token": "\xe9"}, allow_redirects=False
    ) as r:
        assert r.status == 403
    assert rig.server.ctx.codes.current() is None


async def test_concurrent_wrong_logins_cannot_outrun_the_rate_limit(rig: Rig, admin: Web) -> None:
    """Wrong passwords sent all at once, before any of them is counted: the limit holds."""
    other = Web(rig.url)
    try:
        token = await other.csrf("/login")
        tries = rig.server.ctx.limiter.per_client + 5
        results = await asyncio.gather(
            *(other.post("/login", {"csrf": token, "password": f"wrong password {i}"}) for i in range(tries))
        )
        statuses = [status for status, _, _ in results]
        assert statuses.count(401) <= rig.server.ctx.limiter.per_client, statuses
        assert statuses.count(429) >= tries - rig.server.ctx.limiter.per_client, statuses
    finally:
        await other.close()


async def test_a_malformed_room_url_is_a_400_not_a_500(admin: Web) -> None:
    token = csrf_of((await admin.get("/pairing"))[1])
    for url in ("http://[::1", "https://rooms.example.org:99999", "http://host:port"):
        status, html, _ = await admin.post("/pairing/start", {"csrf": token, "room_url": url})
        assert status == 400, (url, status)
        assert "Not started" in html


async def test_asking_again_for_the_live_code_schedules_no_more_timers(
    rig: Rig, web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone on the network may ask for a code before first use; asking again returns the
    same live code and must not add a timer (600 s each) per request."""
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    real = loop.call_later

    def counted(delay: float, callback: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
        if delay > 60:  # the code's expiry, not aiohttp's own keep-alive and timeout timers
            timers.append(delay)
        return real(delay, callback, *args, **kw)

    monkeypatch.setattr(loop, "call_later", counted)
    token = await web.csrf("/first-use")
    for _ in range(20):
        status, _, _ = await web.post("/first-use/code", {"csrf": token})
        assert status == 303
    assert len(timers) == 1, timers


async def test_an_open_live_page_does_not_keep_an_idle_session_alive(
    rig: Rig, admin: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WebSocket checks its session every few seconds; that check must not count as the
    technician's activity, or a status page left open never reaches the idle timeout."""
    from appliance.setup.pages import live

    monkeypatch.setattr(live, "SESSION_CHECK_S", 0.05)
    sessions = rig.server.ctx.sessions
    now = [time.monotonic()]
    sessions.clock = lambda: now[0]
    assert (await admin.get("/status"))[0] == 200  # the last real activity
    ws = await admin.session.ws_connect(rig.url + "/ws", headers={"Origin": rig.url})
    try:
        await ws.receive(timeout=5)  # the first status
        now[0] += auth.SESSION_IDLE_S - 60
        await asyncio.sleep(0.3)  # the socket checks its session several times meanwhile
        assert not ws.closed
        now[0] += 120  # 31 minutes after the last page was asked for
        async with asyncio.timeout(5):
            while not ws.closed:
                await ws.receive()
        assert ws.close_code == 4401
    finally:
        await ws.close()
    assert (await admin.get("/status"))[0] == 303


async def test_with_the_bus_down_bus_actions_answer_at_once_and_say_so(rig: Rig, admin: Web) -> None:
    """Calibrating 600 frames allows the capture almost three minutes; with no bus at all the
    technician must not wait that long to be told the capture timed out."""
    pages = {
        "/calibration": {"reference": "36.8", "frames": "600"},
        "/pairing/start": {"room_url": "https://rooms.example.org"},
        "/pairing/unpair": {"confirm": "yes"},
    }
    token = csrf_of((await admin.get("/calibration"))[1])
    await rig.broker.close()
    async with asyncio.timeout(5):
        while rig.server.ctx.bus.connected:  # noqa: ASYNC110 - the client has no event for a loss
            await asyncio.sleep(0.02)
    for path, form in pages.items():
        async with asyncio.timeout(10):
            status, html, _ = await admin.post(path, {"csrf": token, **form})
        assert status == 503, (path, status)
        assert "the bus is not reachable" in html, path


async def test_a_file_the_page_cannot_edit_keeps_the_technicians_input(rig: Rig, admin: Web) -> None:
    """A key the technician wrote quoted ("threshold_c" = ...) is valid TOML the line editor
    cannot rewrite safely, so nothing is saved. The page must say so as a failure, and show
    the form as it was submitted, not the file's values, or every change typed is lost."""
    text = rig.config_file.read_text().replace("threshold_c = 38.0", '"threshold_c" = 38.0')
    rig.config_file.write_text(text)
    token = csrf_of((await admin.get("/settings"))[1])
    form = {
        "csrf": token,
        "screening.threshold_c": "37.6",
        "screening.hysteresis_c": "0.35",
        "screening.units": "C",
        "screening.distance_min_m": "0.3",
        "screening.distance_max_m": "0.55",
        "screen.language": "fr",
        "gpio.relay": "",
        "gpio.relay_open_s": "3.0",
    }
    status, html, _ = await admin.post("/settings", form)
    assert status == 500 and "Nothing saved" in html
    assert 'name="screening.threshold_c" id="screening-threshold-c" value="37.6"' in html
    assert 'name="screening.hysteresis_c" id="screening-hysteresis-c" value="0.35"' in html
    assert '<option value="fr" selected>' in html
    assert rig.config_file.read_text() == text


async def test_with_the_bus_down_first_use_says_the_code_cannot_reach_the_screen(rig: Rig, web: Web) -> None:
    """The code travels to the kiosk's screen over the bus: with no bus, the page must not send
    the technician to look for a code the screen cannot show."""
    await rig.broker.close()
    async with asyncio.timeout(5):
        while rig.server.ctx.bus.connected:  # noqa: ASYNC110 - the client has no event for a loss
            await asyncio.sleep(0.02)
    token = await web.csrf("/first-use")
    status, _, _ = await web.post("/first-use/code", {"csrf": token})
    assert status == 303
    status, html, _ = await web.get("/first-use")
    assert status == 200 and "The bus is not reachable" in html
    assert rig.server.ctx.codes.current() is not None, "the code is kept for when the bus is back"


async def test_on_a_kiosk_the_status_page_shows_unit_states_from_the_cgroups_and_says_so(
    rig: Rig, admin: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemctl cannot reach PID 1 as the appliance user: the states come from the cgroups."""
    ctx = rig.server.ctx
    monkeypatch.setattr(ctx.system, "active", True)
    ctx.live.set_units(
        {
            "thermal": {"Source": "cgroup", "Processes": "yes"},
            "camera": {"Source": "cgroup", "Processes": "no"},
        }
    )
    html = (await admin.get("/status"))[1]
    assert 'data-field="daemon.camera.unit">not running<' in html
    assert 'data-field="daemon.thermal.unit">running, no heartbeat yet<' in html
    assert 'data-field="units.source">Unit states: systemd cannot be asked' in html


async def test_the_screens_code_expiry_follows_a_wall_clock_that_was_set(
    rig: Rig, web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTP's first sync on a Pi moves the wall clock by months: the code stays valid for its
    10 minutes, and the expiry sent to the screen (wall time) moves with the clock."""
    ctx = rig.server.ctx
    token = await web.csrf("/first-use")
    assert (await web.post("/first-use/code", {"csrf": token}))[0] == 303
    assert not ctx.republish_code_if_clock_jumped(), "the clock did not move"
    live = ctx.codes.current()
    assert live is not None
    jump = 90 * 86400.0
    monkeypatch.setattr(ctx.codes, "wall", lambda: time.time() + jump)
    sub = rig.bus.subscribe("setup.code")
    try:
        retained = (await sub.get(timeout=5)).msg
        assert isinstance(retained, SetupCode) and retained.code == live[0]
        assert retained.expires_at == pytest.approx(live[1], abs=5.0)
        assert ctx.republish_code_if_clock_jumped()
        msg = (await sub.get(timeout=5)).msg
        assert isinstance(msg, SetupCode) and msg.code == live[0]
        assert msg.expires_at == pytest.approx(live[1] + jump, abs=5.0)
        assert not ctx.republish_code_if_clock_jumped(), "once per jump"
    finally:
        sub.close()


async def test_a_browser_that_logged_in_before_is_not_locked_out_by_others_failures(
    rig: Rig, admin: Web
) -> None:
    """Wrong passwords from many addresses fill the overall cap: a new browser waits, but the
    technician's browser, which logged in here before (its device cookie), still gets in."""
    ctx = rig.server.ctx
    cookie = admin.session.cookie_jar.filter_cookies(yarl.URL(rig.url)).get(DEVICE_COOKIE)
    assert cookie is not None, "first use gave this browser a device cookie"
    token = csrf_of((await admin.get("/status"))[1])
    assert (await admin.post("/logout", {"csrf": token}))[0] == 303
    for i in range(ctx.limiter.overall):
        ctx.limiter.failed(f"2001:db8:{i}::/64")
    stranger = Web(rig.url)
    try:
        assert await login(stranger) == 429, "the overall cap holds for a browser never seen"
    finally:
        await stranger.close()
    assert await login(admin) == 303


def test_the_rate_limits_key_a_client_by_its_64() -> None:
    """The key every per-client limit uses (logins, setup codes) is made from the peer address."""
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    from appliance.setup.pages import access

    def request(peer: tuple[Any, ...]) -> Any:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            peer if name == "peername" else default
        )
        return make_mocked_request("POST", "/login", transport=transport)

    assert access.client_of(request(("2001:db8:5:6::aaaa", 1234, 0, 0))) == "2001:db8:5:6::/64"
    assert access.client_of(request(("2001:db8:5:6::bbbb", 1235, 0, 0))) == "2001:db8:5:6::/64"
    assert access.client_of(request(("::ffff:10.0.0.9", 1236, 0, 0))) == "10.0.0.9"
