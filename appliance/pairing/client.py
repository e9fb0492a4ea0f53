"""HTTP calls a kiosk makes to the room service (appliance.room.api), decoded with the
service's own types (appliance.room.api_types).

Errors: RoomServiceError (network, unexpected answers) and its subclass Unauthorized (401:
the token is unknown or revoked). Poll answers that RFC 8628 defines as errors
(authorization_pending, slow_down...) are values, not exceptions: they are the normal flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import msgspec

from appliance.room import api_types as t

TIMEOUT = aiohttp.ClientTimeout(total=15.0)
MAX_RETRY_AFTER_S = 3600.0  # a longer Retry-After is a misconfigured service, not a plan
B = TypeVar("B", bound=t.Body)


class RoomServiceError(Exception):
    pass


class Unauthorized(RoomServiceError):
    pass


@dataclass(frozen=True)
class RateLimited:
    """429 from the service: wait this long before the next request."""

    retry_after: float


PollResult = t.TokenResponse | t.TokenError | RateLimited


def _decode(data: bytes, kind: type[B], what: str) -> B:
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise RoomServiceError(f"unexpected answer to {what}: {exc}") from None


def _retry_after(headers: object, default: float) -> float:
    value = getattr(headers, "get", lambda _k: None)("Retry-After")
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        return default
    if math.isnan(seconds):
        return default
    # "inf" or "1e400" parse as infinity: a kiosk told that would never ask again.
    return min(max(1.0, seconds), MAX_RETRY_AFTER_S)


class RoomClient:
    def __init__(self, room_url: str, session: aiohttp.ClientSession) -> None:
        self.room_url = room_url
        self.session = session

    async def _call(
        self, method: str, path: str, body: t.Body | None = None, token: str | None = None
    ) -> tuple[int, bytes, float]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else msgspec.json.encode(body)
        try:
            async with self.session.request(
                method, self.room_url + path, data=data, headers=headers, timeout=TIMEOUT
            ) as resp:
                payload = await resp.read()
                return resp.status, payload, _retry_after(resp.headers, math.nan)
        # UnicodeError: a host name the IDNA codec refuses (a doubled dot), found at connect.
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeError) as exc:
            raise RoomServiceError(f"{self.room_url} unreachable: {exc or type(exc).__name__}") from None

    async def authorize(self, device_id: str, model: str, firmware: str) -> t.AuthorizeResponse | RateLimited:
        body = t.AuthorizeRequest(device_id=device_id, model=model, firmware=firmware)
        status, data, retry = await self._call("POST", "/api/v1/device/authorize", body)
        if status == 429:
            return RateLimited(10.0 if math.isnan(retry) else retry)
        if status != 200:
            raise RoomServiceError(f"pairing request refused ({status}): {data[:200]!r}")
        return _decode(data, t.AuthorizeResponse, "the pairing request")

    async def poll(self, device_code: str) -> PollResult:
        status, data, retry = await self._call(
            "POST", "/api/v1/device/token", t.TokenRequest(device_code=device_code)
        )
        if status == 200:
            return _decode(data, t.TokenResponse, "a token poll")
        if status == 400:
            return _decode(data, t.TokenError, "a token poll")
        if status == 429:
            return RateLimited(10.0 if math.isnan(retry) else retry)
        raise RoomServiceError(f"token poll failed ({status})")

    async def me(self, token: str) -> t.DeviceMe:
        status, data, _ = await self._call("GET", "/api/v1/device/me", token=token)
        if status == 401:
            raise Unauthorized("the room service does not know this kiosk's token (revoked?)")
        if status != 200:
            raise RoomServiceError(f"token check failed ({status})")
        return _decode(data, t.DeviceMe, "a token check")

    async def revoke(self, token: str) -> None:
        status, _, _ = await self._call("POST", "/api/v1/device/revoke", token=token)
        if status not in (200, 401):  # 401: revoked already, which is what we wanted
            raise RoomServiceError(f"revoking the token failed ({status})")
