"""The kiosk's WebSocket to the room service (appliance.room.protocol), kept up forever.

    link = RoomLink(credentials, on_message)
    rt.spawn(link.run(), "room")
    await link.send(protocol.Offer(to=viewer_id, sdp=...))

`credentials()` gives the room URL and the device token from pairing, or None while the kiosk
is unpaired (then the link waits and asks again; `refresh()` cuts the wait short, and drops a
connection made with credentials that changed). The device authenticates with
`Authorization: Bearer <token>` on the upgrade. Every loss leads to a new attempt after an
exponential backoff with full jitter, reset once a connection was welcomed. How far it backs
off depends on who said no:

- the service answered and refused (an HTTP status instead of the upgrade: rate-limited,
  overloaded, the token refused): 0.5 s doubling to 30 s. Asking again at once helps nobody.
- no answer (no route, a connect timeout, a refused or reset connection, a dropped socket, a
  missed heartbeat): 0.5 s doubling to only LINK_RETRY_MAX_S, so the kiosk is back within a few
  seconds of its network (issue 8: within 5 s of the link coming back). Attempts that reach
  nothing cost the service nothing; when it comes back after a restart, its rate limit on
  WebSocket connections turns a crowd of kiosks into 429s, which back off the long way.
- the service's TLS certificate does not verify (expired, for another host name, self-signed)
  or the TLS handshake fails on the kiosk's side (plain HTTP on the https port, a server
  hello it rejects): the long way too, and reported in `refused` like a refusal. Asking again in two
  seconds does not fix a certificate: someone must, or the kiosk's clock (a Pi has no
  real-time clock: before NTP syncs it may see every certificate as not yet valid). A TLS
  connection cut during the handshake (an EOF, a reset: also how aiohttp sees a server that
  rejects the kiosk's hello) is a network failure, not this.

A dead link is found by the WebSocket heartbeat (a ping every HEARTBEAT_S, the pong due within
half of it), not by TCP, which may take many minutes to give up on a silent peer. An attempt's
TCP connect is cut off after CONNECT_TIMEOUT_S: into a black hole the kernel sends its SYN again
only after 1, 3, 7, 15, 31 s, so an attempt left to itself would notice a network that came
back up to 16 s late; the whole handshake (TLS, the upgrade) gets HANDSHAKE_TIMEOUT_S. Messages
are handed to `on_message` in order, one at a time; it must not block (the publisher queues per
viewer). Malformed messages from the service are logged and dropped: a bug there must not take
the kiosk's calls down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp

from appliance.room import protocol

log = logging.getLogger(__name__)

WS_PATH = "/api/v1/ws"
HEARTBEAT_S = 10.0
# An attempt's third SYN leaves 3 s in: 4 s gives it time to be answered across a slow link.
CONNECT_TIMEOUT_S = 4.0
HANDSHAKE_TIMEOUT_S = 15.0
# The wait between attempts that reached nothing: at most 1.5 x this with the jitter. A network
# that comes back is found within about 3.3 s of it: what is left of an attempt after its last
# SYN (1 s), then the wait (up to 2.25 s).
LINK_RETRY_MAX_S = 1.5
# What the kiosk reads from the service. A viewer may send up to protocol.MAX_MESSAGE_BYTES,
# and the service relays it with its `from` added: a few bytes more. Held to the protocol's
# limit, one viewer's answer at that size cut the kiosk's link (close 1009) -- and with it
# every viewer's signaling, again at each reconnect as the viewer answered the new offer.
# The message types still bound every field (an SDP to MAX_MESSAGE_BYTES).
READ_LIMIT = 2 * protocol.MAX_MESSAGE_BYTES

# Why an attempt ended: the service answered no, or nothing answered (or the link dropped).
Failure = Literal["refused", "unreachable"]


@dataclass(frozen=True)
class Credentials:
    room_url: str
    token: str


def ws_url(room_url: str) -> str:
    """https://rooms.example.org[/prefix] -> wss://rooms.example.org[/prefix]/api/v1/ws"""
    parts = urllib.parse.urlsplit(room_url)
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {room_url!r}")
    path = parts.path.rstrip("/") + WS_PATH
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


@dataclass
class Backoff:
    """Exponential backoff with full jitter (pure; `random` is a seam for tests)."""

    initial: float = 0.5
    maximum: float = 30.0
    current: float = 0.0
    rand: Callable[[], float] = random.random

    def next_delay(self, maximum: float | None = None) -> float:
        """The next delay; `maximum` caps this step lower than the usual maximum."""
        cap = self.maximum if maximum is None else min(maximum, self.maximum)
        self.current = self.initial if self.current == 0.0 else min(self.current * 2, cap)
        # Full jitter in [0.5, 1.5) of the step: kiosks that lost the service together (it
        # restarted) come back spread out instead of in one burst.
        return self.current * (0.5 + self.rand())

    def reset(self) -> None:
        self.current = 0.0


MessageHandler = Callable[[protocol.ToClient], None]
CredentialSource = Callable[[], Awaitable[Credentials | None]]


