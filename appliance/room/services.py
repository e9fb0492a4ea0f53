"""What every request handler of the room service reaches: the stores, the hub, the limits.

One Services object per application, under SERVICES in the aiohttp app; the clock is a
parameter so tests can move time for expiry without waiting for it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from appliance.room.accounts import Accounts
from appliance.room.config import RoomConfig
from appliance.room.devices import Devices
from appliance.room.hub import Hub
from appliance.room.ratelimit import AddressAndOverall, RateLimiter
from appliance.room.rooms import Rooms
from appliance.room.turn import IceServers

LOGIN_FAILURE_WINDOW_S = 15 * 60


@dataclass
class Limits:
    login: AddressAndOverall
    login_failures: RateLimiter  # per username
    activate: AddressAndOverall
    authorize: AddressAndOverall
    token: AddressAndOverall
    viewer_session: AddressAndOverall
    ws_connect: AddressAndOverall

    @classmethod
    def from_config(cls, config: RoomConfig) -> Limits:
        a, r, pa = config.accounts, config.rooms, config.pairing
        return cls(
            login=AddressAndOverall(a.login_per_address_per_min, a.login_overall_per_min),
            login_failures=RateLimiter(a.login_failures_per_user, LOGIN_FAILURE_WINDOW_S),
            # /activate shares its overall bucket size with device polls: both guard the codes.
            activate=AddressAndOverall(pa.activate_per_address_per_min, pa.token_overall_per_min),
            authorize=AddressAndOverall(pa.authorize_per_address_per_min, pa.authorize_overall_per_min),
            token=AddressAndOverall(pa.token_per_address_per_min, pa.token_overall_per_min),
            viewer_session=AddressAndOverall(
                r.viewer_session_per_address_per_min, r.viewer_session_overall_per_min
            ),
            ws_connect=AddressAndOverall(r.ws_connect_per_address_per_min, r.ws_connect_overall_per_min),
        )


@dataclass
class Services:
    config: RoomConfig
    conn: sqlite3.Connection
    accounts: Accounts
    rooms: Rooms
    devices: Devices
    hub: Hub
    ice: IceServers
    key: bytes  # HMAC key for CSRF tokens
    clock: Callable[[], float]
    limits: Limits

    def now(self) -> float:
        return self.clock()


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def client_address(request: web.Request) -> str:
    """The address rate limits count against. Behind a proxy (service.behind_proxy) that is
    the last X-Forwarded-For entry: the one the proxy itself added, which a client cannot forge."""
    if request.app[SERVICES].config.service.behind_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            # As ASCII: header bytes that are not UTF-8 arrive as lone surrogates, which SQLite
            # (the pairing request keeps the address) refused with UnicodeEncodeError, a 500.
            return last[:64].encode("ascii", "backslashreplace").decode()
    return request.remote or "unknown"


def base_url(request: web.Request) -> str:
    """How clients reach this service: service.public_url, or the request's own origin."""
    configured = request.app[SERVICES].config.service.public_url
    if configured:
        return configured.rstrip("/")
    return f"{request.scheme}://{request.host}"


def secure_cookies(request: web.Request) -> bool:
    public = request.app[SERVICES].config.service.public_url or ""
    return request.secure or public.startswith("https://")
