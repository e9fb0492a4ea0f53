"""Maintenance: restart a daemon, reboot, factory reset (each confirmed), change the password.

On a kiosk these go through systemd (appliance.setup.system); anywhere else the page says
what would happen and does nothing.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from appliance import daemons
from appliance.setup.app import SESSION_KEY, ctx_of, new_session_cookie, render, session_of
from appliance.setup.auth import password_problem
from appliance.setup.html import EMPTY, Markup, csrf_field, h, join, notice
from appliance.setup.pages.access import client_of, known_device, known_device_cookie
from appliance.setup.system import Outcome

log = logging.getLogger(__name__)
RESET_WORD = "RESET"


def _page(request: web.Request, message: Markup = EMPTY, status: int = 200) -> web.Response:
    ctx = ctx_of(request)
    csrf = csrf_field(session_of(request))
    options = join(h('<option value="{d}">{d}</option>', d=d) for d in daemons.START_ORDER)
    mode = (
        Markup("")
        if ctx.system.active
        else notice(
            "info",
            "Not a kiosk under systemd (the demo or a development machine): actions say what they would do.",
        )
    )
    body = h(
        "{message}{mode}"
        "<section><h3>Restart a daemon</h3>"
        '<form method="post" action="/maintenance/restart" class="stack">{csrf}'
        '<label>Daemon <select name="daemon" id="restart-daemon">{options}</select></label>'
        '<label><input type="checkbox" name="confirm" value="yes" required> Yes, restart it</label>'
        '<button type="submit" id="restart">Restart</button></form></section>'
        '<section><h3>Reboot</h3><form method="post" action="/maintenance/reboot" class="stack">{csrf}'
        '<label><input type="checkbox" name="confirm" value="yes" required> Yes, reboot the kiosk '
        "(screening stops for about a minute)</label>"
        '<button type="submit" id="reboot" class="danger">Reboot</button></form></section>'
        "<section><h3>Factory reset</h3><p>Deletes the calibration, the stored events, the pairing and this "
        "setup password; the config goes back to the shipped defaults; then the kiosk reboots.</p>"
        '<form method="post" action="/maintenance/factory-reset" class="stack">{csrf}'
        "<label>Type {word} to confirm "
        '<input name="confirm" id="reset-confirm" autocomplete="off" required></label>'
        '<button type="submit" id="factory-reset" class="danger">Factory reset</button></form></section>'
        "<section><h3>Change the setup password</h3>"
        '<form method="post" action="/maintenance/password" class="stack">{csrf}'
        '<label>Current password <input type="password" name="current" '
        'autocomplete="current-password" required></label>'
        '<label>New password <input type="password" name="password" '
        'autocomplete="new-password" minlength="10" required></label>'
        '<label>Repeat it <input type="password" name="confirm" '
        'autocomplete="new-password" required></label>'
        '<button type="submit" id="change-password">Change the password</button></form></section>',
        message=message,
        mode=mode,
        csrf=csrf,
        options=options,
        word=RESET_WORD,
    )
    return render(request, "Maintenance", body, current="/maintenance", status=status)


def _outcome(outcome: Outcome) -> Markup:
    return notice("ok" if outcome.done else "info", outcome.message)


async def maintenance_page(request: web.Request) -> web.Response:
    return _page(request)


async def restart(request: web.Request) -> web.Response:
    form = await request.post()
    daemon = str(form.get("daemon", ""))
    if form.get("confirm") != "yes":
        return _page(request, notice("error", "Not restarted: tick the box to confirm."), status=400)
    if daemon not in daemons.START_ORDER:
        return _page(request, notice("error", f"Not restarted: no daemon named {daemon!r}."), status=400)
    # In a worker thread: systemctl waits on D-Bus, and a stuck one must not stall the watchdog.
    outcome = await asyncio.to_thread(ctx_of(request).system.restart, daemon)
    log.info("maintenance: restart %s: %s", daemon, outcome.message)
    return _page(request, _outcome(outcome))


async def reboot(request: web.Request) -> web.Response:
    form = await request.post()
    if form.get("confirm") != "yes":
        return _page(request, notice("error", "Not rebooted: tick the box to confirm."), status=400)
    outcome = await asyncio.to_thread(ctx_of(request).system.reboot)
    log.warning("maintenance: reboot: %s", outcome.message)
    return _page(request, _outcome(outcome))


async def factory_reset(request: web.Request) -> web.Response:
    form = await request.post()
    if str(form.get("confirm", "")).strip() != RESET_WORD:
        return _page(request, notice("error", f"Not reset: type {RESET_WORD} to confirm."), status=400)
    ctx = ctx_of(request)
    outcome = await asyncio.to_thread(ctx.system.factory_reset)
    log.warning("maintenance: factory reset: %s", outcome.message)
    if outcome.done:
        ctx.sessions.drop_all()
        ctx.devices.forget_all()
    return _page(request, _outcome(outcome))


async def change_password(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    form = await request.post()
    current, password, confirm = (str(form.get(k, "")) for k in ("current", "password", "confirm"))
    # Keyed as the login is (a known browser by its device, else the address or IPv6 /64).
    device = known_device(request)
    client = device or client_of(request)
    # The limit is checked in check_password_limited, before any hashing: the form is read already.
    right, wait = await ctx.check_password_limited(client, current, known=device is not None)
    if wait > 0:
        return _page(
            request, notice("error", f"Too many wrong passwords: try again in {int(wait) + 1} s."), status=429
        )
    if not right:
        return _page(request, notice("error", "Not changed: the current password is wrong."), status=401)
    problem = password_problem(password, confirm)
    if problem is not None:
        return _page(request, notice("error", f"Not changed: {problem}."), status=400)
    await ctx.set_password(password)
    # Every other session ends; this one goes on as a new session.
    ctx.sessions.drop_all()
    ctx.devices.forget_all()
    token, session = ctx.sessions.new(authenticated=True)
    request[SESSION_KEY] = session
    response = _page(request, notice("ok", "Password changed; every other session was logged out."))
    new_session_cookie(request, response, token)
    known_device_cookie(request, response)
    log.info("setup password changed from %s", request.remote)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/maintenance", maintenance_page)
    app.router.add_post("/maintenance/restart", restart)
    app.router.add_post("/maintenance/reboot", reboot)
    app.router.add_post("/maintenance/factory-reset", factory_reset)
    app.router.add_post("/maintenance/password", change_password)
