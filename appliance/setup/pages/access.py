"""Getting in: first use (the code from the kiosk's screen, then a password), login, logout."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from appliance.clientkey import client_key
from appliance.errors import StateError
from appliance.setup.app import (
    COOKIE,
    DEVICE_COOKIE,
    SESSION_KEY,
    ctx_of,
    new_session_cookie,
    render,
    session_of,
)
from appliance.setup.auth import DEVICE_TTL_S, password_problem
from appliance.setup.html import Markup, csrf_field, h, notice

log = logging.getLogger(__name__)


def client_of(request: web.Request) -> str:
    """The rate limits' key for this request's client: an IPv6 one by its /64 (client_key)."""
    return client_key(request.remote)


def known_device(request: web.Request) -> str | None:
    """The rate-limit key of this browser if it logged in here before (auth.KnownDevices)."""
    return ctx_of(request).devices.key(request.cookies.get(DEVICE_COOKIE))


async def _password_set(request: web.Request) -> bool:
    try:
        return await ctx_of(request).password_is_set()
    except StateError as exc:
        log.error("%s", exc)
        raise web.HTTPInternalServerError(
            text=f"{exc}\nThe setup page stays locked: restore the file, or factory-reset the kiosk.\n"
        ) from None


def _too_many(request: web.Request, seconds: float, what: str) -> web.Response:
    wait = max(1, int(seconds + 0.999))
    body = notice("error", f"Too many wrong {what}. Try again in {wait} s.")
    response = render(request, "Please wait", body, status=429)
    response.headers["Retry-After"] = str(wait)
    return response


def _log_in(request: web.Request, response: web.StreamResponse) -> None:
    """A new authenticated session: the pre-login one is dropped (no session fixation)."""
    ctx = ctx_of(request)
    ctx.sessions.drop(request.cookies.get(COOKIE))
    token, session = ctx.sessions.new(authenticated=True)
    request[SESSION_KEY] = session
    new_session_cookie(request, response, token)
    if known_device(request) is None:
        known_device_cookie(request, response)


def known_device_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Make this browser a known device (auth.KnownDevices): a long-lived cookie."""
    ctx = ctx_of(request)
    response.set_cookie(
        DEVICE_COOKIE,
        ctx.devices.issue(),
        max_age=int(DEVICE_TTL_S),
        httponly=True,
        samesite="Strict",
        secure=ctx.tls,
        path="/",
    )


# --- first use ---------------------------------------------------------------------------------


def _first_use_form(request: web.Request, error: str | None = None) -> Markup:
    ctx = ctx_of(request)
    session = session_of(request)
    live = ctx.codes.current()
    if live is None:
        return h(
            "{error}<p>This kiosk has no setup password yet. To prove you are at the kiosk, ask for a "
            "one-time code: it appears on the kiosk's own screen for 10 minutes.</p>"
            '<form method="post" action="/first-use/code">{csrf}'
            '<button type="submit" id="ask-code">Show a setup code on the kiosk screen</button></form>',
            error=notice("error", error) if error else Markup(""),
            csrf=csrf_field(session),
        )
    # The code reaches the screen over the bus (retained: it is shown once the bus is back).
    no_bus = (
        Markup("")
        if ctx.bus.connected
        else notice(
            "error",
            "The bus is not reachable right now, so the kiosk's screen cannot show the code: it "
            "appears there once the bus daemon is running again.",
        )
    )
    return h(
        "{error}{no_bus}<p>Enter the 6-digit code shown on the kiosk's screen, and choose the setup password "
        "(at least 10 characters).</p>"
        '<form method="post" action="/first-use" class="stack">{csrf}'
        '<label>Setup code <input name="code" id="code" inputmode="numeric" autocomplete="one-time-code" '
        'pattern="[0-9]{{6}}" maxlength="6" required></label>'
        '<label>New password <input type="password" name="password" id="password" '
        'autocomplete="new-password" minlength="10" required></label>'
        '<label>Repeat it <input type="password" name="confirm" id="confirm" '
        'autocomplete="new-password" required></label>'
        '<button type="submit" id="set-password">Set the password</button></form>',
        error=notice("error", error) if error else Markup(""),
        no_bus=no_bus,
        csrf=csrf_field(session),
    )


