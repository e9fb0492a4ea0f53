"""The admin pages' handlers: log in, rooms, devices, viewer links, /activate.

    GET  /login, POST /login, POST /logout
    GET  /rooms, POST /rooms, GET /rooms/{id}, POST /rooms/{id}/delete, POST /rooms/{id}/invites
    POST /invites/{id}/revoke
    GET  /devices, POST /devices/{id}/revoke
    GET  /activate[?code=], POST /activate, POST /activate/confirm

Every POST checks its CSRF token first (403 without it), then the session (to /login without
one). Entering pairing codes is limited per admin: at most pairing.wrong_codes_per_admin wrong
codes within one code lifetime; past that every entry is refused unseen until the oldest
wrong one ages out, so guessing a live code is hopeless (20^8 codes, 5 guesses per 10 min).
"""

from __future__ import annotations

import asyncio
import logging
import math
from urllib.parse import quote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from appliance.room import pages
from appliance.room.accounts import Admin
from appliance.room.auth import (
    KNOWN_COOKIE,
    KNOWN_TTL_S,
    SESSION_COOKIE,
    Visitor,
    csrf_ok,
    field,
    finish,
    known_browser,
    known_cookie,
    safe_next,
    set_cookie,
    visitor,
)
from appliance.room.devices import PairingRequest, RoomFull
from appliance.room.passwords import verify_password
from appliance.room.rooms import RoomError
from appliance.room.services import Services, base_url, client_address, services
from appliance.room.tokens import normalize_user_code

log = logging.getLogger(__name__)

MAX_INVITE_HOURS = 24 * 365


def html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def forbidden() -> web.Response:
    return html(
        pages.message("Form expired", "This form is stale or did not come from this site: reload the page."),
        403,
    )


def limited(wait: float, text: str) -> web.Response:
    retry = max(1, math.ceil(wait))
    return html(
        pages.message("Too many attempts", f"{text} Try again in {retry} s."),
        429,
        {"Retry-After": str(retry)},
    )


def not_found() -> web.Response:
    return html(pages.message("Not found", "There is nothing here, or it was deleted."), 404)


def to_login(request: web.Request) -> web.Response:
    return see_other(f"/login?next={quote(request.path_qs, safe='')}")


class Page:
    """What a handler needs about the visitor: who, the CSRF token, the posted form."""

    def __init__(self, request: web.Request, who: Visitor, admin: Admin) -> None:
        self.request = request
        self.who = who
        self.admin = admin
        self.s: Services = services(request)

    def respond(self, response: web.StreamResponse) -> web.StreamResponse:
        return finish(self.request, response, self.who)


async def _posted(request: web.Request) -> tuple[Visitor, dict[str, str]] | web.Response:
    who = visitor(request)
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError):
        # A malformed body (bad multipart, bad encoding), or a charset Python does not know.
        return html(pages.message("Bad request", "The form could not be read."), 400)
    if not csrf_ok(who, form):
        return forbidden()
    return who, {key: field(form, key) for key in form}


# --- logging in ----------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    return see_other("/rooms" if visitor(request).admin else "/login")


async def login_get(request: web.Request) -> web.StreamResponse:
    who = visitor(request)
    target = safe_next(request.query.get("next", "/rooms"))
    if who.admin is not None:
        return see_other(target)
    return finish(request, html(pages.login(who.csrf, target)), who)


