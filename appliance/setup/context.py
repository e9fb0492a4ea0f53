"""Everything a setup page handler needs, in one object the app carries (web.AppKey)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.bus.client import BusClient
from appliance.bus.topics import Message, SetupCode
from appliance.config import AppConfig
from appliance.setup.activation import Activity
from appliance.setup.auth import KnownDevices, PasswordStore, RateLimiter, Sessions, SetupCodes
from appliance.setup.live import LiveState
from appliance.setup.logs import RingHandler
from appliance.setup.system import SystemControl

# How long a bus request waits for a bus that is not there before the page says so. Without
# this the request waits for its whole timeout (up to minutes for a long calibration), then
# blames the daemon that should have answered.
BUS_WAIT_S = 2.0
# A change of the wall clock against the monotonic one this large is the clock being set, not
# the two drifting (NTP slews by at most 0.5 ms/s): the setup code's expiry is sent again.
CLOCK_JUMP_S = 2.0


@dataclass
class Context:
    config: AppConfig
    config_file: Path
    bus: BusClient
    system: SystemControl
    tls: bool = False
    cert_path: Path | None = None
    live: LiveState = field(default_factory=LiveState)
    passwords: PasswordStore | None = None
    codes: SetupCodes = field(default_factory=SetupCodes)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    sessions: Sessions = field(default_factory=Sessions)
    devices: KnownDevices = field(default_factory=KnownDevices)
    ring_log: RingHandler = field(default_factory=RingHandler)
    # scrypt takes 32 MiB and a CPU for a tenth of a second: one at a time.
    hashing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    config_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: float = field(default_factory=time.time)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    activity: Activity = field(default_factory=Activity)  # requests, for the idle exit
    _code_offset: float | None = None  # SetupCodes.clock_offset() when setup.code was last sent

    def __post_init__(self) -> None:
        if self.passwords is None:
            self.passwords = PasswordStore(self.config.paths.state_dir)

    @property
    def store(self) -> PasswordStore:
        assert self.passwords is not None
        return self.passwords

    def publish_code(self) -> None:
        """Show the live setup code on the kiosk screen, or clear it."""
        live = self.codes.current()
        msg = SetupCode(code=live[0], expires_at=live[1]) if live else SetupCode(code=None)
        self._code_offset = self.codes.clock_offset()
        self.bus.publish_nowait("setup.code", msg)

    def republish_code_if_clock_jumped(self) -> bool:
        """Publish the live code again if the wall clock was set since it was published.

        setup.code carries its expiry in wall time (the screen shows the time left and hides an
        expired code by its own wall clock). The code itself expires by the monotonic clock, but
        after NTP's first sync moved the wall clock by months the screen would hide a live code
        at once, or show a long-gone expiry: republished, the expiry follows the new clock."""
        if self.codes.current() is None or self._code_offset is None:
            return False
        if abs(self.codes.clock_offset() - self._code_offset) < CLOCK_JUMP_S:
            return False
        self.publish_code()
        return True

    async def password_is_set(self) -> bool:
        return await asyncio.to_thread(self.store.is_set)

    async def check_password_limited(
        self, client: str, password: str, *, known: bool = False
    ) -> tuple[bool, float]:
        """(right, 0.0), or (False, seconds to wait) when the client is over its limit.
        known: the client is a known device (RateLimiter.retry_after).

        The limit is checked again once it is this request's turn to hash, and a failure is
        counted before the next one's turn: requests sent all at once would otherwise all pass
        a check made on arrival, before any of them had failed, and each get a guess."""
        async with self.hashing:
            wait = self.limiter.retry_after(client, known=known)
            if wait > 0:
                return False, wait
            right = await asyncio.to_thread(self.store.check, password)
            if not right:
                self.limiter.failed(client)
            return right, 0.0

    async def request(self, method: str, params: Message, timeout: float) -> Any:
        """bus.request; NotConnected within BUS_WAIT_S when there is no bus to ask."""
        await self.bus.wait_connected(BUS_WAIT_S)
        return await self.bus.request(method, params, timeout=timeout)

    async def set_password(self, password: str) -> None:
        async with self.hashing:
            await asyncio.to_thread(self.store.set, password)


CTX = web.AppKey("ctx", Context)
