"""The setup page's HTTP endpoints with hypothesis-made requests: every route (and paths beside
them), any method, garbage query strings, form bodies urlencoded, multipart, raw, oversized or
under a wrong content type, garbage cookies, with and without a session, with and without its
CSRF token, from this origin or another.

Properties, on the real app on a real socket (the daemon as tests/setup/conftest.py runs it,
on its own event loop in a thread so the requests here are plain blocking ones):
- never a 5xx, and nothing logged at ERROR;
- without a logged-in session and its CSRF token, nothing changes on disk (the config file
  and the state directory, byte for byte) and no POST gets past 401/403/413/429/400;
- with them, the config file on disk stays one the daemons accept;
- login rate limiting holds: password checks (scrypt) never exceed the limiter's overall
  budget, and afterwards a client is refused even with the right password.

The setup page has no JSON API (only HTML forms, a CSV export, a PNG and a WebSocket), so no
OpenAPI description: these requests are built here instead of by schemathesis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from appliance.bus.topics import CalibrateParams, CalibrateResult, Empty, Ok, PairingStart
from appliance.config import load_config
from appliance.setup.app import COOKIE, MAX_BODY
from appliance.setup.auth import PASSWORD_FILE

from .conftest import PASSWORD, Rig, csrf_of, running

T = TypeVar("T")
pytestmark = [
    pytest.mark.slow,
    # aiohttp warns about a garbage Content-Disposition before refusing it: expected here.
    pytest.mark.filterwarnings("ignore::aiohttp.BadContentDispositionHeader"),
]


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Served:
    """The setup daemon on an event loop in a thread."""

    loop: asyncio.AbstractEventLoop
    rig: Rig
    errors: ErrorLog
    checks: list[int]  # password checks done, one entry each

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.rig.url

    def new_session(self) -> tuple[str, str]:
        """A logged-in session (cookie token, CSRF token), as a login makes."""

        async def make() -> tuple[str, str]:
            token, session = self.rig.server.ctx.sessions.new(authenticated=True)
            return token, session.csrf

        return self.call(make())

    def end_session(self, token: str) -> None:
        """Logged out again: the fuzz must not fill the table (MAX_SESSIONS) with its own."""

        async def drop() -> None:
            self.rig.server.ctx.sessions.drop(token)

        self.call(drop())

    def disk(self) -> dict[str, bytes]:
        files = {str(self.rig.config_file): self.rig.config_file.read_bytes()}
        for path in sorted(self.rig.state_dir.rglob("*")):
            if path.is_file():
                files[str(path)] = path.read_bytes()
        return files


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    with tempfile.TemporaryDirectory(prefix="stf-", dir="/tmp") as d:

        async def start() -> Served:
            rig = await stack.enter_async_context(running(Path(d)))
            ctx = rig.server.ctx
            ctx.system.active = False  # never restart, reboot or reset this machine
            await ctx.set_password(PASSWORD)
            checks: list[int] = []
            real_check = ctx.store.check

            def counted(password: str) -> bool:  # every scrypt run, whichever path asks
                checks.append(1)
                return real_check(password)

            ctx.store.check = counted  # type: ignore[method-assign]

            async def calibrate(params: CalibrateParams) -> CalibrateResult:
                return CalibrateResult(
                    offset_c=0.1, measured_c=params.reference_c - 0.1, frames=params.frames
                )

            async def start_pairing(params: PairingStart) -> Ok:
                return Ok()

            async def unpair(params: Empty) -> Ok:
                return Ok()

            rig.bus.serve("screening.calibrate", calibrate)
            rig.bus.serve("pairing.start", start_pairing)
            rig.bus.serve("pairing.unpair", unpair)
            await asyncio.sleep(0.1)
            return Served(loop, rig, errors, checks)

        s = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
        try:
            yield s
        finally:
            asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(60)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
            logging.getLogger().removeHandler(errors)


# --- requests ----------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/first-use"),
    ("POST", "/first-use"),
    ("POST", "/first-use/code"),
    ("POST", "/logout"),
    ("GET", "/status"),
    ("GET", "/pairing"),
    ("POST", "/pairing/start"),
    ("POST", "/pairing/unpair"),
    ("GET", "/settings"),
    ("POST", "/settings"),
    ("GET", "/calibration"),
    ("POST", "/calibration"),
    ("GET", "/live"),
    ("GET", "/snapshot.png"),
    ("GET", "/ws"),
    ("GET", "/events"),
    ("GET", "/events.csv"),
    ("GET", "/logs"),
    ("GET", "/maintenance"),
    ("POST", "/maintenance/restart"),
    ("POST", "/maintenance/reboot"),
    ("POST", "/maintenance/factory-reset"),
    ("POST", "/maintenance/password"),
    ("GET", "/about"),
    ("GET", "/static/app.css"),
    ("GET", "/static/app.js"),
]
ODD_PATHS = [
    "/static/",
    "/static/../auth.py",
    "/static/%2e%2e/app.py",
    "/static/" + "x" * 300,
    "/static/app.css/x",
    "/settings/",
    "/login%00",
    "/%ff",
    "/" + "a" * 5000,
    "//status",
]
FIELDS = [
    "password",
    "confirm",
    "current",
    "code",
    "room_url",
    "reference",
    "frames",
    "daemon",
    "screening.threshold_c",
    "screening.hysteresis_c",
    "screening.units",
    "screening.distance_min_m",
    "screening.distance_max_m",
    "screen.language",
    "screen.sounds",
    "gpio.relay_enabled",
    "gpio.relay",
    "gpio.relay_open_s",
    "x",
]
QUERY_KEYS = ["result", "since", "until", "alerts", "daemon", "level", "next", "x"]
values = (
    st.text(max_size=30)
    | st.sampled_from(
        [
            "yes",
            "on",
            "RESET",
            "none",
            "C",
            "F",
            "de",
            "37.5",
            "38,2",
            "1e309",
            "nan",
            "-inf",
            "0",
            "-1",
            "23",
            "99",
        ]
    )
    | st.sampled_from(
        ["2024-02-30", "2024-01-01", "elevated", "all", "screening", "https://x.example", "ftp://x"]
    )
    | st.integers(1, 3000).map(lambda n: "9" * n)
    | st.sampled_from([PASSWORD[:-1], "correct horse battery stapler", " " * 300])
)
# Forms each handler would carry out as they are (the password change with the right password).
VALID_FORMS: dict[str, dict[str, str]] = {
    "/settings": {
        "screening.threshold_c": "37.9",
        "screening.hysteresis_c": "0.2",
        "screening.units": "C",
        "screening.distance_min_m": "0.3",
        "screening.distance_max_m": "0.55",
        "screen.language": "en",
        "screen.sounds": "on",
        "gpio.relay": "",
        "gpio.relay_open_s": "3.0",
    },
    "/maintenance/password": {"current": PASSWORD, "password": PASSWORD + "!", "confirm": PASSWORD + "!"},
    "/maintenance/restart": {"daemon": "screening", "confirm": "yes"},
    "/maintenance/reboot": {"confirm": "yes"},
    "/maintenance/factory-reset": {"confirm": "RESET"},
    "/calibration": {"reference": "37.0", "frames": "10"},
    "/pairing/start": {"room_url": "https://rooms.example.org"},
    "/pairing/unpair": {"confirm": "yes"},
    "/first-use": {"code": "123456", "password": PASSWORD, "confirm": PASSWORD},
}
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200).map(str.strip)


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    fields: dict[str, str]
    encoding: str  # urlencoded | multipart | cut-multipart | raw | json | oversized | none
    content_type: str | None
    origin: str  # same | none | other | null
    csrf_in_header: bool
    cookie_junk: str | None

    def __repr__(self) -> str:
        shown = f"{self.method} {self.path[:80]} {self.encoding} {self.content_type} {self.origin}"
        return f"Req({shown} {self.fields})"


@st.composite
def reqs(draw: st.DrawFn) -> Req:
    method, path = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 7)) == 0:
        path = draw(st.sampled_from(ODD_PATHS))
    if draw(st.integers(0, 5)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    query = draw(st.dictionaries(st.sampled_from(QUERY_KEYS), values, max_size=4))
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    fields = draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8))
    base = VALID_FORMS.get(path)
    if base is not None and draw(st.booleans()):
        # A form the handler would act on, a field or two changed: so "nothing happened"
        # means something when the session or its token is missing.
        fields = {**base, **draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=2))}
    encoding = draw(
        st.sampled_from(
            ["urlencoded"] * 4 + ["multipart", "cut-multipart", "raw", "json", "oversized", "none"]
        )
    )
    content_type = draw(
        st.sampled_from(
            [
                None,
                None,
                "text/plain",
                "application/x-www-form-urlencoded; charset=ebcdic",
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "application/json",
            ]
        )
    )
    return Req(
        method=method,
        path=path,
        fields=fields,
        encoding=encoding,
        content_type=content_type,
        origin=draw(st.sampled_from(["same", "none", "none", "other", "null"])),
        csrf_in_header=draw(st.booleans()),
        cookie_junk=draw(st.none() | header_text.filter(lambda t: ";" not in t)),
    )


def body_of(req: Req, fields: dict[str, str]) -> tuple[bytes | dict[str, str] | None, dict[str, str]]:
    headers: dict[str, str] = {}
    if req.encoding == "none":
        return None, headers
    if req.encoding == "urlencoded":
        body: bytes | dict[str, str] = fields
    elif req.encoding in ("multipart", "cut-multipart"):
        b = "b0undary"
        headers["Content-Type"] = f"multipart/form-data; boundary={b}"
        raw = (
            b"".join(
                f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode(
                    "utf-8", "surrogatepass"
                )
                for k, v in fields.items()
            )
            + f"--{b}--\r\n".encode()
        )
        body = raw if req.encoding == "multipart" else raw[: len(raw) // 2]
    elif req.encoding == "raw":
        text = "&".join(f"{k}={v}" for k, v in fields.items()).encode("utf-8", "surrogatepass")
        body = text + b"&code=%ff%fe\xff&=&&x"
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif req.encoding == "json":
        import json

        body = json.dumps(fields).encode()
        headers["Content-Type"] = "application/json"
    else:  # oversized
        body = b"x=" + b"y" * (MAX_BODY + 10)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if req.content_type is not None:
        headers["Content-Type"] = req.content_type
    return body, headers


def send(served: Served, req: Req, token: str | None, csrf: str | None) -> requests.Response:
    fields = dict(req.fields)
    headers: dict[str, str] = {}
    if csrf is not None:
        if req.csrf_in_header:
            headers["X-CSRF-Token"] = csrf
        else:
            fields["csrf"] = csrf
    body, more = body_of(req, fields)
    headers.update(more)
    host = served.url.removeprefix("http://")
    headers["Origin"] = {"same": f"http://{host}", "other": "http://evil.example", "null": "null"}.get(
        req.origin, ""
    )
    if req.origin == "none":
        del headers["Origin"]
    cookies = []
    if token is not None:
        cookies.append(f"{COOKIE}={token}")
    if req.cookie_junk is not None:
        cookies.append(f"{COOKIE}={req.cookie_junk}" if token is None else f"other={req.cookie_junk}")
    if cookies:
        headers["Cookie"] = "; ".join(cookies)
    r = requests.request(
        req.method, served.url + req.path, data=body, headers=headers, allow_redirects=False, timeout=30
    )
    event(f"{r.status_code}")
    note(f"{req} -> {r.status_code} {r.text[:300]!r}")
    return r


def no_errors_logged(served: Served) -> None:
    records, served.errors.records = served.errors.records, []
    assert not records, [(r.getMessage(), r.exc_info) for r in records]


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(req=reqs(), with_pre_session=st.booleans())
def test_without_a_session_nothing_changes_and_nothing_fails(
    served: Served, req: Req, with_pre_session: bool
) -> None:
    """A stranger on the network: no cookie, a garbage one, or the pre-login session the login
    page gives (with its CSRF token, so the login form and the first-use forms are reached)."""
    before = served.disk()
    token = csrf = None
    if with_pre_session:
        r = requests.get(served.url + "/login", allow_redirects=False, timeout=10)
        assert r.status_code == 200
        token, csrf = r.cookies[COOKIE], csrf_of(r.text)
    r = send(served, req, token, csrf)
    assert r.status_code < 500
    if req.method == "POST":
        assert r.status_code in (303, 400, 401, 403, 405, 413, 429) or r.status_code == 404, r.status_code
        if r.status_code == 303:  # the public forms send elsewhere, never in
            assert r.headers["Location"] in ("/login", "/first-use")
    assert served.disk() == before
    no_errors_logged(served)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=reqs(), password=values)
def test_garbage_logins_are_refused_and_counted(served: Served, req: Req, password: str) -> None:
    """POST /login with the login page's own token, so the password is checked (or the client
    is told to wait): never in, never a 5xx, and the limiter sees every failure."""
    req = Req(
        **{**req.__dict__, "method": "POST", "path": "/login", "fields": {**req.fields, "password": password}}
    )
    r = requests.get(served.url + "/login", allow_redirects=False, timeout=10)
    assert r.status_code == 200
    before = served.disk()
    r = send(served, req, r.cookies[COOKIE], csrf_of(r.text))
    assert r.status_code in (400, 401, 403, 413, 429), r.status_code
    assert served.disk() == before
    no_errors_logged(served)


@FUZZ
@given(req=reqs(), csrf=st.sampled_from(["missing", "wrong", "other-session", "cross-origin"]))
def test_a_session_without_its_csrf_token_changes_nothing(served: Served, req: Req, csrf: str) -> None:
    """A logged-in technician's browser made to post by another site: no valid token (or a
    valid one from another origin), so every POST is refused before its handler."""
    before = served.disk()
    token, good = served.new_session()
    other_token, other_csrf = served.new_session()
    served.end_session(other_token)
    sent = {"missing": None, "wrong": good[:-1] + "x", "other-session": other_csrf}.get(csrf, good)
    if csrf == "cross-origin":
        req = Req(**{**req.__dict__, "origin": "other"})
    r = send(served, req, token, sent)
    served.end_session(token)
    assert r.status_code < 500
    if req.method == "POST":
        assert r.status_code in (400, 403, 404, 405, 413), r.status_code
    assert served.disk() == before
    no_errors_logged(served)


@FUZZ
@given(req=reqs())
def test_a_logged_in_technician_with_garbage_forms_gets_4xx_never_5xx(served: Served, req: Req) -> None:
    """Past authentication and CSRF, into every handler: garbage is refused with a 4xx, and the
    config file on disk is always one the daemons load."""
    token, csrf = served.new_session()
    if req.origin in ("other", "null"):
        req = Req(**{**req.__dict__, "origin": "same"})
    r = send(served, req, token, csrf)
    served.end_session(token)
    assert r.status_code < 500
    load_config(served.rig.config_file)
    assert (served.rig.state_dir / PASSWORD_FILE).exists()
    no_errors_logged(served)


def test_login_rate_limiting_held_through_the_fuzz(served: Served) -> None:
    """Runs after the fuzz above (module order). Every password check is a scrypt run: the
    limiter allows `overall` failures per window in all, so the whole fuzz (well inside one
    window) cannot have made more; and a client now gets 429, even with the right password."""
    limiter = served.rig.server.ctx.limiter
    assert 0 < len(served.checks) <= limiter.overall + 1, len(served.checks)
    for _ in range(limiter.per_client + 1):
        r = requests.get(served.url + "/login", timeout=10)
        cookie, csrf = r.cookies[COOKIE], csrf_of(r.text)
        r = requests.post(
            served.url + "/login",
            data={"csrf": csrf, "password": PASSWORD},
            headers={"Cookie": f"{COOKIE}={cookie}"},
            allow_redirects=False,
            timeout=30,
        )
        if r.status_code == 429:
            break
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0, r.status_code


# Regressions: each of these was a 500 with a traceback in the log.
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"csrf=x"),  # no boundary
        ("multipart/form-data; boundary=b0undary", b"--b0undary\r\nContent-Disposition: form-data; name="),
        ("multipart/form-data; boundary=b0undary", b"not a multipart body at all"),
        ("application/x-www-form-urlencoded; charset=ebcdic", b"csrf=x"),  # LookupError
    ],
)
def test_a_post_that_is_not_a_form_is_a_400(served: Served, content_type: str, body: bytes) -> None:
    for path in ("/login", "/settings"):
        token = requests.get(served.url + "/login", timeout=10).cookies[COOKIE] if path == "/login" else None
        if token is None:
            token, _ = served.new_session()
        r = requests.post(
            served.url + path,
            data=body,
            headers={"Content-Type": content_type, "Cookie": f"{COOKIE}={token}"},
            allow_redirects=False,
            timeout=10,
        )
        assert r.status_code == 400 and "form could not be read" in r.text, (path, r.status_code, r.text)
    no_errors_logged(served)


def test_a_static_name_too_long_for_the_file_system_is_a_404(served: Served) -> None:
    r = requests.get(served.url + "/static/" + "x" * 300, timeout=10)
    assert r.status_code == 404
    no_errors_logged(served)