async def login_post(request: web.Request) -> web.StreamResponse:
    posted = await _posted(request)
    if isinstance(posted, web.Response):
        return posted
    who, form = posted
    s = services(request)
    now = s.now()
    username = form.get("username", "").strip().lower()[:64]
    password = form.get("password", "")
    target = safe_next(form.get("next", "/rooms"))
    address = client_address(request)
    # A browser this admin logged in with before skips the overall and the per-account limits
    # (which strangers can spend) and has its own failure limit instead; see appliance.room.auth.
    known = known_browser(request, username)
    if wait := s.limits.login.hit(address, now, overall=known is None):
        return limited(wait, "Too many logins from your address.")
    failures_key = username if known is None else f"known:{known}"  # no ':' in a username
    # Charged now and refunded on success: checked here but charged only after the await
    # below, guesses sent at once all got past the check and the limit counted none of them.
    if wait := s.limits.login_failures.hit(failures_key, now):
        return limited(wait, "Too many wrong passwords for this account.")
    admin, stored = s.accounts.credentials(username)
    # PBKDF2 takes ~0.1 s of CPU: off the event loop, so signaling does not stall meanwhile.
    good = await asyncio.to_thread(verify_password, password, stored)
    if admin is None or not good:
        log.info("failed login from %s", address)
        page = pages.login(who.csrf, target, username=username, error="Wrong username or password.")
        return finish(request, html(page, 401), who)
    s.limits.login_failures.refund(failures_key)
    token = s.accounts.new_session(admin, now, s.config.accounts.session_ttl_s)
    log.info("admin %s logged in from %s", admin.username, address)
    response = see_other(target)
    set_cookie(request, response, SESSION_COOKIE, token, s.config.accounts.session_ttl_s)
    if known is None:
        set_cookie(request, response, KNOWN_COOKIE, known_cookie(request, admin.username), KNOWN_TTL_S)
    return response


