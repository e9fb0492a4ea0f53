"""TURN credentials by the TURN REST scheme, as coturn checks them with use-auth-secret.

username = "<unix expiry>:<id>", password = base64(HMAC-SHA1(secret, username)). coturn
recomputes the password from the shared secret and refuses the username once its expiry has
passed, so the service never talks to coturn and a leaked credential dies on its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from appliance.room.config import IceServerConfig
from appliance.room.protocol import IceServer


def turn_credentials(secret: bytes, peer: str, now: float, ttl_s: int) -> tuple[str, str]:
    username = f"{int(now) + ttl_s}:{peer}"
    mac = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


class IceServers:
    """The configured STUN/TURN servers, with credentials minted per session where asked."""

    def __init__(self, servers: list[IceServerConfig], secret: bytes | None, ttl_s: int) -> None:
        self._servers = servers
        self._secret = secret
        self._ttl_s = ttl_s

    def for_peer(self, peer: str, now: float, valid_s: float | None = None) -> list[IceServer]:
        """The servers for one peer; minted credentials last turn.ttl_s, or valid_s if sooner
        (a viewer's: its session's end, after which it has no business with the relay)."""
        ttl_s = self._ttl_s if valid_s is None else max(1, min(self._ttl_s, int(valid_s)))
        out: list[IceServer] = []
        for server in self._servers:
            username, credential = server.username, server.credential
            if server.turn_credentials and self._secret is not None:
                username, credential = turn_credentials(self._secret, peer, now, ttl_s)
            out.append(IceServer(urls=list(server.urls), username=username, credential=credential))
        return out
