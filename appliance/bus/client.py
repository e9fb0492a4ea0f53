"""The async bus client every daemon uses.

    async with BusClient(path, "thermal") as bus:
        await bus.publish("thermal.status", ThermalStatus(state="ok"))
        async for rx in bus.subscribe("screening.*"):
            ...
        page = await bus.request("screening.events_since", EventsSince(seq=41))
        bus.serve("camera.keyframe", handler)

The client reconnects by itself with backoff and jitter, subscribes again, registers its
methods again and re-publishes its last state values (the broker lost its retained values if it
restarted), so a broker restart shows to the daemon only as a short gap. While disconnected,
telemetry is dropped, the last state per topic is kept, and events wait in a bounded outbox.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from appliance.bus.framing import (
    DEFAULT_MAX_FRAME,
    MAX_HEADER,
    MAX_TOPIC,
    PREFIX,
    PREFIX_SIZE,
    ErrorInfo,
    Frame,
    FrameDecoder,
    encode_error,
    encode_frame,
    encode_pub,
    frame_size,
    pub_topic,
    typed_pub_decoder,
)
from appliance.bus.topics import (
    EVENT,
    STATE,
    TELEMETRY,
    Delivery,
    Message,
    TopicSpec,
    matches,
    method_spec,
    topic_spec,
)
from appliance.errors import BusError, FrameError, NoSuchMethod, NotConnected, RemoteError, RequestTimeout

log = logging.getLogger(__name__)

M = TypeVar("M")
Handler = Callable[[Any], Awaitable[Message]]

# Bound on the per-client cache of topic specs (scratch topics are open-ended).
_MAX_CACHED_TOPICS = 4096

# A connection that lasted less than this is treated like a failed connect for the backoff.
_HEALTHY_S = 1.0

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type, msgspec.msgpack.Decoder[Any]] = {}
_error_decoder = msgspec.msgpack.Decoder(ErrorInfo)


def _decode(typ: type[M], payload: msgspec.Raw | bytes) -> M:
    dec = _decoders.get(typ)
    if dec is None:
        dec = _decoders[typ] = msgspec.msgpack.Decoder(typ)
    result: M = dec.decode(payload)
    return result


class Received(msgspec.Struct, gc=False):
    """One message as a subscriber gets it.

    gc=False: it holds a decoded message and bytes, never anything that points back at it, so
    it cannot be part of a reference cycle. Untracked, the messages waiting in a subscription
    queue are not walked by every collection (see Frame in framing.py for the measured cost).
    """

    topic: str
    seq: int
    ts: float
    msg: Message
    attachment: bytes | None = None


class Subscription:
    """An async iterator over messages matching one pattern.

    Bounded: past `maxsize`, telemetry and state drop the oldest telemetry or state message
    (counted in `dropped`), never an event; events, or a queue holding nothing else, make the
    client stop reading from the socket until the consumer catches up, which hands the policy
    to the broker (it cuts off a consumer that stays behind).
    """

    def __init__(self, client: BusClient, pattern: str, maxsize: int) -> None:
        self.client = client
        self.pattern = pattern
        self.maxsize = maxsize
        self.queue: deque[Received] = deque()
        self.dropped = 0
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    def _put(self, item: Received, delivery: Delivery) -> None:
        if len(self.queue) >= self.maxsize and (delivery is EVENT or not self._drop_oldest_latest_wins()):
            # Full of what may not be dropped: stop reading, so the broker's policy applies.
            self.client._hold_reading(self)
        self.queue.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drop_oldest_latest_wins(self) -> bool:
        """Make room by dropping the oldest telemetry or state message; False if there is none.

        A pattern may match events too ('thermal.*' is thermal.frame and thermal.interrupt): the
        head of a full queue can be an event, which must never go. A queue of nothing but events
        then takes the message and holds reading, as an event would.
        """
        queue = self.queue
        for i, rx in enumerate(queue):
            spec = topic_spec(rx.topic)
            if spec is None or spec.delivery is not EVENT:
                del queue[i]
                self.dropped += 1
                return True
        return False

    def __aiter__(self) -> AsyncIterator[Received]:
        return self

    async def __anext__(self) -> Received:
        while not self.queue:
            if self.closed:
                raise StopAsyncIteration
            if self._waiter is not None:
                # One wake-up slot: a second waiting task would take it and strand the first.
                raise RuntimeError(f"subscription {self.pattern!r} has one reader; another task is waiting")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self.queue.popleft()
        if self.client._held and len(self.queue) <= self.maxsize // 2:
            self.client._release_reading(self)
        return item

    async def get(self, timeout: float | None = None) -> Received:
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client._unsubscribe(self)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Protocol(asyncio.Protocol):
    def __init__(self, client: BusClient) -> None:
        self.client = client
        # A client never forwards a frame, so it does not keep a view of each one's bytes.
        self.decoder = FrameDecoder(client.max_frame, keep_raw=False)
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.paused = False
        self.drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake()

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        client = self.client
        if decoder.error is None:
            pos = 0
            if decoder.buffered:  # the rest of the frame the last read ended in
                frames, pos = decoder.finish(data)
                client._on_frames(frames)
            if not decoder.buffered and decoder.error is None:
                # Whole pub frames straight to the subscriptions; the general decoder takes
                # over from the first frame the fast path leaves (another kind, a partial frame,
                # anything unusual), so the order stays that of the stream.
                pos = client._fast_frames(data, pos)
            if pos == len(data) and decoder.error is None:
                return
            data = data[pos:]
        client._on_frames(decoder.feed(data))
        if decoder.error is not None and self.transport is not None:
            log.error("bus: malformed frame from the broker (%s); reconnecting", self.decoder.error)
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    async def drain(self) -> None:
        if self.paused and not self.lost.done():
            if self.drained is None:
                self.drained = asyncio.get_running_loop().create_future()
            # Shared by every waiting publisher: one of them cancelled must not cancel it.
            await asyncio.shield(self.drained)


class BusClient:
    def __init__(
        self,
        path: str | Path,
        name: str,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        backoff_initial: float = 0.02,
        backoff_max: float = 2.0,
        outbox: int = 4096,
    ) -> None:
        self.path = str(path)
        self.name = name
        self.max_frame = max_frame
        # The largest whole frame (prefix included) the broker accepts.
        self._max_wire = max_frame + PREFIX_SIZE
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._proto: _Protocol | None = None
        self._connected = asyncio.Event()
        # Set by close(): wakes the tasks waiting for a connection that will now never come.
        self._closed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._subs: list[Subscription] = []
        # Per topic: the subscriptions it goes to, its delivery policy and its payload decoder.
        self._routes: dict[str, tuple[list[Subscription], Delivery, msgspec.msgpack.Decoder[Any]] | None] = {}
        # The same for the fast path, by the topic's bytes, with the typed header's decoder.
        self._fast_routes: dict[
            bytes, tuple[str, list[Subscription], Delivery, msgspec.msgpack.Decoder[Any]] | None
        ] = {}
        self._handlers: dict[str, Handler] = {}
        self._handler_tasks: set[asyncio.Task[None]] = set()
        # Requests awaiting a reply (the future gets the reply payload), and the frames of those
        # already sent once, to send again after a reconnect.
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._sent: dict[int, bytes] = {}
        self._ids = itertools.count(1)
        self._seqs: dict[str, int] = {}
        self._pub_specs: dict[str, TopicSpec] = {}
        self._states: dict[str, bytes] = {}
        # Last state value received per topic: the broker sends retained values only for the
        # first subscription to a pattern, so later ones on this client are served from here.
        self._retained: dict[str, Received] = {}
        self._outbox: deque[bytes] = deque(maxlen=outbox)
        # Frames written in one turn of the event loop leave in one writelines call (corking):
        # a burst of publishes costs one system call instead of one each, and the broker reads
        # them in one chunk. The delivery per frame (None: not a publish) says what becomes of
        # it should the connection die before the flush: an event goes to the outbox.
        self._wbuf: list[bytes] = []
        self._wbuf_delivery: list[Delivery | None] = []
        self._wbuf_bytes = 0
        self._wbuf_proto: _Protocol | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._held: set[Subscription] = set()
        self.reconnects = 0
        # Messages published but never sent: telemetry while down, events the full outbox
        # dropped. Logged at each reconnect (the part since the last one).
        self.dropped_while_down = 0
        self._dropped_logged = 0
        # Why the broker last closed this connection (its err frame with seq 0), if it said.
        self.last_error: ErrorInfo | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> BusClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self, timeout: float | None = 10.0) -> None:
        """Start the connection loop and wait for the first connection."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"bus-client-{self.name}")
        await self.wait_connected(timeout)

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._until_connected()
        except TimeoutError:
            raise NotConnected(f"no bus at {self.path} after {timeout} s") from None

    async def _until_connected(self) -> None:
        """Wait for a connection; NotConnected once the client is closed, even mid-wait."""
        if not self._connected.is_set() and not self._closing:
            connected = asyncio.ensure_future(self._connected.wait())
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait((connected, closed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                connected.cancel()
                closed.cancel()
        if self._closing:
            raise NotConnected("bus client closed")

    async def close(self) -> None:
        self._closing = True
        self._closed.set()
        self._flush()  # what was published before close() still leaves
        for sub in list(self._subs):
            sub.close()
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        # Cancelled while connected, the runner did not get to say the connection is gone.
        self._connected.clear()
        for task in list(self._handler_tasks):
            task.cancel()
        await asyncio.gather(*self._handler_tasks, return_exceptions=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(NotConnected("bus client closed"))
        self._pending.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff_initial
        failures = 0
        while not self._closing:
            try:
                _, proto = await loop.create_unix_connection(lambda: _Protocol(self), self.path)
            except OSError as exc:
                failures += 1
                if failures == 1 or failures % 50 == 0:
                    log.warning("bus: cannot connect to %s (%s); retrying", self.path, exc.strerror)
                await self._backoff(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            if failures or self.reconnects:  # after a complaint, say it is over (a quiet first start)
                log.info("bus: connected to %s", self.path)
            connected_at = loop.time()
            self._proto = proto
            self._on_connected(proto)
            self._connected.set()
            await proto.lost
            self._connected.clear()
            self._proto = None
            self._held.clear()
            if self._closing:
                break
            self.reconnects += 1
            if loop.time() - connected_at < _HEALTHY_S:
                # Closed soon after it opened (a broker that refuses us, or one crash-looping):
                # back off as for a failed connect instead of hammering the broker.
                failures += 1
                if failures == 1:
                    log.warning("bus: connection to the broker lost soon after it opened; retrying")
                await self._backoff(delay)
                delay = min(delay * 2, self.backoff_max)
            else:
                failures = 0
                delay = self.backoff_initial
                log.warning("bus: connection to the broker lost; reconnecting")

    async def _backoff(self, delay: float) -> None:
        # Full jitter, so daemons restarted together do not reconnect in lockstep.
        await asyncio.sleep(delay * (0.5 + random.random()))

    def _on_connected(self, proto: _Protocol) -> None:
        assert proto.transport is not None
        # Frames still corked for the previous connection: its events join the outbox first.
        self._flush()
        frames = [encode_frame("hello", "", _encoder.encode(self.name))]
        frames += [encode_frame("sub", p) for p in dict.fromkeys(s.pattern for s in self._subs)]
        frames += [encode_frame("serve", m) for m in self._handlers]
        frames += list(self._states.values())
        frames += list(self._outbox)
        self._outbox.clear()
        proto.transport.writelines(frames)
        # Requests sent on the old connection never got their reply; send them again. A request
        # still waiting for its first connection is sent by request() itself, not here, or the
        # server would run it twice.
        for rid, resend in self._sent.items():
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                proto.transport.write(resend)
        dropped = self.dropped_while_down - self._dropped_logged
        if dropped:
            self._dropped_logged = self.dropped_while_down
            log.warning(
                "bus: %d messages dropped while disconnected (telemetry, or events past the outbox of %d)",
                dropped,
                self._outbox.maxlen,
            )

    # --- publishing -------------------------------------------------------------------------

    def _spec(self, topic: str) -> TopicSpec:
        spec = self._pub_specs.get(topic)
        if spec is None:
            _check_topic_length(topic)
            spec = topic_spec(topic)
            if spec is None:
                raise FrameError(f"unknown topic {topic!r}: declare it in appliance/bus/topics.py")
            if len(self._pub_specs) >= _MAX_CACHED_TOPICS:
                self._pub_specs.clear()  # scratch topics are open-ended; the real ones are few
            self._pub_specs[topic] = spec
        return spec

    def publish_nowait(
        self,
        topic: str,
        msg: Message,
        *,
        attachment: bytes | memoryview | None = None,
        seq: int | None = None,
        ts: float | None = None,
    ) -> bool:
        """Publish without waiting; returns False when the message was dropped (bus down)."""
        spec = self._spec(topic)
        if not isinstance(msg, spec.type):
            raise TypeError(f"{topic} carries {spec.type.__name__}, not {type(msg).__name__}")
        if attachment is not None and not spec.attachment:
            raise FrameError(f"{topic} takes no attachment")
        if seq is None:
            seq = self._seqs.get(topic, 0) + 1
        frame = encode_pub(
            topic, msg, seq=seq, ts=time.monotonic() if ts is None else ts, attachment=attachment
        )
        if len(frame) > self._max_wire:
            # The broker would refuse it by closing this connection, cutting off every other
            # publish, subscription and request of this daemon; and a state value would be
            # sent again on every reconnect. Refused here, before anything is kept.
            size = frame_size(frame)
            raise FrameError(
                f"{topic}: frame of {size} bytes exceeds the frame limit of {self.max_frame} bytes"
            )
        self._seqs[topic] = seq
        delivery = spec.delivery
        if delivery is STATE:
            self._states[topic] = frame
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.lost.done():
            self._write(proto, frame, delivery)
            return True
        if delivery is EVENT:
            if self._wbuf:
                self._flush()  # events corked for the dead connection go to the outbox first
            self._to_outbox(frame)
            return True
        if delivery is TELEMETRY:
            self.dropped_while_down += 1
            return False
        return True

    async def publish(
        self,
        topic: str,
        msg: Message,
        *,
        attachment: bytes | memoryview | None = None,
        seq: int | None = None,
        ts: float | None = None,
    ) -> bool:
        """Publish, waiting while the broker is not keeping up (backpressure)."""
        sent = self.publish_nowait(topic, msg, attachment=attachment, seq=seq, ts=ts)
        proto = self._proto
        if proto is not None and proto.paused:
            await proto.drain()
        return sent

    # --- output -----------------------------------------------------------------------------

    # Past this many buffered bytes a burst is written at once: it bounds memory, and lets the
    # transport report a slow broker (pause_writing) so publish() can wait.
    _CORK_BYTES = 16 * 1024

    def _write(self, proto: _Protocol, frame: bytes, delivery: Delivery | None = None) -> None:
        if self._wbuf_proto is not proto:
            self._flush()
            self._wbuf_proto = proto
        self._wbuf.append(frame)
        self._wbuf_delivery.append(delivery)
        self._wbuf_bytes += len(frame)
        if self._wbuf_bytes >= self._CORK_BYTES:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        frames, deliveries = self._wbuf, self._wbuf_delivery
        if not frames:
            return
        proto = self._wbuf_proto
        self._wbuf, self._wbuf_delivery, self._wbuf_bytes = [], [], 0
        if proto is not None and proto.transport is not None and not proto.lost.done():
            proto.transport.writelines(frames)
            return
        # The connection died before the flush: events wait in the outbox like any published
        # while down; state is re-published from _states and requests resent from _sent on
        # reconnect; telemetry is stale anyway, and dropped as telemetry published while down
        # is, so counted the same.
        for frame, delivery in zip(frames, deliveries, strict=True):
            if delivery is EVENT:
                self._to_outbox(frame)
            elif delivery is TELEMETRY:
                self.dropped_while_down += 1

    def _to_outbox(self, frame: bytes) -> None:
        # Full, the outbox drops its oldest event: counted like telemetry dropped while down.
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped_while_down += 1
        self._outbox.append(frame)

    # --- subscribing ------------------------------------------------------------------------

    def subscribe(self, pattern: str, maxsize: int = 1024) -> Subscription:
        """Messages on a topic, or on every topic under a prefix ending in '*'."""
        if not pattern or "*" in pattern[:-1]:
            # The broker cuts off a client for it, and this one would send it on every reconnect.
            raise FrameError(f"bad subscription pattern {pattern!r}")
        _check_topic_length(pattern)
        sub = Subscription(self, pattern, maxsize)
        first = all(s.pattern != pattern for s in self._subs)
        self._subs.append(sub)
        self._routes.clear()
        self._fast_routes.clear()
        if first:
            self._send(encode_frame("sub", pattern))
        else:
            for topic, rx in self._retained.items():
                if matches(pattern, topic):
                    sub._put(rx, Delivery.STATE)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._routes.clear()
            self._fast_routes.clear()
            self._release_reading(sub)
            for topic in [t for t in self._retained if not any(matches(s.pattern, t) for s in self._subs)]:
                del self._retained[topic]
            if all(s.pattern != sub.pattern for s in self._subs) and not self._closing:
                self._send(encode_frame("unsub", sub.pattern))

    def _hold_reading(self, sub: Subscription) -> None:
        if not self._held and self._proto is not None and self._proto.transport is not None:
            self._proto.transport.pause_reading()
        self._held.add(sub)

    def _release_reading(self, sub: Subscription) -> None:
        if sub in self._held:
            self._held.discard(sub)
            if not self._held and self._proto is not None and self._proto.transport is not None:
                self._proto.transport.resume_reading()

    # --- requests ---------------------------------------------------------------------------

    async def request(self, method: str, params: Message, timeout: float = 5.0) -> Any:
        """Call a method served by another daemon; waits for the bus within the timeout."""
        spec = method_spec(method)
        if spec is None:
            raise NoSuchMethod(f"unknown method {method!r}")
        if not isinstance(params, spec.params):
            raise TypeError(f"{method} takes {spec.params.__name__}, not {type(params).__name__}")
        rid = next(self._ids)
        frame = encode_frame("req", method, _encoder.encode(params), seq=rid, ts=time.monotonic())
        if len(frame) > self._max_wire:
            # The broker would close this connection for it, and it would be resent on every
            # reconnect until the timeout.
            size = frame_size(frame)
            raise FrameError(
                f"{method}: request of {size} bytes exceeds the frame limit of {self.max_frame} bytes"
            )
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            async with asyncio.timeout(timeout):
                await self._until_connected()
                self._send(frame)
                self._flush()  # a request waits on its reply: no corking (earlier frames go first)
                self._sent[rid] = frame
                payload = await fut
        except TimeoutError:
            raise RequestTimeout(f"{method}: no reply within {timeout} s") from None
        finally:
            self._pending.pop(rid, None)
            self._sent.pop(rid, None)
        return _decode(spec.result, payload)

    def serve(self, method: str, handler: Handler) -> None:
        """Serve a method: handler(params) -> result message, run as its own task per call."""
        if method_spec(method) is None:
            raise NoSuchMethod(f"unknown method {method!r}: declare it in appliance/bus/topics.py")
        self._handlers[method] = handler
        self._send(encode_frame("serve", method))

    async def _handle_request(self, frame: Frame, proto: _Protocol | None) -> None:
        env = frame.env
        spec = method_spec(env.topic)
        handler = self._handlers.get(env.topic)
        if spec is None or handler is None:
            reply = encode_error(
                env.topic, "no-such-method", env.topic, seq=env.seq, max_frame=self.max_frame
            )
        else:
            try:
                params = _decode(spec.params, env.payload)
                result = await handler(params)
                if not isinstance(result, spec.result):
                    raise TypeError(f"handler returned {type(result).__name__}, not {spec.result.__name__}")
                reply = encode_frame("rep", env.topic, _encoder.encode(result), seq=env.seq)
                if len(reply) > self._max_wire:
                    # The broker would refuse it by closing this daemon's whole connection, and
                    # the requester would wait for its timeout: it gets this error at once.
                    message = (
                        f"reply-too-large: reply of {frame_size(reply)} bytes exceeds the frame limit"
                        f" of {self.max_frame} bytes"
                    )
                    log.error("%s: %s; sent an error instead", env.topic, message)
                    reply = encode_error(
                        env.topic, "reply-too-large", message, seq=env.seq, max_frame=self.max_frame
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed: %s", env.topic, exc)
                reply = encode_error(
                    env.topic, type(exc).__name__, str(exc), seq=env.seq, max_frame=self.max_frame
                )
        if self._proto is not proto:
            # Asked on a connection since lost: the broker has answered the requester already
            # (server-gone) or was restarted, and a restarted broker may have given this id to
            # another request, which this reply would answer.
            return
        self._send(reply)
        self._flush()  # someone is waiting on this reply

    # --- input ------------------------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.lost.done():
            self._write(proto, frame)

    def _route(self, topic: str) -> tuple[list[Subscription], Delivery, msgspec.msgpack.Decoder[Any]] | None:
        targets = [s for s in self._subs if matches(s.pattern, topic)]
        spec = topic_spec(topic)
        route = None
        if targets and spec is not None:
            dec = _decoders.get(spec.type)
            if dec is None:
                dec = _decoders[spec.type] = msgspec.msgpack.Decoder(spec.type)
            route = (targets, spec.delivery, dec)
        self._routes[topic] = route
        return route

    def _fast_route(
        self, raw_topic: bytes
    ) -> tuple[str, list[Subscription], Delivery, msgspec.msgpack.Decoder[Any]] | None:
        """The fast path's route for a topic (cached by its bytes); None for a topic nobody here
        subscribes to, and for one that is not UTF-8 (not cached: the general path refuses it)."""
        try:
            topic = raw_topic.decode()
        except UnicodeDecodeError:
            return None
        try:
            route = self._routes[topic]
        except KeyError:
            route = self._route(topic)
        entry = None
        if route is not None:
            targets, delivery, _ = route
            spec = topic_spec(topic)
            assert spec is not None  # _route made a route only for a known topic
            entry = (topic, targets, delivery, typed_pub_decoder(spec.type))
        if len(self._fast_routes) >= _MAX_CACHED_TOPICS:
            self._fast_routes.clear()
        self._fast_routes[raw_topic] = entry
        return entry

    def _fast_frames(self, data: bytes, pos: int = 0) -> int:
        """Deliver the whole pub frames at the start of `data`, each decoded (envelope and
        payload, validated) in one call; how many bytes they took. It stops at the first frame
        it does not take on its own -- another kind, a partial or oversized frame, a header
        laid out otherwise than encode_frame writes it, a frame that does not decode -- and
        leaves the rest to _on_frames through the general decoder, which also says what is
        wrong with a bad one. Starts at `pos`; returns where it stopped. A subscriber's
        per-message path: in a hot loop with 200-byte messages the whole receive path (this,
        the route, Received and the subscription's queue) takes 1.6 us a message, against 2.3
        through the general decoder. Its first lines mirror Broker.fast_publish's: a shared
        helper would cost a call per message on both hot paths."""
        n = len(data)
        view: memoryview | None = None
        unpack = PREFIX.unpack_from
        max_frame = self.max_frame
        routes = self._fast_routes
        retained = self._retained
        while n - pos >= PREFIX_SIZE:
            hlen, alen = unpack(data, pos)
            end = pos + PREFIX_SIZE + hlen + alen
            if hlen == 0 or hlen > MAX_HEADER or hlen + alen > max_frame or end > n:
                break
            hstart = pos + PREFIX_SIZE
            raw_topic = pub_topic(data, hstart, hlen)
            if raw_topic is None:
                break
            try:
                entry = routes[raw_topic]
            except KeyError:
                entry = self._fast_route(raw_topic)
            if entry is None:
                if raw_topic not in routes:  # not UTF-8: the general path refuses it
                    break
                pos = end  # nobody here subscribes to it (a pattern given up meanwhile)
                continue
            topic, targets, delivery, decoder = entry
            if view is None:
                view = memoryview(data)
            try:
                env = decoder.decode(view[hstart : hstart + hlen])
            except (msgspec.DecodeError, msgspec.ValidationError):
                break  # the general path: a bad envelope closes, a bad payload is dropped, logged
            rx = Received(topic, env.seq, env.ts, env.payload, data[hstart + hlen : end] if alen else None)
            if delivery is STATE:
                retained[topic] = rx
            for sub in targets:
                sub._put(rx, delivery)
            pos = end
        return pos

    def _on_frames(self, frames: list[Frame]) -> None:
        # The loop over a read's frames lives here, not in a call per frame: published messages
        # are most of the traffic and this is the subscriber's whole per-message path.
        routes = self._routes
        for frame in frames:
            env = frame.env
            if env.kind != "pub":
                self._on_control(frame)
                continue
            topic = env.topic
            try:
                route = routes[topic]
            except KeyError:
                route = self._route(topic)
            if route is None:
                continue
            targets, delivery, decoder = route
            try:
                msg = decoder.decode(env.payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("dropping invalid %s message: %s", topic, exc)
                continue
            rx = Received(topic, env.seq, env.ts, msg, frame.attachment)
            if delivery is STATE:
                self._retained[topic] = rx
            for sub in targets:
                sub._put(rx, delivery)

    def _on_control(self, frame: Frame) -> None:
        env = frame.env
        kind = env.kind
        if kind in ("rep", "err"):
            if env.seq == 0 and kind == "err":
                info = _error_info(env.payload)
                self.last_error = info
                log.error("bus: the broker closed this connection: %s (%s)", info.message, info.code)
                return
            fut = self._pending.get(env.seq)
            if fut is None or fut.done():
                return
            if kind == "rep":
                fut.set_result(bytes(env.payload))
            else:
                info = _error_info(env.payload)
                exc_type = NoSuchMethod if info.code == "no-such-method" else RemoteError
                fut.set_exception(exc_type(f"{env.topic}: {info.message}"))
        elif kind == "req":
            task = asyncio.get_running_loop().create_task(self._handle_request(frame, self._proto))
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)
        else:
            raise BusError(f"unexpected {kind} frame from the broker")


def _check_topic_length(topic: str) -> None:
    # The broker closes the connection of a client that sends a longer one (and a subscription
    # would be sent again on every reconnect): refused here instead, with the broker's words.
    if len(topic) > MAX_TOPIC:
        raise FrameError(f"topic name of {len(topic)} characters; the limit is {MAX_TOPIC}")


def _error_info(payload: msgspec.Raw) -> ErrorInfo:
    try:
        return _decode(ErrorInfo, payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ErrorInfo("bad-error", "malformed error payload")
