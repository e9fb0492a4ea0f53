"""The room service's HTTP endpoints with what schemathesis does not send: raw bodies (bytes
that are not UTF-8, not JSON, nested thousands deep, over the size limit) under any content
type at the JSON API, and garbage forms, query strings and cookies at the admin pages (login,
/activate and the other forms, with and without a valid session and CSRF token). On the real
service process: never a 5xx, API errors always JSON, the process never logs a traceback."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from .fuzzing import invalid_utf8, near_valid
from .helpers import PASSWORD
from .process import GENEROUS_LIMITS, RoomProcess, add_admin, room_process, write_config

pytestmark = pytest.mark.slow

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoomProcess]:
    config = write_config(tmp_path_factory.mktemp("room-fuzz-http"), GENEROUS_LIMITS)
    add_admin(config, "alice", PASSWORD)
    add_admin(config, "bob", PASSWORD)  # the one the fuzzed logins may lock out
    with room_process(config) as running:
        yield running
        assert running.proc.poll() is None, running.log
        assert not unexpected_tracebacks(running.log), running.log


def unexpected_tracebacks(log: str) -> list[str]:
    """Tracebacks in a service's log, but for aiohttp's own report of a request it could not
    parse (a header with a control character, say), which it answers 400 itself."""
    blocks = re.findall(r"Traceback \(most recent call last\):\n(?:[ \t].*\n|\n)*\S.*", log + "\n")
    return [b for b in blocks if not re.search(r"^aiohttp\.http_exceptions\.\w+: 400", b, re.M)]


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

# --- the JSON API with raw bodies ----------------------------------------------------------------

API_BODIES: dict[str, list[dict[str, Any]]] = {
    "/api/v1/device/authorize": [{"device_id": "kiosk-1", "model": "Raspberry Pi 4", "firmware": "1.0"}],
    "/api/v1/device/token": [
        {"device_code": "abc", "grant_type": "urn:ietf:params:oauth:grant-type:device_code"},
        {"device_code": "abc"},
    ],
    "/api/v1/viewer/session": [{"invite": "abc"}],
    "/api/v1/device/revoke": [{}],
}
ALL_BODIES = [body for bodies in API_BODIES.values() for body in bodies]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/octet-stream",
    "garbage",
    "application/json; charset=ebcdic",
    "text/plain; charset=utf-16",
]
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(str.strip)


@st.composite
def raw_bodies(draw: st.DrawFn, path: str) -> bytes:
    templates = API_BODIES.get(path, ALL_BODIES)
    choice = draw(st.integers(0, 6))
    if choice <= 1:
        return draw(near_valid(templates)).encode("utf-8", "surrogatepass")
    if choice == 2:
        return draw(invalid_utf8(templates))
    if choice == 3:
        return draw(st.binary(max_size=300))
    if choice == 4:  # over client_max_size: 413
        return b'{"invite": "' + b"x" * draw(st.sampled_from([64 * 1024, 200_000])) + b'"}'
    if choice == 5:
        return b'--xyz\r\nContent-Disposition: form-data; name="invite"\r\n\r\nabc\r\n--xyz--\r\n'
    return b""


@st.composite
def api_requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    path = draw(
        st.sampled_from([*API_BODIES, *API_BODIES, "/api/v1/device/me", "/api/v1/health", "/api/v1/ws"])
    )
    if draw(st.integers(0, 9)) == 0:
        path += draw(st.sampled_from(["/", "/x", "%00", "/..", "?x=%ff", "?session=" + "s" * 300]))
    method = draw(st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    headers: dict[str, str] = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type is not None:
        headers["Content-Type"] = content_type
    auth = draw(st.sampled_from([None, "Bearer x", "Bearer", "Basic Zm9vOmJhcg==", "bearer  x", "raw"]))
    if auth == "raw":
        headers["Authorization"] = draw(header_text)
    elif auth is not None:
        headers["Authorization"] = auth
    if draw(st.booleans()):
        headers["X-Forwarded-For"] = draw(header_text)
    return method, path, draw(raw_bodies(path)), headers


@FUZZ
@given(req=api_requests())
def test_api_answers_raw_bodies_with_json_4xx(
    service: RoomProcess, req: tuple[str, str, bytes, dict]
) -> None:
    method, path, body, headers = req
    r = requests.request(method, service.url + path, data=body, headers=headers, timeout=10)
    said = (method, path, headers, body[:200], r.status_code, r.text[:300])
    event(f"{r.status_code} {path}")
    assert r.status_code < 500, said
    if r.status_code >= 400 and method != "HEAD":
        assert r.headers.get("Content-Type", "").startswith("application/json"), said
        assert isinstance(r.json()["error"], str), said


def test_a_request_the_http_parser_refuses_is_a_400(service: RoomProcess) -> None:
    """Before the app: aiohttp answers these itself (text, not the API's JSON)."""
    for headers in ({"Content-Type": "application/json; charset=\x7f"}, {"X-Junk": "a\x00b"}):
        r = requests.post(service.url + "/api/v1/viewer/session", data=b"{}", headers=headers, timeout=10)
        assert r.status_code == 400
    assert requests.get(service.url + "/api/v1/health", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/device/authorize", b'{"device_id":"\xff","model":"m","firmware":"f"}'),
        ("/api/v1/device/token", b'{"device_code":"\xed\xa0\x80"}'),
        ("/api/v1/viewer/session", b'{"invite":"\xc3"}'),
    ],
)
def test_invalid_utf8_in_a_json_string_is_a_400(service: RoomProcess, path: str, body: bytes) -> None:
    """msgspec raises UnicodeDecodeError (not DecodeError) for these: they were 500s."""
    r = requests.post(service.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


def test_api_bodies_nested_thousands_deep_are_a_400(service: RoomProcess) -> None:
    for path, template in (("/api/v1/viewer/session", '{"invite":%s}'), ("/api/v1/device/token", "%s")):
        body = template % ("[" * 5000 + "]" * 5000)
        r = requests.post(service.url + path, data=body, timeout=10)
        assert r.status_code == 400, r.text


# --- the admin pages with garbage forms ---------------------------------------------------------


class Admin:
    """alice's browser: requests with her cookies; logs in again when a fuzzed /logout (with
    her valid token) ended the session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.csrf = ""
        self.login()
        self.room = self.new_room()  # the fuzz may delete it: then its paths are 404s

    def login(self) -> None:
        page = self.http.get(self.url + "/login", timeout=10)
        token = _CSRF.search(page.text)
        assert token, page.text
        r = self.http.post(
            self.url + "/login",
            data={"csrf": token.group(1), "username": "alice", "password": PASSWORD},
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 303, r.text
        self.refresh()

    def refresh(self) -> None:
        page = self.http.get(self.url + "/rooms", allow_redirects=False, timeout=10)
        if page.status_code != 200:
            self.login()
            return
        token = _CSRF.search(page.text)
        assert token
        self.csrf = token.group(1)

    def new_room(self) -> str:
        page = self.http.post(
            self.url + "/rooms", data={"csrf": self.csrf, "name": "Fuzz"}, allow_redirects=False, timeout=10
        )
        assert page.status_code == 303, page.text
        return page.headers["Location"].rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def admin(service: RoomProcess) -> Iterator[Admin]:
    a = Admin(service.url)
    yield a
    a.http.close()


FORM_PATHS = [
    "/login",
    "/logout",
    "/activate",
    "/activate/confirm",
    "/rooms",
    "/rooms/{room}/invites",
    "/rooms/{room}/delete",
    "/invites/{invite}/revoke",
    "/devices/{device}/revoke",
]
FORM_KEYS = ["username", "password", "next", "code", "action", "room", "name", "label", "expires_h", "x", ""]
form_values = (
    st.text(max_size=40)
    | st.sampled_from(
        ["alice", "bob", "approve", "deny", "ABCD-EFGH", "abcdefgh", "-1", "1e9", "nan", "//evil"]
    )
    | st.integers(0, 5000).map(lambda n: "x" * n)
)


@st.composite
def form_posts(draw: st.DrawFn, csrf: str, room: str) -> tuple[str, bytes | dict[str, str], dict[str, str]]:
    path = draw(st.sampled_from(FORM_PATHS)).format(
        room=draw(st.sampled_from([room, "r000000000000", "x" * 300, "%00"])),
        invite=draw(st.sampled_from(["i1", "x" * 100])),
        device=draw(st.sampled_from(["d1", "%ff"])),
    )
    fields = draw(st.dictionaries(st.sampled_from(FORM_KEYS), form_values, max_size=6))
    token = draw(st.sampled_from(["valid", "valid", "missing", "wrong", "long"]))
    if token != "missing":
        fields["csrf"] = {"valid": csrf, "wrong": "0" * 64, "long": "f" * 5000}[token]
    headers: dict[str, str] = {}
    encoding = draw(st.sampled_from(["urlencoded", "urlencoded", "multipart", "raw", "json"]))
    if encoding == "urlencoded":
        return path, fields, headers
    if encoding == "json":
        headers["Content-Type"] = "application/json"
        return path, json.dumps(fields).encode(), headers
    if encoding == "multipart":
        boundary = "b0undary"
        headers["Content-Type"] = draw(
            st.sampled_from(
                [f"multipart/form-data; boundary={boundary}", "multipart/form-data", "multipart/mixed"]
            )
        )
        parts = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode()
            + v.encode("utf-8", "surrogatepass")
            + b"\r\n"
            for k, v in fields.items()
        )
        cut = draw(st.sampled_from([None, 0, 10]))
        body = parts + f"--{boundary}--\r\n".encode()
        return path, body if cut is None else body[: len(body) // 2 + cut], headers
    # raw: url-encoded by hand, with bytes that are not UTF-8, escaped or not
    headers["Content-Type"] = draw(
        st.sampled_from(
            ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=ebcdic"]
        )
    )
    junk = draw(st.sampled_from([b"%ff%fe", b"\xff\xfe", b"%", b"%zz", b"&&==&", b"a=%e2%82", b"=" * 100]))
    body = "&".join(f"{k}={v}" for k, v in fields.items()).encode("utf-8", "surrogatepass")
    return path, body + b"&code=" + junk, headers


@FUZZ
@given(data=st.data())
def test_admin_forms_with_garbage_are_4xx_never_5xx(
    service: RoomProcess, admin: Admin, data: st.DataObject
) -> None:
    admin.refresh()
    path, body, headers = data.draw(form_posts(admin.csrf, admin.room))
    logged_in = data.draw(st.booleans())
    http = admin.http if logged_in else requests.Session()
    r = http.post(service.url + path, data=body, headers=headers, allow_redirects=False, timeout=30)
    assert r.status_code < 500, (r.status_code, r.text[:500])
    event(f"{r.status_code} {path.split('/')[1]}")


@st.composite
def page_gets(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    path = draw(
        st.sampled_from(
            ["/", "/login", "/activate", "/rooms", "/devices", "/rooms/{x}", "/view/{x}", "/static/{x}"]
        )
    ).format(x=draw(st.sampled_from(["r1", "x" * 2000, "%00", "..%2f..%2fetc%2fpasswd", "%ff", "a b"])))
    query = draw(st.dictionaries(st.sampled_from(["next", "code", "session", "x"]), form_values, max_size=3))
    cookie = draw(
        st.sampled_from(["", "room_session=", "room_pre=", "room_session=abc; room_pre=def"])
        | header_text.filter(lambda t: ";" not in t).map(lambda t: f"room_session={t}; room_pre={t}")
    )
    return path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""), (
        {"Cookie": cookie} if cookie else {}
    )


@FUZZ
@given(req=page_gets())
def test_pages_with_garbage_queries_and_cookies_are_never_5xx(
    service: RoomProcess, req: tuple[str, dict[str, str]]
) -> None:
    path, headers = req
    r = requests.get(service.url + path, headers=headers, allow_redirects=False, timeout=10)
    assert r.status_code < 500, (r.status_code, r.text[:500])


def test_a_static_name_too_long_for_the_file_system_is_a_404(service: RoomProcess) -> None:
    """aiohttp's static route let ENAMETOOLONG out as a 500."""
    assert requests.get(service.url + "/static/" + "x" * 300, timeout=10).status_code == 404
    assert requests.get(service.url + "/static/viewer.js", timeout=10).status_code == 200


def test_a_form_in_a_charset_python_does_not_know_is_a_400(service: RoomProcess) -> None:
    """request.post() raised LookupError: a 500."""
    r = requests.post(
        service.url + "/login",
        data=b"csrf=x&username=alice",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=ebcdic"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 400, r.text