async def first_use(request: web.Request) -> web.Response:
    if await _password_set(request):
        raise web.HTTPSeeOther("/login")
    return render(request, "First use", _first_use_form(request))


async def ask_code(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    if await _password_set(request):
        raise web.HTTPSeeOther("/login")
    fresh = ctx.codes.current() is None
    ctx.codes.issue()
    ctx.publish_code()
    if fresh:
        # Clear the retained setup.code once it has expired, so no stale code waits on the bus.
        # Once per code: asking again for the live one must not add a timer per request. The
        # loop's timers are monotonic, as the code's expiry is: a wall clock jump moves neither.
        asyncio.get_running_loop().call_later(ctx.codes.seconds_left() + 1.0, ctx.publish_code)
    log.info("setup code shown on the kiosk screen for %s", request.remote)
    raise web.HTTPSeeOther("/first-use")


async def set_first_password(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    if await _password_set(request):
        raise web.HTTPSeeOther("/login")
    client = client_of(request)
    wait = ctx.limiter.retry_after(client)
    if wait > 0:
        return _too_many(request, wait, "codes")
    form = await request.post()
    code, password, confirm = (str(form.get(k, "")) for k in ("code", "password", "confirm"))
    problem = password_problem(password, confirm)
    if problem is not None:
        return render(
            request, "First use", _first_use_form(request, f"Password not set: {problem}."), status=400
        )
    if not ctx.codes.check(code):
        ctx.limiter.failed(client)
        ctx.publish_code()  # a code used up by wrong tries leaves the screen
        log.warning("setup: wrong setup code from %s", request.remote)
        again = "" if ctx.codes.current() else " Ask for a new code."
        return render(
            request, "First use", _first_use_form(request, f"Wrong or expired setup code.{again}"), status=401
        )
    await ctx.set_password(password)
    ctx.publish_code()
    ctx.limiter.succeeded(client)
    log.info("setup password set from %s", request.remote)
    response = web.HTTPSeeOther("/status")
    _log_in(request, response)
    raise response


# --- login / logout ----------------------------------------------------------------------------


def _login_form(request: web.Request, error: str | None = None) -> Markup:
    return h(
        '{error}<form method="post" action="/login" class="stack">{csrf}'
        '<label>Password <input type="password" name="password" id="password" '
        'autocomplete="current-password" required autofocus></label>'
        '<button type="submit" id="login">Log in</button></form>',
        error=notice("error", error) if error else Markup(""),
        csrf=csrf_field(session_of(request)),
    )


async def login_page(request: web.Request) -> web.Response:
    if not await _password_set(request):
        raise web.HTTPSeeOther("/first-use")
    if session_of(request).authenticated:
        raise web.HTTPSeeOther("/status")
    return render(request, "Log in", _login_form(request))


async def login(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    if not await _password_set(request):
        raise web.HTTPSeeOther("/first-use")
    device = known_device(request)
    # A known browser is counted by its device, not its address: failures from its network
    # (a shared /64, a NAT) do not lock it out, nor do many addresses' (the overall cap).
    client = device or client_of(request)
    known = device is not None
    wait = ctx.limiter.retry_after(client, known=known)
    if wait > 0:
        return _too_many(request, wait, "passwords")
    form = await request.post()
    right, wait = await ctx.check_password_limited(client, str(form.get("password", "")), known=known)
    if wait > 0:
        return _too_many(request, wait, "passwords")
    if not right:
        log.warning("setup: failed login from %s (%s)", request.remote, client)
        return render(request, "Log in", _login_form(request, "Wrong password."), status=401)
    ctx.limiter.succeeded(client)
    log.info("setup: login from %s", request.remote)
    response = web.HTTPSeeOther("/status")
    _log_in(request, response)
    raise response


async def logout(request: web.Request) -> web.Response:
    ctx_of(request).sessions.drop(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def root(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/status")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/first-use", first_use)
    app.router.add_post("/first-use/code", ask_code)
    app.router.add_post("/first-use", set_first_password)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
