"""Pairing with a room service: start (bus method pairing.start), watch the code, unpair.

The publisher daemon owns pairing (RFC 8628 device flow) and the device credentials; this
page only asks it, over the bus, and shows pairing.status as it changes.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp import web

from appliance.bus.topics import Empty, Ok, PairingStart
from appliance.config import load_config
from appliance.errors import ApplianceError, NoSuchMethod, NotConnected, RemoteError, RequestTimeout
from appliance.setup.app import ctx_of, render, session_of
from appliance.setup.html import EMPTY, Markup, csrf_field, h, notice
from appliance.setup.pages.status import field

log = logging.getLogger(__name__)

MAX_URL = 2048
REQUEST_TIMEOUT_S = 15.0


def url_problem(url: str) -> str | None:
    if not url:
        return "enter the room service's address"
    if len(url) > MAX_URL or any(c.isspace() for c in url):
        return "not a web address"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one (":99999", ":abc")
    except ValueError:  # "http://[::1": an unclosed IPv6 bracket
        return "not a web address"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "use an http:// or https:// address with a host name"
    if parts.username or parts.password:
        return "the address must not carry a user name or password"
    return None


def _default_url(request: web.Request) -> str:
    try:
        return load_config(ctx_of(request).config_file).publisher.room_url or ""
    except ApplianceError:
        return ""


def _page(
    request: web.Request, message: Markup = EMPTY, url: str | None = None, status: int = 200
) -> web.Response:
    ctx = ctx_of(request)
    f = ctx.live.status_fields()
    session = session_of(request)
    url = _default_url(request) if url is None else url
    body = h(
        "{message}"
        '<section class="cards"><div><h3>Now</h3>'
        "<p>state: {state} {room}</p>"
        '<p class="code">code: <strong id="user-code">{code}</strong> (valid for {expires})</p>'
        "<p>enter it at: {uri}</p><p>{reason}</p></div></section>"
        '<section><h3>Pair with a room</h3><form method="post" action="/pairing/start" class="stack">{csrf}'
        '<label>Room service address <input type="url" name="room_url" id="room-url" value="{url}" '
        'placeholder="https://rooms.example.org" maxlength="2048" required></label>'
        '<button type="submit" id="start-pairing">Start pairing</button></form>'
        "<p>The kiosk's screen then shows a code and a QR code; an administrator of the room "
        "service enters the code there and picks the room.</p></section>"
        '<section><h3>Unpair</h3><form method="post" action="/pairing/unpair" class="stack">{csrf}'
        '<label><input type="checkbox" name="confirm" value="yes" required> Yes, unpair this kiosk: '
        "remote staff lose its picture until it is paired again</label>"
        '<button type="submit" id="unpair" class="danger">Unpair</button></form></section>',
        message=message,
        state=field(f, "pairing.state"),
        room=field(f, "pairing.room"),
        code=field(f, "pairing.user_code"),
        expires=field(f, "pairing.expires"),
        uri=field(f, "pairing.uri"),
        reason=field(f, "pairing.reason"),
        csrf=csrf_field(session),
        url=url,
    )
    return render(request, "Pairing", body, current="/pairing", status=status, live=True)


async def pairing_page(request: web.Request) -> web.Response:
    return _page(request)


def _bus_problem(exc: Exception) -> str:
    if isinstance(exc, NotConnected):
        return "the bus is not reachable (see Status: is the bus daemon running?); nothing was asked"
    if isinstance(exc, NoSuchMethod):
        return "the publisher daemon (it does the pairing) is not running: start it (Maintenance), retry"
    if isinstance(exc, RequestTimeout):
        return "no answer from the publisher daemon in time"
    if isinstance(exc, RemoteError):
        return str(exc)
    return f"the bus is not available: {exc}"


def _bus_status(exc: Exception) -> int:
    # 503: no bus to ask, try again later; 502: the daemon asked failed or did not answer.
    return 503 if isinstance(exc, NotConnected) else 502


async def start(request: web.Request) -> web.Response:
    form = await request.post()
    url = str(form.get("room_url", "")).strip()
    problem = url_problem(url)
    if problem is not None:
        return _page(request, notice("error", f"Not started: {problem}."), url, status=400)
    try:
        reply = await ctx_of(request).request(
            "pairing.start", PairingStart(room_url=url), timeout=REQUEST_TIMEOUT_S
        )
    except ApplianceError as exc:
        message = notice("error", f"Not started: {_bus_problem(exc)}.")
        return _page(request, message, url, status=_bus_status(exc))
    assert isinstance(reply, Ok)
    if not reply.ok:
        return _page(request, notice("error", f"Not started: {reply.detail or 'refused'}."), url, status=502)
    log.info("pairing started with %s", url)
    text = "Pairing started: the code appears below and on the kiosk's screen."
    return _page(request, notice("ok", text + (f" {reply.detail}" if reply.detail else "")), url)


async def unpair(request: web.Request) -> web.Response:
    form = await request.post()
    if form.get("confirm") != "yes":
        return _page(request, notice("error", "Not unpaired: tick the box to confirm."), status=400)
    try:
        reply = await ctx_of(request).request("pairing.unpair", Empty(), timeout=REQUEST_TIMEOUT_S)
    except ApplianceError as exc:
        message = notice("error", f"Not unpaired: {_bus_problem(exc)}.")
        return _page(request, message, status=_bus_status(exc))
    assert isinstance(reply, Ok)
    if not reply.ok:
        return _page(request, notice("error", f"Not unpaired: {reply.detail or 'refused'}."), status=502)
    log.info("kiosk unpaired")
    return _page(request, notice("ok", "Unpaired."))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/pairing", pairing_page)
    app.router.add_post("/pairing/start", start)
    app.router.add_post("/pairing/unpair", unpair)