async def logout_post(request: web.Request) -> web.StreamResponse:
    posted = await _posted(request)
    if isinstance(posted, web.Response):
        return posted
    who, _ = posted
    if who.session is not None:
        services(request).accounts.end_session(who.session)
    response = see_other("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# --- guards --------------------------------------------------------------------------------------


def admin_get(request: web.Request) -> Page | web.Response:
    who = visitor(request)
    if who.admin is None:
        return to_login(request)
    return Page(request, who, who.admin)


async def admin_post(request: web.Request) -> tuple[Page, dict[str, str]] | web.Response:
    posted = await _posted(request)
    if isinstance(posted, web.Response):
        return posted
    who, form = posted
    if who.admin is None:
        return see_other("/login")
    return Page(request, who, who.admin), form


# --- rooms ---------------------------------------------------------------------------------------


def _rooms_page(page: Page, error: str = "", status: int = 200) -> web.StreamResponse:
    s = page.s
    rows = []
    for room in s.rooms.all():
        devices = s.devices.active(room.id)
        online = any(s.hub.device_online(d.id) for d in devices)
        rows.append(pages.RoomRow(room, len(devices), online, s.hub.viewers_in(room.id)))
    text = pages.rooms(page.admin.username, page.who.csrf, rows, error=error)
    return page.respond(html(text, status))


async def rooms_get(request: web.Request) -> web.StreamResponse:
    page = admin_get(request)
    return page if isinstance(page, web.Response) else _rooms_page(page)


async def rooms_post(request: web.Request) -> web.StreamResponse:
    got = await admin_post(request)
    if isinstance(got, web.Response):
        return got
    page, form = got
    try:
        room = page.s.rooms.create(form.get("name", ""), page.s.now())
    except RoomError as exc:
        return _rooms_page(page, str(exc).capitalize() + ".", 400)
    log.info("admin %s created room %s", page.admin.username, room.id)
    return see_other(f"/rooms/{room.id}")


def _room_page(
    page: Page, room_id: str, *, new_link: pages.NewLink | None = None, error: str = "", status: int = 200
) -> web.StreamResponse:
    s = page.s
    room = s.rooms.get(room_id)
    if room is None:
        return not_found()
    devices = [(d, s.hub.device_online(d.id)) for d in s.devices.active(room.id)]
    text = pages.room(
        page.admin.username,
        page.who.csrf,
        room,
        devices,
        s.rooms.invites(room.id),
        s.now(),
        new_link=new_link,
        error=error,
    )
    return page.respond(html(text, status))


async def room_get(request: web.Request) -> web.StreamResponse:
    page = admin_get(request)
    return page if isinstance(page, web.Response) else _room_page(page, request.match_info["room"])


async def room_delete_post(request: web.Request) -> web.StreamResponse:
    got = await admin_post(request)
    if isinstance(got, web.Response):
        return got
    page, form = got
    room_id = request.match_info["room"]
    if page.s.rooms.get(room_id) is None:
        return not_found()
    if form.get("confirm") != "yes":
        return _room_page(page, room_id, error="Tick the box to confirm the deletion.", status=400)
    page.s.hub.kick_room(room_id, "room deleted")
    page.s.rooms.delete(room_id)
    log.info("admin %s deleted room %s", page.admin.username, room_id)
    return see_other("/rooms")


async def invite_post(request: web.Request) -> web.StreamResponse:
    got = await admin_post(request)
    if isinstance(got, web.Response):
        return got
    page, form = got
    room_id = request.match_info["room"]
    if page.s.rooms.get(room_id) is None:
        return not_found()
    hours_text = form.get("expires_h", "").strip()
    try:
        hours = None if not hours_text else float(hours_text)
    except ValueError:
        hours = -1.0
    if hours is not None and not 0 < hours <= MAX_INVITE_HOURS:
        return _room_page(
            page, room_id, error=f"Expiry: 1 to {MAX_INVITE_HOURS} hours, or never.", status=400
        )
    try:
        invite, token = page.s.rooms.create_invite(
            room_id, form.get("label", ""), page.s.now(), None if hours is None else hours * 3600
        )
    except RoomError as exc:
        return _room_page(page, room_id, error=str(exc).capitalize() + ".", status=400)
    log.info("admin %s created viewer link %s for room %s", page.admin.username, invite.id, room_id)
    link = pages.NewLink(invite.label, f"{base_url(request)}/view/{token}")
    return _room_page(page, room_id, new_link=link, status=201)


async def invite_revoke_post(request: web.Request) -> web.StreamResponse:
    got = await admin_post(request)
    if isinstance(got, web.Response):
        return got
    page, _ = got
    invite = page.s.rooms.get_invite(request.match_info["invite"])
    if invite is None:
        return not_found()
    page.s.rooms.revoke_invite(invite.id, page.s.now())
    page.s.hub.kick_invite(invite.id, "viewer link revoked")
    log.info("admin %s revoked viewer link %s", page.admin.username, invite.id)
    return see_other(f"/rooms/{invite.room_id}")


# --- devices -------------------------------------------------------------------------------------


async def devices_get(request: web.Request) -> web.StreamResponse:
    page = admin_get(request)
    if isinstance(page, web.Response):
        return page
    s = page.s
    names = {r.id: r.name for r in s.rooms.all()}
    rows = [(d, names.get(d.room_id, "?"), s.hub.device_online(d.id)) for d in s.devices.active()]
    return page.respond(html(pages.devices(page.admin.username, page.who.csrf, rows)))


async def device_revoke_post(request: web.Request) -> web.StreamResponse:
    got = await admin_post(request)
    if isinstance(got, web.Response):
        return got
    page, form = got
    device_id = request.match_info["device"]
    if not page.s.devices.revoke(device_id, page.s.now()):
        return not_found()
    page.s.hub.kick_device(device_id, "device token revoked")
    log.info("admin %s revoked device %s", page.admin.username, device_id)
    return see_other(safe_next(form.get("next", "/devices"), "/devices"))


# --- pairing codes -------------------------------------------------------------------------------


def _checked_code(page: Page, entry: str) -> PairingRequest | web.StreamResponse:
    """The pending request for an entered code, or the page refusing it. Every path that
    takes a code comes through here, so none escapes the wrong-code limit."""
    s = page.s
    now = s.now()
    if wait := s.limits.activate.hit(client_address(page.request), now):
        return limited(wait, "Too many codes entered from your address.")
    window = s.config.pairing.code_ttl_s
    allowed = s.config.pairing.wrong_codes_per_admin
    failures = s.accounts.code_failures(page.admin, now - window)
    if len(failures) >= allowed:
        wait = failures[0] + window - now
        return limited(wait, f"{len(failures)} wrong codes in the last {window // 60} minutes.")
    code = normalize_user_code(entry)
    request = None if code is None else s.devices.pending(code, now)
    if request is None:
        s.accounts.add_code_failure(page.admin, now)
        left = allowed - len(failures) - 1
        log.info("admin %s entered a wrong pairing code (%d left)", page.admin.username, left)
        error = f"No kiosk is waiting with that code. Check it and try again ({left} attempts left)."
        return page.respond(
            html(pages.activate(page.admin.username, page.who.csrf, code=entry, error=error), 400)
        )
    return request


def _confirm_page(page: Page, req: PairingRequest, error: str = "", status: int = 200) -> web.StreamResponse:
    s = page.s
    choices = [(room, s.devices.room_is_full(room.id, req.device_id)) for room in s.rooms.all()]
    return page.respond(
        html(pages.confirm(page.admin.username, page.who.csrf, req, choices, error=error), status)
    )


async def activate_get(request: web.Request) -> web.StreamResponse:
    page = admin_get(request)
    if isinstance(page, web.Response):
        return page
    code = request.query.get("code", "")[:32]
    return page.respond(html(pages.activate(page.admin.username, page.who.csrf, code=code)))


async def activate_post(request: web.Request) -> web.StreamResponse:
    got = await admin_post(request)
    if isinstance(got, web.Response):
        return got
    page, form = got
    req = _checked_code(page, form.get("code", ""))
    return req if isinstance(req, web.StreamResponse) else _confirm_page(page, req)


async def activate_confirm_post(request: web.Request) -> web.StreamResponse:
    got = await admin_post(request)
    if isinstance(got, web.Response):
        return got
    page, form = got
    req = _checked_code(page, form.get("code", ""))
    if isinstance(req, web.StreamResponse):
        return req
    s = page.s
    action = form.get("action")
    room = None
    if action == "approve":
        room = s.rooms.get(form.get("room", ""))
        if room is None:
            return _confirm_page(page, req, "Pick a room.", 400)
    elif action != "deny":
        return _confirm_page(page, req, "Choose to pair or to refuse.", 400)
    try:
        decided = s.devices.decide(req.user_code, None if room is None else room.id, page.admin.id, s.now())
    except RoomFull:
        return _confirm_page(
            page, req, "That room has its kiosk already: revoke it first, or pick another.", 409
        )
    if not decided:  # expired or decided elsewhere between the two checks
        return page.respond(
            html(pages.activate(page.admin.username, page.who.csrf, error="That code expired."), 400)
        )
    log.info(
        "admin %s %s device %s%s",
        page.admin.username,
        "refused" if room is None else "paired",
        req.device_id,
        "" if room is None else f" to room {room.id}",
    )
    return page.respond(
        html(pages.activated(page.admin.username, page.who.csrf, None if room is None else room.name))
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_get)
    r.add_post("/login", login_post)
    r.add_post("/logout", logout_post)
    r.add_get("/rooms", rooms_get)
    r.add_post("/rooms", rooms_post)
    r.add_get("/rooms/{room}", room_get)
    r.add_post("/rooms/{room}/delete", room_delete_post)
    r.add_post("/rooms/{room}/invites", invite_post)
    r.add_post("/invites/{invite}/revoke", invite_revoke_post)
    r.add_get("/devices", devices_get)
    r.add_post("/devices/{device}/revoke", device_revoke_post)
    r.add_get("/activate", activate_get)
    r.add_post("/activate", activate_post)
    r.add_post("/activate/confirm", activate_confirm_post)
