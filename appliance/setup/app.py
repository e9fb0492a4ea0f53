"""The aiohttp application: security headers, sessions, authentication and CSRF for every route.

Every route needs a logged-in session except the login and first-use pages and the static
files. Refusals: a page (GET of HTML) redirects to /login (303); anything else, the
WebSocket, the snapshot, the CSV export and every POST, answers 401. Every POST must carry
the session's CSRF token (form field `csrf` or header X-CSRF-Token) and, when the browser
sends an Origin, come from this same origin: else 403, and nothing happens. A POST whose body
is not a form (multipart without its boundary or cut short, an unknown charset) is a 400.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from appliance.setup.auth import Session, csrf_ok
from appliance.setup.context import CTX, Context
from appliance.setup.html import Markup, page
from appliance.webguard import log_bad_requests_briefly, static_errors

log = logging.getLogger(__name__)

COOKIE = "appliance_setup"
# A browser that has logged in here (auth.KnownDevices): the overall rate limit spares it.
DEVICE_COOKIE = "appliance_device"
STATIC = Path(__file__).parent / "static"
PUBLIC = frozenset(
    {
        ("GET", "/login"),
        ("POST", "/login"),
        ("GET", "/first-use"),
        ("POST", "/first-use"),
        ("POST", "/first-use/code"),
    }
)
MAX_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
SESSION_KEY = web.RequestKey("session", Session)


def session_of(request: web.Request) -> Session:
    return request[SESSION_KEY]


def ctx_of(request: web.Request) -> Context:
    return request.app[CTX]


def render(
    request: web.Request,
    title: str,
    body: Markup,
    *,
    current: str = "",
    status: int = 200,
    live: bool = False,
) -> web.Response:
    session = request.get(SESSION_KEY)
    text = page(title, body, session=session, current=current, live=live)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def new_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=ctx_of(request).tls, path="/")


def _is_public(request: web.Request) -> bool:
    return (request.method, request.path) in PUBLIC or request.path.startswith("/static/")


def same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        # No Origin (older browsers, curl): the CSRF token alone decides. "null" is a sandboxed
        # or privacy-redirected request: refuse, it cannot be ours.
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.host


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on our own
    # form posts, and the origin check could not tell them from a sandboxed attacker.
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = ctx_of(request)
    token = request.cookies.get(COOKIE)
    session = ctx.sessions.get(token)
    public = _is_public(request)
    if not public and (session is None or not session.authenticated):
        html_page = request.method == "GET" and request.path not in ("/ws", "/snapshot.png", "/events.csv")
        # Logging out without a session (a second tab, an expired one) is done already.
        if html_page or (request.method == "POST" and request.path == "/logout"):
            raise web.HTTPSeeOther("/login")
        raise web.HTTPUnauthorized(text="log in first\n")
    if request.method == "POST" and not request.path.startswith("/static/"):
        if not same_origin(request):
            log.warning(
                "refused a cross-origin POST to %s from %s", request.path, request.headers.get("Origin")
            )
            raise web.HTTPForbidden(text="cross-origin request refused\n")
        try:
            form = await request.post()
        except (ValueError, LookupError, HttpProcessingError):
            # A body that is not a form: multipart without its boundary or cut short, a charset
            # Python does not know. (Too large is aiohttp's own 413.)
            raise web.HTTPBadRequest(text="the form could not be read\n") from None
        sent = form.get("csrf") or request.headers.get("X-CSRF-Token")
        if not csrf_ok(session, sent if isinstance(sent, str) else None):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and try again\n")
    fresh: str | None = None
    if session is None:
        # A visitor of a public page: a pre-login session, for the login form's CSRF token.
        fresh, session = ctx.sessions.new()
    request[SESSION_KEY] = session
    response = await handler(request)
    if fresh is not None and not response.cookies.get(COOKIE):
        new_session_cookie(request, response, fresh)
    return response


def make_app(ctx: Context) -> web.Application:
    from appliance.setup.pages import ROUTE_MODULES

    log_bad_requests_briefly()
    app = web.Application(
        middlewares=[ctx.activity.middleware, security_headers, static_errors, sessions],
        client_max_size=MAX_BODY,
    )
    app[CTX] = ctx
    for module in ROUTE_MODULES:
        module.add_routes(app)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app
