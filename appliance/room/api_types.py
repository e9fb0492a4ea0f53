"""Bodies of the room service's JSON API: one msgspec type each.

The handlers decode requests with these types, the OpenAPI description is generated from them
(appliance.room.openapi), and the kiosk's pairing client decodes the answers with them, so the
three cannot disagree.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from appliance.room.protocol import RoomInfo

DEVICE_CODE_GRANT: Literal["urn:ietf:params:oauth:grant-type:device_code"] = (
    "urn:ietf:params:oauth:grant-type:device_code"
)

DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
# One line of text: no control characters (it is shown on the admin's pages).
Line = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ApiError(Body):
    """Every error: an OAuth-style code and a sentence for people."""

    error: str
    error_description: str = ""


class AuthorizeRequest(Body):
    device_id: DeviceId
    model: Line
    firmware: Line


class AuthorizeResponse(Body):
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class TokenRequest(Body):
    device_code: Secret
    grant_type: Literal["urn:ietf:params:oauth:grant-type:device_code"] = DEVICE_CODE_GRANT


TokenErrorCode = Literal[
    "authorization_pending", "slow_down", "access_denied", "expired_token", "invalid_grant", "invalid_request"
]


class TokenError(Body):
    error: TokenErrorCode
    error_description: str = ""


class TokenResponse(Body):
    access_token: str
    token_type: Literal["Bearer"]
    room: RoomInfo


class DeviceRef(Body):
    id: str
    device_id: str
    model: str
    firmware: str


class DeviceMe(Body):
    device: DeviceRef
    room: RoomInfo


class Done(Body):
    ok: bool = True


class ViewerSessionRequest(Body):
    invite: Secret


class ViewerSessionResponse(Body):
    session: str
    expires_in: int
    room: RoomInfo


class HealthResponse(Body):
    status: Literal["ok"]
    version: str
