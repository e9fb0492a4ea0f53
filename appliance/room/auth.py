"""Admin sessions and CSRF tokens for the server-rendered pages.

Cookies are HttpOnly and SameSite=Strict, and Secure whenever the service is reached over
HTTPS. Every form carries a CSRF token: an HMAC of the admin's session id under the service's
key, or, before login, of a random pre-session cookie (so the login form is protected too).
A POST without the right token gets 403 before anything else is looked at.

A browser an admin has logged in with gets a "known browser" cookie (a nonce and its HMAC
with the username). Logins from it are exempt from the per-account and the overall login
limits and have a failure limit of their own instead: otherwise anybody could lock the admin
out by sending wrong passwords for their name, or by spending the overall allowance from a
handful of addresses (OWASP's "device cookie" answer to lockout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from appliance.room import tokens
from appliance.room.accounts import Admin
from appliance.room.services import secure_cookies, services

SESSION_COOKIE = "room_session"
PRE_COOKIE = "room_pre"
KNOWN_COOKIE = "room_known"
KNOWN_TTL_S = 180 * 86400
CSRF_FIELD = "csrf"
_TOKEN_MAX = 128
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{_TOKEN_MAX}}}")  # what tokens.new_token makes


@dataclass
class Visitor:
    admin: Admin | None
    session: str | None  # the admin's session token, when logged in
    pre: str  # the pre-session cookie's value
    new_pre: bool  # set the pre-session cookie on the way out
    csrf: str


def visitor(request: web.Request) -> Visitor:
    s = services(request)
    session = request.cookies.get(SESSION_COOKIE)
    admin = None
    if session and len(session) <= _TOKEN_MAX:
        admin = s.accounts.session_admin(session, s.now())
    if admin is None:
        session = None
    pre = request.cookies.get(PRE_COOKIE, "")
    # Only a value we could have set: header bytes that are not UTF-8 arrive as lone surrogates,
    # and signing one raised UnicodeEncodeError (a 500 on every page for that browser).
    new_pre = not _TOKEN.fullmatch(pre)
    if new_pre:
        pre = tokens.new_token()
    csrf = tokens.sign(s.key, "session", session) if session else tokens.sign(s.key, "pre", pre)
    return Visitor(admin, session, pre, new_pre, csrf)


def set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(request),
    )


def finish(request: web.Request, response: web.StreamResponse, who: Visitor) -> web.StreamResponse:
    if who.new_pre:
        set_cookie(request, response, PRE_COOKIE, who.pre, None)
    return response


def field(form: Mapping[str, object], name: str, limit: int = 4096) -> str:
    """A text field of a posted form; '' when missing, a file, or absurdly long."""
    value = form.get(name)
    return value if isinstance(value, str) and len(value) <= limit else ""


def csrf_ok(who: Visitor, form: Mapping[str, object]) -> bool:
    sent = field(form, CSRF_FIELD, 256)
    return bool(sent) and tokens.same(sent, who.csrf)


def safe_next(target: str, default: str = "/rooms") -> str:
    """Only a path on this site: never //evil.example or a scheme (open redirect)."""
    # No control characters either: browsers drop tabs and newlines from a Location, so
    # "/<TAB>/evil.example" would become "//evil.example".
    if (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and len(target) < 512
        and not any(c < " " or c == "\x7f" for c in target)
    ):
        return target
    return default


def known_cookie(request: web.Request, username: str) -> str:
    """A new known-browser cookie value for `username`: nonce.HMAC(nonce, username)."""
    nonce = tokens.new_token(16)
    return f"{nonce}.{tokens.sign(services(request).key, 'known', username, nonce)}"


def known_browser(request: web.Request, username: str) -> str | None:
    """The nonce of a valid known-browser cookie for `username`, else None."""
    nonce, _, mac = request.cookies.get(KNOWN_COOKIE, "").partition(".")
    if not _TOKEN.fullmatch(nonce) or not _TOKEN.fullmatch(mac):
        return None
    expected = tokens.sign(services(request).key, "known", username, nonce)
    return nonce if tokens.same(mac, expected) else None
