"""The room service's JSON API under /api/v1 (described in appliance.room.openapi).

    POST /api/v1/device/authorize   a kiosk asks to pair: device code, user code, links (RFC 8628 3.2)
    POST /api/v1/device/token       the kiosk polls; errors as in RFC 8628 3.5, then its token
    GET  /api/v1/device/me          (bearer) the kiosk checks its token and learns its room
    POST /api/v1/device/revoke      (bearer) the kiosk gives up its token (unpair)
    POST /api/v1/viewer/session     an invite token -> a short-lived viewer session
    GET  /api/v1/ws                 signaling (appliance.room.ws), bearer token or ?session=
    GET  /api/v1/health             liveness
    GET  /api/v1/openapi.json       this API, described

Every error is JSON {error, error_description} with a 4xx status; rate limits answer 429 with
Retry-After. Nothing here logs a token.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from appliance import __version__
from appliance.room import api_types as t
from appliance.room import tokens
from appliance.room.hub import RoomBusy, TooManyViewers
from appliance.room.protocol import RoomInfo
from appliance.room.services import Services, base_url, client_address, services
from appliance.room.ws import serve_member

log = logging.getLogger(__name__)

B = TypeVar("B", bound=t.Body)
_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encoder.encode(body), status=status, content_type="application/json", headers=headers
    )


def api_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(t.ApiError(error=error, error_description=description), status, headers)


def too_many(wait: float) -> web.Response:
    retry = str(max(1, math.ceil(wait)))
    return api_error(
        429, "rate_limited", f"too many requests; try again in {retry} s", {"Retry-After": retry}
    )


async def decode(request: web.Request, kind: type[B]) -> B | web.Response:
    body = await request.read()  # aiohttp refuses bodies over client_max_size with 413
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        return api_error(400, "invalid_request", str(exc))
    except msgspec.DecodeError as exc:
        return api_error(400, "invalid_request", f"the body is not JSON: {exc}")
    except UnicodeDecodeError:  # msgspec's error for invalid UTF-8 inside a JSON string
        return api_error(400, "invalid_request", "the body is not JSON: not valid UTF-8")
    except RecursionError:  # msgspec's depth guard; it unwound cleanly
        return api_error(400, "invalid_request", "the body is not JSON: nested too deeply")


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unauthorized(description: str) -> web.Response:
    return api_error(401, "invalid_token", description, {"WWW-Authenticate": 'Bearer error="invalid_token"'})


# --- pairing -----------------------------------------------------------------------------------


async def device_authorize(request: web.Request) -> web.Response:
    s = services(request)
    now = s.now()
    address = client_address(request)
    if wait := s.limits.authorize.hit(address, now):
        return too_many(wait)
    req = await decode(request, t.AuthorizeRequest)
    if isinstance(req, web.Response):
        return req
    pairing = s.config.pairing
    device_code, user_code = s.devices.authorize(
        req.device_id, req.model, req.firmware, address, now, pairing.code_ttl_s, pairing.interval_s
    )
    shown = tokens.format_user_code(user_code)
    uri = f"{base_url(request)}/activate"
    log.info("pairing requested by device %s (%s) from %s", req.device_id, req.model, address)
    return json_response(
        t.AuthorizeResponse(
            device_code=device_code,
            user_code=shown,
            verification_uri=uri,
            verification_uri_complete=f"{uri}?code={shown}",
            expires_in=pairing.code_ttl_s,
            interval=pairing.interval_s,
        )
    )


async def device_token(request: web.Request) -> web.Response:
    s = services(request)
    now = s.now()
    if wait := s.limits.token.hit(client_address(request), now):
        return too_many(wait)
    req = await decode(request, t.TokenRequest)
    if isinstance(req, web.Response):
        return req
    decision, issued = s.devices.poll(req.device_code, now)
    if issued is None:
        descriptions = {
            "authorization_pending": "waiting for an admin to enter the code",
            "slow_down": f"polling too fast; wait {decision.interval:.0f} s between polls",
            "access_denied": "pairing was refused",
            "expired_token": "the code expired; ask for a new one",
            "invalid_grant": "unknown or already used device code",
        }
        answer = decision.answer if decision.answer != "issue" else "invalid_grant"
        return json_response(t.TokenError(error=answer, error_description=descriptions[answer]), 400)
    for old in issued.replaced:
        # Its token was revoked just now: a connection it still holds must not go on relaying
        # (nor hold the room, which would refuse the new token with 409 device_busy).
        s.hub.kick_device(old, "device token revoked: the kiosk paired again")
    log.info("device %s paired to room %s", issued.device.id, issued.device.room_id)
    return json_response(
        t.TokenResponse(
            access_token=issued.token,
            token_type="Bearer",
            room=RoomInfo(id=issued.device.room_id, name=issued.room_name),
        ),
        headers={"Cache-Control": "no-store"},
    )


async def device_me(request: web.Request) -> web.Response:
    s = services(request)
    token = bearer(request)
    device = None if token is None else s.devices.authenticate(token)
    room = None if device is None else s.rooms.get(device.room_id)
    if device is None or room is None:
        return unauthorized("unknown or revoked device token")
    s.devices.seen(device.id, s.now())
    ref = t.DeviceRef(id=device.id, device_id=device.device_id, model=device.model, firmware=device.firmware)
    return json_response(t.DeviceMe(device=ref, room=RoomInfo(id=room.id, name=room.name)))


async def device_revoke(request: web.Request) -> web.Response:
    s = services(request)
    token = bearer(request)
    device = None if token is None else s.devices.authenticate(token)
    if device is None:
        return unauthorized("unknown or revoked device token")
    s.devices.revoke(device.id, s.now())
    s.hub.kick_device(device.id, "device token revoked")
    log.info("device %s gave up its token", device.id)
    return json_response(t.Done())


# --- viewers -------------------------------------------------------------------------------------


async def viewer_session(request: web.Request) -> web.Response:
    s = services(request)
    now = s.now()
    if wait := s.limits.viewer_session.hit(client_address(request), now):
        return too_many(wait)
    req = await decode(request, t.ViewerSessionRequest)
    if isinstance(req, web.Response):
        return req
    opened = s.rooms.open_session(req.invite, now, s.config.rooms.viewer_session_ttl_s)
    if opened is None:
        return api_error(403, "invalid_invite", "this invite link is unknown, revoked or expired")
    token, session = opened
    return json_response(
        t.ViewerSessionResponse(
            session=token,
            expires_in=max(1, int(session.expires - now)),
            room=RoomInfo(id=session.room.id, name=session.room.name),
        ),
        headers={"Cache-Control": "no-store"},
    )


# --- signaling -----------------------------------------------------------------------------------


def _not_websocket(request: web.Request) -> web.Response | None:
    if web.WebSocketResponse().can_prepare(request).ok:
        return None
    return api_error(400, "upgrade_required", "this endpoint speaks WebSocket")


async def _device_socket(request: web.Request, s: Services, token: str) -> web.StreamResponse:
    device = s.devices.authenticate(token)
    room = None if device is None else s.rooms.get(device.room_id)
    if device is None or room is None:
        return unauthorized("unknown or revoked device token")
    if refused := _not_websocket(request):
        return refused
    info, key = RoomInfo(id=room.id, name=room.name), device.id
    s.devices.seen(key, s.now())
    try:
        response = await serve_member(request, s.hub, lambda peer: s.hub.join_device(peer, info, key))
    except RoomBusy:
        return api_error(409, "device_busy", "another device of this room is online")
    try:
        s.devices.seen(key, s.now())
    except sqlite3.Error as exc:  # the socket is answered already: no error response now
        log.warning("could not note when device %s was last seen: %s", key, exc)
    return response


async def _viewer_socket(request: web.Request, s: Services, token: str) -> web.StreamResponse:
    now = s.now()
    session = s.rooms.session(token, now)
    if session is None:
        return unauthorized("unknown or expired viewer session")
    if refused := _not_websocket(request):
        return refused
    info, invite, left = (
        RoomInfo(id=session.room.id, name=session.room.name),
        session.invite_id,
        session.expires - now,
    )
    key = tokens.digest(token).hex()
    try:
        return await serve_member(
            request, s.hub, lambda peer: s.hub.join_viewer(peer, info, invite, left, key), expires_in=left
        )
    except TooManyViewers:
        limit = s.hub.max_viewers
        return api_error(409, "room_full", f"this room has its {limit} viewers connected; try again later")


async def websocket(request: web.Request) -> web.StreamResponse:
    s = services(request)
    if wait := s.limits.ws_connect.hit(client_address(request), s.now()):
        return too_many(wait)
    if (token := bearer(request)) is not None:
        return await _device_socket(request, s, token)
    if session := request.query.get("session"):
        return await _viewer_socket(request, s, session)
    return unauthorized("a device token (Authorization: Bearer) or a viewer session (?session=) is required")


async def health(request: web.Request) -> web.Response:
    return json_response(t.HealthResponse(status="ok", version=__version__))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/device/authorize", device_authorize)
    app.router.add_post("/api/v1/device/token", device_token)
    app.router.add_get("/api/v1/device/me", device_me, allow_head=False)
    app.router.add_post("/api/v1/device/revoke", device_revoke)
    app.router.add_post("/api/v1/viewer/session", viewer_session)
    app.router.add_get("/api/v1/ws", websocket, allow_head=False)
    app.router.add_get("/api/v1/health", health, allow_head=False)
