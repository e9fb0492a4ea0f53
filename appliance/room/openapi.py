"""The OpenAPI 3.1 description of the JSON API, served at /api/v1/openapi.json.

Schemas come from the msgspec types the handlers decode and encode (appliance.room.api_types),
so the description cannot drift from the code; tests/room/test_openapi.py runs schemathesis
against a running service to hold the rest (paths, statuses) to it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from appliance import __version__
from appliance.room import api_types as t

_TYPES: list[Any] = [
    t.ApiError,
    t.AuthorizeRequest,
    t.AuthorizeResponse,
    t.TokenRequest,
    t.TokenResponse,
    t.TokenError,
    t.DeviceMe,
    t.Done,
    t.ViewerSessionRequest,
    t.ViewerSessionResponse,
    t.HealthResponse,
]


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def _json(kind: type, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(kind)}},
    }
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}}
_LIMITED = _json(t.ApiError, "rate limited (per client address or overall)", _RETRY_AFTER)
_TOO_LARGE = _json(t.ApiError, "body too large")
_BAD = _json(t.ApiError, "malformed request")
_UNAUTHORIZED = _json(t.ApiError, "unknown or revoked device token")


def _body(kind: type) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(kind)}}}


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_TYPES, ref_template="#/components/schemas/{name}")
    bearer: list[dict[str, list[str]]] = [{"deviceToken": []}]
    paths: dict[str, Any] = {
        "/api/v1/device/authorize": {
            "post": {
                "operationId": "deviceAuthorize",
                "summary": "A kiosk asks to be paired (RFC 8628 device authorization request)",
                "requestBody": _body(t.AuthorizeRequest),
                "responses": {
                    "200": _json(t.AuthorizeResponse, "codes to show and to poll with"),
                    "400": _BAD,
                    "413": _TOO_LARGE,
                    "429": _LIMITED,
                },
            }
        },
        "/api/v1/device/token": {
            "post": {
                "operationId": "deviceToken",
                "summary": "The kiosk polls for its device token (RFC 8628 section 3.4)",
                "requestBody": _body(t.TokenRequest),
                "responses": {
                    "200": _json(t.TokenResponse, "paired: the device token, bound to a room"),
                    "400": _json(t.TokenError, "not (yet) paired: pending, slow_down, denied, expired"),
                    "413": _TOO_LARGE,
                    "429": _LIMITED,
                },
            }
        },
        "/api/v1/device/me": {
            "get": {
                "operationId": "deviceMe",
                "summary": "The kiosk checks its token and learns its room",
                "security": bearer,
                "responses": {"200": _json(t.DeviceMe, "the token is good"), "401": _UNAUTHORIZED},
            }
        },
        "/api/v1/device/revoke": {
            "post": {
                "operationId": "deviceRevoke",
                "summary": "The kiosk gives up its token (unpair)",
                "security": bearer,
                "responses": {"200": _json(t.Done, "revoked"), "401": _UNAUTHORIZED},
            }
        },
        "/api/v1/viewer/session": {
            "post": {
                "operationId": "viewerSession",
                "summary": "Exchange an invite token for a short-lived viewer session",
                "requestBody": _body(t.ViewerSessionRequest),
                "responses": {
                    "200": _json(t.ViewerSessionResponse, "a session for /api/v1/ws?session="),
                    "400": _BAD,
                    "403": _json(t.ApiError, "unknown, revoked or expired invite"),
                    "413": _TOO_LARGE,
                    "429": _LIMITED,
                },
            }
        },
        "/api/v1/ws": {
            "get": {
                "operationId": "signaling",
                "summary": "Signaling WebSocket (appliance/room/protocol.py) for a device or a viewer",
                "security": [{"deviceToken": []}, {"viewerSession": []}],
                "responses": {
                    "101": {"description": "switching to WebSocket"},
                    "400": _json(t.ApiError, "not a WebSocket upgrade"),
                    "401": _json(t.ApiError, "no valid device token or viewer session"),
                    "409": _json(
                        t.ApiError,
                        "device_busy: another device of this room is online;"
                        " room_full: the room has its most viewers connected",
                    ),
                    "429": _LIMITED,
                },
            }
        },
        "/api/v1/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness",
                "responses": {"200": _json(t.HealthResponse, "up")},
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "appliance room service",
            "version": __version__,
            "description": "Pairing (RFC 8628 shape), viewer sessions and signaling for the kiosks.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "deviceToken": {"type": "http", "scheme": "bearer"},
                "viewerSession": {"type": "apiKey", "in": "query", "name": "session"},
            },
        },
    }
