"""The kiosk's side of pairing: the RFC 8628 device flow against the room service, run forever.

    pairing = Pairing(config, bus)
    pairing.serve()                       # pairing.start, pairing.unpair on the bus
    rt.spawn(pairing.run(), "pairing")
    creds = pairing.credentials           # DeviceCredentials (room_url, token) or None
    pairing.report_unauthorized()         # the room service answered 401 to the token

States, published on pairing.status (retained):
    unpaired   no token; reason says why (never paired, unpaired on request, revoked)
    code       showing user_code until expires_at (Unix time); verification_uri_complete for a QR
    paired     room_name; the token is in <state_dir>/room-credentials.json (0600)
    error      reason (room service unreachable, pairing refused)

At start a kiosk without a token runs the flow if publisher.room_url is set; pairing.start
(with a URL, or the configured one) runs it on demand. A code that expires is replaced by a
new one. Polls are `interval` apart, 5 s more after each slow_down. While paired, the token is
checked at start and then every check_every_s; a 401 then (or reported by the publisher's
WebSocket) drops the token and leaves the kiosk unpaired, saying so, until someone starts
pairing again: a revoked kiosk does not put a new code up on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

import aiohttp
import msgspec

from appliance import __version__
from appliance.bus.client import BusClient
from appliance.bus.topics import Empty, Ok, PairingStart, PairingStatus
from appliance.config import AppConfig
from appliance.pairing.client import RateLimited, RoomClient, RoomServiceError, Unauthorized
from appliance.pairing.credentials import (
    DeviceCredentials,
    credentials_problem,
    device_id,
    device_model,
    forget_credentials,
    load_credentials,
    normalize_room_url,
    save_credentials,
)
from appliance.room import api_types as t

log = logging.getLogger(__name__)

SLOW_DOWN_STEP_S = 5.0  # RFC 8628 3.5
MIN_INTERVAL_S = 1.0  # the shortest poll interval a room service may ask for
CLOCK_JUMP_S = 5.0  # the wall clock moved this much against the monotonic one: it was set
IDLE_RECHECK_S = 5.0  # unpaired and idle: look for a token `appliance pair` may have stored
FlowEnd = Literal["paired", "stopped", "denied"]


class PairingRefused(Exception):
    pass


class Pairing:
    def __init__(
        self,
        config: AppConfig,
        bus: BusClient | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        on_status: Callable[[PairingStatus], None] | None = None,
        check_every_s: float = 300.0,
        retry_max_s: float = 60.0,
    ) -> None:
        self.state_dir = config.paths.state_dir
        self.bus = bus
        self.on_status = on_status
        self.check_every_s = check_every_s
        self.retry_max_s = retry_max_s
        self.configured_url: str | None = None
        self._config_error = ""
        if config.publisher.room_url:
            try:
                self.configured_url = normalize_room_url(config.publisher.room_url)
            except ValueError as exc:
                self._config_error = f"publisher.room_url: {exc}"
        self.credentials: DeviceCredentials | None = None
        self.status: PairingStatus | None = None
        self._session = session
        self._room_url = self.configured_url
        self._want_flow = False
        # Every command bumps the generation; a wait or a flow begun under an older one ends.
        self._gen = 0
        self._wake = asyncio.Event()

    # --- the bus ------------------------------------------------------------------------------

    def serve(self) -> None:
        if self.bus is not None:
            self.bus.serve("pairing.start", self._on_start)
            self.bus.serve("pairing.unpair", self._on_unpair)

    async def _on_start(self, params: PairingStart) -> Ok:
        return self.start(params.room_url)

    async def _on_unpair(self, params: Empty) -> Ok:
        return await self.unpair()

    # --- commands -----------------------------------------------------------------------------

    def _command(self) -> None:
        self._gen += 1
        self._wake.set()

    def start(self, room_url: str | None = None) -> Ok:
        if self.credentials is not None:
            return Ok(ok=False, detail=f"paired with {self.credentials.room_name!r} already; unpair first")
        try:
            url = normalize_room_url(room_url) if room_url else self.configured_url
        except ValueError as exc:
            return Ok(ok=False, detail=str(exc))
        if url is None:
            return Ok(
                ok=False, detail=self._config_error or "no room URL: pass one or set publisher.room_url"
            )
        self._room_url = url
        self._want_flow = True
        self._command()
        return Ok(ok=True, detail=f"pairing with {url}")

    async def unpair(self) -> Ok:
        creds = self.credentials
        self._want_flow = False
        self._drop("unpaired on request")
        if creds is None:
            return Ok(ok=True, detail="was not paired")
        try:
            async with self._client_session() as session:
                await RoomClient(creds.room_url, session).revoke(creds.token)
        except RoomServiceError as exc:
            # Unpaired here all the same: an admin can revoke the token on the service later.
            return Ok(ok=True, detail=f"unpaired; could not tell the room service ({exc})")
        return Ok(ok=True, detail="unpaired; the room service revoked the token")

    def report_unauthorized(self) -> None:
        """The room service refused the token (401 on the WebSocket): check it now, and if the
        service confirms, forget it."""
        if self.credentials is not None:
            self._command()

    def _drop(self, reason: str) -> None:
        forget_credentials(self.state_dir)
        self.credentials = None
        self._command()
        self._publish(PairingStatus(state="unpaired", reason=reason))

    # --- status -------------------------------------------------------------------------------

    def _publish(self, status: PairingStatus) -> None:
        if self.status is None or status.state != self.status.state:
            log.info("pairing: %s%s", status.state, f" ({status.reason})" if status.reason else "")
        self.status = status
        if self.bus is not None:
            self.bus.publish_nowait("pairing.status", status)
        if self.on_status is not None:
            self.on_status(status)

    def _paired_status(self, creds: DeviceCredentials) -> PairingStatus:
        return PairingStatus(
            state="paired", room_name=creds.room_name, reason=f"room service {creds.room_url}"
        )

    # --- the loop -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _client_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        if self._session is not None:
            yield self._session
        else:
            async with aiohttp.ClientSession() as session:
                yield session

    async def run(self) -> None:
        async with self._client_session() as session:
            self._start_state()
            while True:
                gen = self._gen
                try:
                    if self.credentials is not None:
                        await self._watch_token(session, gen)
                    elif self._want_flow and self._room_url is not None:
                        if await self._flow(session, self._room_url, gen) == "denied":
                            self._want_flow = False
                    else:
                        await self._idle(gen)
                except OSError as exc:
                    # The state directory is not writable (full, read-only): say so and retry,
                    # rather than take the publisher down with us.
                    self._publish(PairingStatus(state="error", reason=f"cannot store pairing state: {exc}"))
                    await self._sleep(self.retry_max_s, gen)

    def _start_state(self) -> None:
        creds = load_credentials(self.state_dir)
        if creds is not None and self.configured_url is not None and creds.room_url != self.configured_url:
            forget_credentials(self.state_dir)
            log.info("pairing: publisher.room_url changed from %s; pairing again", creds.room_url)
            creds = None
        if creds is not None:
            self.credentials = creds
            self._publish(self._paired_status(creds))
            return
        self._want_flow = self.configured_url is not None
        reason = "not paired with a room yet"
        if self.configured_url is None:
            reason = (
                self._config_error or "not paired; set publisher.room_url or start pairing on the setup page"
            )
        self._publish(PairingStatus(state="unpaired", reason=reason))

    async def _sleep(self, seconds: float, gen: int) -> bool:
        """Wait; True (stop) as soon as a command arrives, False when the time is up."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while gen == self._gen:
            left = end - loop.time()
            if left <= 0:
                return False
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._wake.wait()
        return True

    async def _idle(self, gen: int) -> None:
        while not await self._sleep(IDLE_RECHECK_S, gen):
            creds = load_credentials(self.state_dir)
            if creds is not None:  # paired from a shell meanwhile (`appliance pair`)
                self.credentials = creds
                self._publish(self._paired_status(creds))
                return

    async def _watch_token(self, session: aiohttp.ClientSession, gen: int) -> None:
        creds = self.credentials
        assert creds is not None
        client = RoomClient(creds.room_url, session)
        unreachable = False
        while gen == self._gen:
            try:
                me = await client.me(creds.token)
                if gen != self._gen:
                    return  # unpaired meanwhile: the answer no longer matters
            except Unauthorized:
                if gen != self._gen:
                    return
                self._drop("the room service revoked this kiosk's token; pair it again")
                return
            except RoomServiceError as exc:
                if not unreachable:  # say it once, not every check
                    log.warning("pairing: cannot check the token: %s", exc)
                unreachable = True
            else:
                unreachable = False
                if me.room.name != creds.room_name:  # renamed on the service
                    creds = msgspec.structs.replace(creds, room_name=me.room.name)
                    save_credentials(self.state_dir, creds)
                    self.credentials = creds
                    self._publish(self._paired_status(creds))
            if await self._sleep(self.check_every_s, gen):
                return

    async def _flow(self, session: aiohttp.ClientSession, room_url: str, gen: int) -> FlowEnd:
        """Codes until one is approved (paired), refused (denied) or a command intervenes."""
        client = RoomClient(room_url, session)
        ident = device_id(self.state_dir)
        model = device_model()
        backoff = 1.0
        stored = load_credentials(self.state_dir)  # `appliance pair` replaces these
        while gen == self._gen:
            try:
                grant = await client.authorize(ident, model, __version__)
            except RoomServiceError as exc:
                if gen != self._gen:
                    return "stopped"  # unpaired or restarted meanwhile: not this flow's to say
                self._publish(PairingStatus(state="error", reason=f"cannot reach the room service: {exc}"))
                if await self._sleep(backoff, gen):
                    return "stopped"
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            if gen != self._gen:
                # Unpaired or restarted while the request was out: a code published now would
                # stay on the screen (pairing.status is retained) for a flow that is over.
                return "stopped"
            if isinstance(grant, RateLimited):
                self._publish(PairingStatus(state="error", reason="the room service is busy; trying again"))
                if await self._sleep(grant.retry_after, gen):
                    return "stopped"
                continue
            backoff = 1.0
            end = await self._poll(client, room_url, grant, gen, stored)
            if end is not None:
                return end
        return "stopped"

    async def _poll(
        self,
        client: RoomClient,
        room_url: str,
        grant: t.AuthorizeResponse,
        gen: int,
        stored: DeviceCredentials | None = None,
    ) -> FlowEnd | None:
        """Poll one code; None when it is spent without a decision (expired): ask for another.
        Credentials on disk other than `stored` (the ones there when the flow began) end it too:
        the kiosk was paired from a shell (`appliance pair`) meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grant.expires_in

        def show_code() -> PairingStatus:
            status = PairingStatus(
                state="code",
                user_code=grant.user_code,
                expires_at=time.time() + (deadline - loop.time()),
                verification_uri_complete=grant.verification_uri_complete,
                reason=f"enter the code at {grant.verification_uri}",
            )
            self._publish(status)
            return status

        shown = show_code()
        # At least a second: an interval of 0 (or less) from a broken service would poll it
        # as fast as it answers.
        interval = max(MIN_INTERVAL_S, float(grant.interval))
        failures = 0  # polls in a row that got no sensible answer
        while True:
            # RFC 8628 3.5: back off while the service is unreachable or answers nonsense (a
            # 5xx, a captive portal's HTML), rather than polling it at full pace for the whole
            # life of the code; the code on the screen stays valid meanwhile.
            wait = interval if not failures else min(interval * 2**failures, max(interval, self.retry_max_s))
            if await self._sleep(wait, gen):
                return "stopped"
            # The code's life runs on the monotonic clock; expires_at is Unix time for the
            # screen. A Pi has no RTC: NTP setting the clock while a code shows would leave the
            # screen counting down to a wrong time, so the code goes out again on the new clock.
            if abs(time.time() + (deadline - loop.time()) - (shown.expires_at or 0.0)) > CLOCK_JUMP_S:
                shown = show_code()
            found = load_credentials(self.state_dir)
            if found is not None and found != stored:
                self.credentials = found
                self._publish(self._paired_status(found))
                return "paired"
            if loop.time() >= deadline:
                return None
            try:
                answer = await client.poll(grant.device_code)
            except RoomServiceError as exc:
                failures += 1
                log.info("pairing: poll failed (%s); polling on, less often", exc)
                continue
            if isinstance(answer, t.TokenResponse) and (problem := self._unusable(room_url, answer)):
                failures += 1
                log.warning("pairing: the room service granted a token that cannot be used (%s)", problem)
                continue
            if gen != self._gen:
                if isinstance(answer, t.TokenResponse):
                    # Approved just as the kiosk was unpaired (or pairing restarted): this token
                    # is nobody's now. Left live, the room would list a kiosk that is not paired.
                    await self._revoke_quietly(client, answer.access_token)
                return "stopped"  # unpaired or restarted while the poll was out
            failures = 0
            if isinstance(answer, RateLimited):
                interval = max(interval, answer.retry_after)
            elif isinstance(answer, t.TokenResponse):
                creds = DeviceCredentials(
                    room_url=room_url,
                    token=answer.access_token,
                    room_id=answer.room.id,
                    room_name=answer.room.name,
                    paired_at=time.time(),
                )
                save_credentials(self.state_dir, creds)
                self.credentials = creds
                self._publish(self._paired_status(creds))
                return "paired"
            elif answer.error == "slow_down":
                interval += SLOW_DOWN_STEP_S
            elif answer.error == "access_denied":
                self._publish(
                    PairingStatus(
                        state="error", reason="pairing was refused at the room service; start it again"
                    )
                )
                return "denied"
            elif answer.error != "authorization_pending":
                return None  # expired_token, invalid_grant: a new code

    @staticmethod
    def _unusable(room_url: str, answer: t.TokenResponse) -> str | None:
        probe = DeviceCredentials(
            room_url=room_url, token=answer.access_token, room_id="", room_name="", paired_at=0.0
        )
        return credentials_problem(probe)

    @staticmethod
    async def _revoke_quietly(client: RoomClient, token: str) -> None:
        try:
            await client.revoke(token)
        except RoomServiceError as exc:
            # The admin can still revoke it on the service; the token itself is never logged.
            log.warning("pairing: could not revoke a token granted after the flow ended: %s", exc)

    async def pair_once(self, room_url: str) -> DeviceCredentials:
        """The flow without the bus, until paired (`appliance pair`). Raises PairingRefused."""
        self._room_url = normalize_room_url(room_url)
        async with self._client_session() as session:
            while True:
                end = await self._flow(session, self._room_url, self._gen)
                if end == "paired" and self.credentials is not None:
                    return self.credentials
                if end == "denied":
                    raise PairingRefused("pairing was refused at the room service")