def tls_problem(exc: aiohttp.ClientSSLError | ssl.SSLError) -> str | None:
    """What is wrong with the service's TLS, in words for whoever reads the kiosk's health;
    None when the connection was only cut during the handshake (as by a network going down)."""
    # aiohttp wraps the ssl module's error (ClientConnectorCertificateError around an
    # SSLCertVerificationError, ClientConnectorSSLError around any other SSLError); a raw
    # SSLError is taken as it is, should another path let one through.
    inner: BaseException | None = exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        inner = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError):
        inner = exc.os_error
    if isinstance(inner, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return None
    if isinstance(inner, ssl.SSLCertVerificationError):
        # verify_message and reason are set by the ssl module, not by every constructor.
        why = getattr(inner, "verify_message", None) or getattr(inner, "reason", None) or str(inner)
        problem = f"the room service's TLS certificate does not verify ({why})"
        if "not yet valid" in why:
            problem += "; is the kiosk's clock behind (no NTP sync yet)?"
        return problem
    why = getattr(inner, "reason", None) or str(inner or exc) or type(exc).__name__
    return f"the TLS handshake with the room service failed ({why})"


class RoomLink:
    def __init__(
        self,
        credentials: CredentialSource,
        on_message: MessageHandler,
        *,
        on_state: Callable[[bool], None] = lambda connected: None,
        on_unauthorized: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
        heartbeat: float = HEARTBEAT_S,
        link_retry_max: float = LINK_RETRY_MAX_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._credentials = credentials
        self._on_message = on_message
        self._on_state = on_state
        self._on_unauthorized = on_unauthorized
        self._wake = asyncio.Event()
        self._closing: asyncio.Future[bool] | None = None
        self.backoff = backoff or Backoff()
        self.heartbeat = heartbeat
        self.link_retry_max = link_retry_max
        self.connect_timeout = connect_timeout
        # None: aiohttp's default, the system's CAs with the host name checked.
        self.ssl_context = ssl_context
        self._generation = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = False
        self.connects = 0
        self.last_error = ""
        # Why the service refused this kiosk (an HTTP status instead of the upgrade, or a TLS
        # certificate or handshake that failed), until it welcomes it or the credentials
        # change: for the daemon's health, since no viewer can reach the kiosk meanwhile and
        # the slow retries are otherwise silent.
        self.refused: str | None = None

    async def send(self, msg: protocol.Msg) -> bool:
        """Send one message; False when there is no connection (the message is dropped: every
        message the kiosk sends belongs to a call that a reconnect sets up afresh)."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_str(protocol.encode(msg))
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            log.info("room: send failed (%s)", exc)
            return False
        return True

    async def run(self) -> None:
        # No overall timeout: it would cut the WebSocket itself off; the handshake has its own.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self._wake.clear()
                creds = await self._credentials()
                failure: Failure = "refused"
                if creds is None:
                    self._fail("not paired with a room yet")
                else:
                    failure = await self._session(session, creds)
                cap = self.link_retry_max if failure == "unreachable" else None
                if not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.backoff.next_delay(cap)):
                            await self._wake.wait()

    def refresh(self) -> None:
        """The credentials changed (paired, unpaired, re-paired): drop the connection, if any,
        and connect again with the new ones at once rather than after the backoff."""
        self.backoff.reset()
        self.refused = None  # whatever refused the old credentials says nothing of the new
        self._wake.set()
        self._generation += 1  # a handshake under way with the old ones is dropped when it ends
        ws = self._ws
        if ws is not None and not ws.closed:
            self._closing = asyncio.ensure_future(ws.close(code=1000, message=b"credentials changed"))

    async def _session(self, session: aiohttp.ClientSession, creds: Credentials) -> Failure:
        try:
            url = ws_url(creds.room_url)
        except ValueError as exc:
            self._fail(f"bad room URL: {exc}")
            return "refused"
        generation = self._generation
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                ws = await session.ws_connect(
                    url,
                    headers={"Authorization": f"Bearer {creds.token}"},
                    heartbeat=self.heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    max_msg_size=READ_LIMIT,
                    autoping=True,
                    ssl=self.ssl_context if self.ssl_context is not None else True,
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                self._fail(f"cannot connect to {url}: the room service refused the device token")
                self._on_unauthorized()  # pairing checks the token and forgets it if revoked
            else:
                self._fail(f"cannot connect to {url}: {exc}")
            if generation == self._generation:  # not credentials refresh() already replaced
                self.refused = self.last_error
            return "refused"
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:  # before OSError: SSLError is one
            problem = tls_problem(exc)
            if problem is None:  # the connection was cut mid-handshake: the network's doing
                self._fail(f"cannot connect to {url}: {exc or type(exc).__name__}")
                return "unreachable"
            self._fail(f"cannot connect to {url}: {problem}")
            if generation == self._generation:
                self.refused = self.last_error
            return "refused"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._fail(f"cannot connect to {url}: {exc or type(exc).__name__}")
            return "unreachable"
        if generation != self._generation:
            # refresh() came during the handshake: these credentials are stale already.
            await ws.close(code=1000, message=b"credentials changed")
            return "refused"
        self._ws = ws
        self.connects += 1
        log.info("room: connected to %s", url)
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._dispatch(message.data)
                elif message.type == aiohttp.WSMsgType.ERROR:
                    break
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.info("room: connection error: %s", exc)
        finally:
            self._ws = None
            await ws.close()
            code = ws.close_code
            if self.connected:
                self.connected = False
                self._on_state(False)
            self._fail(f"connection to {url} lost (close code {code})")
        return "unreachable"

    def _dispatch(self, data: str) -> None:
        try:
            msg = protocol.decode_to_client(data, READ_LIMIT)
        except protocol.ProtocolError as exc:
            log.warning("room: dropped a malformed message from the service (%s: %s)", exc.code, exc)
            return
        if isinstance(msg, protocol.Welcome):
            self.backoff.reset()
            self.last_error = ""
            self.refused = None
            if not self.connected:
                self.connected = True
                self._on_state(True)
        try:
            self._on_message(msg)
        except Exception:
            # A bug handling one message must not drop the link and with it every call.
            log.exception("room: error handling %s", type(msg).__name__)

    def _fail(self, reason: str) -> None:
        if reason != self.last_error:
            log.warning("room: %s; retrying with backoff", reason)
        self.last_error = reason
