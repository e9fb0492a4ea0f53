"""GET /api/v1/ws: the WebSocket around the hub (appliance.room.hub), for devices and viewers.

Authentication happens before the upgrade (a device's bearer token, a viewer's session), so a
refused client gets a plain 401 and never a socket. After that, each connection:

- reads text frames, each checked against the protocol's size and per-connection rate limit,
  decoded (appliance.room.protocol.decode_to_service) and handed to the hub;
- answers anything wrong with an error {code, message, ref}, and closes with 1008 a connection
  that keeps misbehaving (MAX_STRIKES errors faster than one a second);
- writes through its own bounded queue and writer task, so one slow client never holds up
  the relay to the others; a client whose queue fills is closed.

Frames beyond the protocol limit but within 4x of it get a too-large error; larger ones are
cut off by aiohttp itself (close 1009), before they are buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from aiohttp import WSMsgType, web

from appliance.room import protocol as p
from appliance.room.hub import CLOSE_POLICY, Hub, Member, RoomBusy, TooManyViewers
from appliance.room.ratelimit import Bucket

log = logging.getLogger(__name__)

SEND_QUEUE = 256  # messages waiting for one slow client before it is cut off
MAX_STRIKES = 10  # errors in a burst before the connection is closed; refilled at one a second
HEARTBEAT_S = 30.0  # aiohttp pings; a client that stops answering is dropped
READ_LIMIT = 4 * p.MAX_MESSAGE_BYTES
CLOSE_TIMEOUT_S = 5.0  # for a client to answer our close frame
# Answers to a message that raced the other side leaving (candidates still in flight when a
# viewer or the kiosk went). The sender did nothing wrong, so they are no strike: counted as
# one, a dozen closed a kiosk, and every viewer's call with it. The rate limit still bounds them.
RACE_ERRORS = frozenset({"no-device", "no-such-viewer"})


class WsPeer:
    """A hub Peer on an aiohttp WebSocket: send() queues, a writer task drains, then closes."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: deque[str] = deque()
        self.closing: tuple[int, str] | None = None
        self._wake = asyncio.Event()
        self._open = asyncio.Event()  # set once the upgrade is done: only then can we write
        self._writer = asyncio.get_running_loop().create_task(self._write())
        self._closer: asyncio.Task[None] | None = None

    def opened(self) -> None:
        self._open.set()

    def send(self, text: str) -> None:
        if self.closing is not None:
            return
        if len(self.queue) >= SEND_QUEUE:
            self._give_up()
            return
        self.queue.append(text)
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        """Close after what is queued (an error saying why, say) has been sent."""
        if self.closing is None:
            self.closing = (code, reason)
            self._wake.set()

    def _give_up(self) -> None:
        """A client this far behind has stopped reading: drop what waits for it, stop the writer
        (it is stuck in a send) and close from here."""
        self.queue.clear()
        self.close(CLOSE_POLICY, "too slow: messages piled up unread")
        self._writer.cancel()
        self._closer = asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        assert self.closing is not None
        code, reason = self.closing
        # Bounded: if the client never answers the close, aiohttp drops the connection.
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close(code=code, message=reason.encode()[:120])

    async def _write(self) -> None:
        await self._open.wait()
        try:
            while True:
                while self.queue:
                    await self.ws.send_str(self.queue.popleft())
                if self.closing is not None:
                    break
                self._wake.clear()
                await self._wake.wait()
        except (ConnectionError, RuntimeError):
            return  # the socket went away under us; the read loop sees that too
        await self._close()

    async def finish(self) -> None:
        """Close (normally, unless a reason was given) and wait for the writer."""
        self.close(1000, "")
        if not self._open.is_set():
            self._writer.cancel()
        _, stuck = await asyncio.wait({self._writer}, timeout=CLOSE_TIMEOUT_S + 1)
        for task in stuck:
            task.cancel()
        await asyncio.gather(self._writer, *([self._closer] if self._closer else []), return_exceptions=True)


def _ref(data: str | bytes) -> str | None:
    """The type of a message that failed to decode, when it has a readable one."""
    # Only "type" is read: decoding the whole message again could raise (RecursionError on
    # deep nesting) inside the error path itself and end the connection without a reply.
    return p.message_type(data)


class Connection:
    """One member's read loop: limits, decoding, the hub."""

    def __init__(self, hub: Hub, member: Member, peer: WsPeer) -> None:
        self.hub = hub
        self.member = member
        self.peer = peer
        now = time.monotonic()
        self.rate = Bucket(float(p.RATE_BURST), p.RATE_PER_S, float(p.RATE_BURST), now)
        self.strikes = Bucket(float(MAX_STRIKES), 1.0, float(MAX_STRIKES), now)

    def _reply_error(self, err: p.Error) -> None:
        self.peer.send(p.encode(err))
        if self.strikes.take(time.monotonic()):
            self.peer.close(CLOSE_POLICY, "too many bad or too frequent messages")

    def on_text(self, data: str) -> None:
        if self.rate.take(time.monotonic()):
            self._reply_error(p.Error(code="rate-limited", message="too many messages", ref=_ref(data)))
            return
        try:
            msg = p.decode_to_service(data)
        except p.ProtocolError as exc:
            self._reply_error(p.Error(code=exc.code, message=str(exc)[:300], ref=_ref(data)))
            return
        err = self.hub.handle(self.member, msg)
        if err is None:
            return
        if err.code in RACE_ERRORS:
            self.peer.send(p.encode(err))
        else:
            self._reply_error(err)

    async def run(self, ws: web.WebSocketResponse) -> None:
        async for frame in ws:
            if self.peer.closing is not None:
                break
            if frame.type == WSMsgType.TEXT:
                self.on_text(frame.data)
            elif frame.type == WSMsgType.BINARY:
                self._reply_error(p.Error(code="bad-message", message="text frames only"))
            elif frame.type == WSMsgType.ERROR:
                log.info("%s %s: %s", self.member.role, self.member.peer_id, ws.exception())
                break


async def serve_member(
    request: web.Request, hub: Hub, join: Callable[[WsPeer], Member], *, expires_in: float | None = None
) -> web.StreamResponse:
    """Join the hub, upgrade, read until the client or the service closes, leave.

    Joining comes first, with no await between the hub's checks and the join, so two devices
    of one room racing in cannot both get in; what the hub sends meanwhile waits in the queue.
    A viewer's connection ends with its session (expires_in seconds from now).
    """
    ws = web.WebSocketResponse(max_msg_size=READ_LIMIT, heartbeat=HEARTBEAT_S, compress=False)
    peer = WsPeer(ws)
    timer: asyncio.TimerHandle | None = None
    try:
        member = join(peer)
    except (RoomBusy, TooManyViewers):
        await peer.finish()
        raise
    try:
        try:
            await ws.prepare(request)
        except ConnectionError:
            # The client left during the handshake. A fresh response (not this half-started
            # socket) lets aiohttp find the connection gone and drop it quietly.
            return web.Response(status=400, text="the client left during the handshake")
        peer.opened()
        if expires_in is not None:
            timer = asyncio.get_running_loop().call_later(
                expires_in, peer.close, CLOSE_POLICY, "viewer session expired"
            )
        await Connection(hub, member, peer).run(ws)
    finally:
        if timer is not None:
            timer.cancel()
        hub.leave(member)
        await peer.finish()
    return ws
