"""The bus broker: routes frames between daemons over one Unix stream socket.

Per frame it decodes the small envelope, validates the payload against the topic's declared
type, and forwards the frame's original bytes to every matching subscriber, so a message is
encoded once by its publisher and never again.

Slow consumers: a connection is written to directly while its transport accepts data. When the
transport pauses (kernel buffer and asyncio's high-water mark full), further frames go into a
per-connection pending map: telemetry and state are latest-wins per topic (the replaced frame is
dropped and counted); events and replies queue up to `event_queue`, past which the consumer is
disconnected (it resumes by seq). No consumer can make the broker buffer without bound, and none
can slow the others down.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from appliance.bus import framing
from appliance.bus.framing import (
    MAX_HEADER,
    MAX_TOPIC,
    PREFIX,
    PREFIX_SIZE,
    ErrorInfo,
    Frame,
    FrameDecoder,
    encode_error,
    encode_frame,
    frame_size,
    pub_topic,
    typed_pub_decoder,
)
from appliance.bus.topics import (
    EVENT,
    STATE,
    Delivery,
    EchoParams,
    TopicSpec,
    matches,
    method_spec,
    topic_spec,
)
from appliance.errors import FrameError

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")
_HIGH_WATER = 1024 * 1024
# An in-flight request is forgotten after this long: far beyond any client's timeout, so the
# requester gave up long ago; a late reply is then dropped like any stale one.
REQUEST_TTL_S = 300.0
# Routes are cached per topic; family and scratch topics are open-ended, so the cache is bounded.
_MAX_ROUTES = 4096


@dataclass
class BrokerStats:
    connections: int = 0
    refused: int = 0
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    cut_off: int = 0
    bad_frames: int = 0
    expired_requests: int = 0
    # Requests or replies answered with an error because, re-encoded, they exceeded the limit.
    too_large: int = 0


@dataclass
class _Pending:
    """Frames held for a paused connection, in arrival order."""

    frames: dict[object, bytes] = field(default_factory=dict)
    events: int = 0
    counter: int = 0


class Connection(asyncio.Protocol):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.decoder = FrameDecoder(broker.max_frame)
        self.transport: asyncio.Transport | None = None
        self.name = "?"
        self.peer: tuple[int, int, int] = (0, -1, -1)
        self.patterns: list[str] = []
        self.paused = False
        # Frames for this client produced by the current read, written together by flush().
        self.out: list[bytes | memoryview] = []
        self.pending = _Pending()
        self.closed = False
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<client {self.name} pid={self.peer[0]}>"

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            self.peer = _PEERCRED.unpack(raw)
        except OSError as exc:
            log.warning("cannot read peer credentials: %s", exc)
            self.peer = (0, -1, -1)
        pid, uid, gid = self.peer
        if not self.broker.peer_allowed(uid, gid):
            self.broker.stats.refused += 1
            log.warning(
                "refused bus client pid=%d uid=%d gid=%d: not an allowed user or group", pid, uid, gid
            )
            self.close("permission", "peer uid/gid not allowed on this bus")
            return
        self.broker.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.broker.remove(self)

    def data_received(self, data: bytes) -> None:
        broker = self.broker
        decoder = self.decoder
        if decoder.error is None:
            pos = 0
            if decoder.buffered:  # the rest of the frame the last read ended in
                frames, pos = decoder.finish(data)
                self._handle_all(frames)
            if not decoder.buffered and decoder.error is None and not self.closed:
                # Whole, valid pub frames forwarded at once; the general decoder takes over from
                # the first frame the fast path leaves (another kind, a partial frame, anything
                # to refuse), so the order stays the stream's.
                pos = broker.fast_publish(self, data, pos)
            if (pos == len(data) and decoder.error is None) or self.closed:
                broker.flush()
                return
            data = data[pos:]
        self._handle_all(decoder.feed(data))
        if decoder.error is not None and not self.closed:
            broker.stats.bad_frames += 1
            log.warning("closing %r: %s", self, decoder.error)
            self.close("bad-frame", str(decoder.error))
        broker.flush()

    def _handle_all(self, frames: list[Frame]) -> None:
        broker = self.broker
        broker.stats.frames_in += len(frames)
        for frame in frames:
            if self.closed:
                # Cut off by a frame of this read (its own publish fanned out to it, or a reply
                # it had no room for): stop here, but still write what the read produced for
                # others (data_received flushes), or it waits for some other client's traffic.
                break
            try:
                broker.handle(self, frame)
            except FrameError as exc:
                broker.stats.bad_frames += 1
                log.warning("closing %r: %s", self, exc)
                self.close("bad-frame", str(exc))
                break

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        pending = self.pending
        if not pending.frames or self.transport is None or self.closed:
            return
        frames = pending.frames
        self.pending = _Pending()
        self.transport.writelines(frames.values())

    # --- sending ----------------------------------------------------------------------------

    def send(self, data: bytes | memoryview, delivery: Delivery, topic: str) -> None:
        if self.closed or self.transport is None:
            return
        if not self.paused:
            out = self.out
            if not out:
                self.broker.out_batch.append(self)
            out.append(data)
            return
        pending = self.pending
        # Held frames outlive this read: copy them out of the socket chunk they view.
        data = bytes(data)
        if delivery is EVENT:
            pending.counter += 1
            pending.frames[pending.counter] = data
            pending.events += 1
            if pending.events > self.broker.event_queue:
                self.broker.stats.cut_off += 1
                log.warning("cutting off %r: %d events pending; it resumes by seq", self, pending.events)
                self.close("too-slow", f"more than {self.broker.event_queue} events pending")
        else:
            if pending.frames.pop(topic, None) is not None:
                self.dropped += 1
                self.broker.stats.dropped += 1
            pending.frames[topic] = data

    def close(self, code: str, message: str) -> None:
        if self.closed or self.transport is None:
            return
        self.closed = True
        self.out = []
        # Nothing more goes out after the err frame: release what was held for this client.
        self.pending = _Pending()
        with contextlib.suppress(Exception):
            # Tell the client why before closing: it logs the reason and knows not to retry a
            # frame the broker refuses.
            self.transport.write(encode_error("", code, message, max_frame=self.broker.max_frame))
        self.transport.close()
        self.broker.remove(self)


class Broker:
    def __init__(
        self,
        *,
        max_frame: int = framing.DEFAULT_MAX_FRAME,
        event_queue: int = 4096,
        allowed_uids: Iterable[int] = (),
        allowed_gids: Iterable[int] = (),
    ) -> None:
        self.max_frame = max_frame
        self.event_queue = event_queue
        self.allowed_uids = {0, os.getuid(), *allowed_uids}
        self.allowed_gids = set(allowed_gids)
        # Insertion-ordered (a dict, not a set): fan-out goes to subscribers in the order they
        # connected, the same on every run.
        self.clients: dict[Connection, None] = {}
        self.retained: dict[str, bytes] = {}
        self.servers: dict[str, Connection] = {}
        # In-flight requests: broker id -> (requester, requester's id, method, server).
        self.inflight: dict[int, tuple[Connection, int, str, Connection]] = {}
        # When each in-flight request was forwarded, oldest first (ids only grow), so requests a
        # server never answers do not pile up for the life of the broker.
        self._inflight_since: dict[int, float] = {}
        self._next_id = 0
        self._routes: dict[str, list[Connection]] = {}
        self.topic_counts: dict[str, int] = {}
        self.stats = BrokerStats()
        # Connections with frames waiting in their `out` list for the end of the current read.
        self.out_batch: list[Connection] = []
        self._decoders: dict[type, msgspec.msgpack.Decoder[object]] = {}
        # Per published topic, its spec and payload decoder: the hot path is one dict lookup.
        self._pub_specs: dict[str, tuple[TopicSpec, msgspec.msgpack.Decoder[object]]] = {}
        # The fast path's (fast_publish) by the topic's bytes: its name, spec and the decoder of
        # the whole header with the payload as the topic's type.
        self._fast_pub: dict[bytes, tuple[str, TopicSpec, msgspec.msgpack.Decoder[object]]] = {}
        self.server: asyncio.AbstractServer | None = None
        self.started = time.monotonic()

    # --- connections ------------------------------------------------------------------------

    def peer_allowed(self, uid: int, gid: int) -> bool:
        return uid in self.allowed_uids or gid in self.allowed_gids

    def add(self, conn: Connection) -> None:
        self.clients[conn] = None
        self.stats.connections += 1

    def remove(self, conn: Connection) -> None:
        if conn not in self.clients:
            return
        del self.clients[conn]
        conn.out = []
        if conn.patterns:
            self._routes.clear()
        for method in [m for m, c in self.servers.items() if c is conn]:
            del self.servers[method]
        for rid, (requester, req_id, method, server) in list(self.inflight.items()):
            if rid not in self.inflight:
                # Answering an earlier one cut its requester off, which removed this one too.
                continue
            if requester is conn:
                del self.inflight[rid]
                self._inflight_since.pop(rid, None)
            elif server is conn:
                # The server went away mid-request: answer now rather than let it time out.
                del self.inflight[rid]
                self._inflight_since.pop(rid, None)
                self._error(requester, method, req_id, "server-gone", f"{method}: server disconnected")
        self.flush()

    # --- routing ----------------------------------------------------------------------------

    def _decoder(self, typ: type) -> msgspec.msgpack.Decoder[object]:
        dec = self._decoders.get(typ)
        if dec is None:
            dec = self._decoders[typ] = msgspec.msgpack.Decoder(typ)
        return dec

    def _validate(self, typ: type, payload: msgspec.Raw, what: str) -> object:
        try:
            return self._decoder(typ).decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise FrameError(f"{what}: payload is not a valid {typ.__name__}: {exc}") from None

    def route(self, topic: str) -> list[Connection]:
        targets = self._routes.get(topic)
        if targets is None:
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            targets = [c for c in self.clients if any(matches(p, topic) for p in c.patterns)]
            self._routes[topic] = targets
        return targets

    def _pub_spec(self, topic: str) -> tuple[TopicSpec, msgspec.msgpack.Decoder[object]]:
        spec = topic_spec(topic)
        if spec is None:
            raise FrameError(f"unknown topic {topic!r}")
        if len(self._pub_specs) >= _MAX_ROUTES:
            self._pub_specs.clear()  # scratch topics are unbounded; the real ones are few
        entry = self._pub_specs[topic] = (spec, self._decoder(spec.type))
        return entry

    def fast_publish(self, conn: Connection, data: bytes, pos: int = 0) -> int:
        """Forward the whole pub frames at the start of `data` that pass every check, each
        validated (envelope and payload) by one decode; how many bytes they took. It stops at
        the first frame it does not take on its own -- another kind, a partial or oversized
        frame, an unknown topic, a header laid out otherwise than encode_frame writes it, an
        attachment the topic does not take, anything that does not decode -- and leaves the
        rest to the general decoder and handle(), which refuse a bad frame with its reason.
        One decode instead of the envelope's and then the payload's, and no Frame. Starts at
        `pos`; returns where it stopped."""
        n = len(data)
        view: memoryview | None = None
        unpack = PREFIX.unpack_from
        max_frame = self.max_frame
        specs = self._fast_pub
        counts = self.topic_counts
        taken = 0
        while n - pos >= PREFIX_SIZE and not conn.closed:
            hlen, alen = unpack(data, pos)
            end = pos + PREFIX_SIZE + hlen + alen
            if hlen == 0 or hlen > MAX_HEADER or hlen + alen > max_frame or end > n:
                break
            hstart = pos + PREFIX_SIZE
            raw_topic = pub_topic(data, hstart, hlen)
            if raw_topic is None:
                break
            entry = specs.get(raw_topic)
            if entry is None:
                entry = self._fast_spec(raw_topic)
                if entry is None:
                    break
            topic, spec, decoder = entry
            if alen and not spec.attachment:
                break
            if view is None:
                view = memoryview(data)
            try:
                decoder.decode(view[hstart : hstart + hlen])
            except (msgspec.DecodeError, msgspec.ValidationError):
                break
            counts[topic] = counts.get(topic, 0) + 1
            self._fan_out(topic, spec.delivery, view[pos:end])
            taken += 1
            pos = end
        self.stats.frames_in += taken
        return pos

    def _fast_spec(self, raw_topic: bytes) -> tuple[str, TopicSpec, msgspec.msgpack.Decoder[object]] | None:
        """A topic's entry for fast_publish; None for one the general path must refuse."""
        try:
            topic = raw_topic.decode()
        except UnicodeDecodeError:
            return None
        spec = topic_spec(topic)
        if spec is None:
            return None
        if len(self._fast_pub) >= _MAX_ROUTES:
            self._fast_pub.clear()  # scratch topics are unbounded; the real ones are few
        entry = self._fast_pub[raw_topic] = (topic, spec, typed_pub_decoder(spec.type))
        return entry

    def _fan_out(self, topic: str, delivery: Delivery, raw: bytes | memoryview) -> None:
        """A valid published frame to its subscribers (and retained, for a state topic)."""
        if delivery is STATE:
            raw = self.retained[topic] = bytes(raw)
        targets = self._routes.get(topic)
        if targets is None:
            targets = self.route(topic)
        out_batch = self.out_batch
        for target in targets:
            # Connection.send inlined for the common case, a client keeping up: this loop
            # runs for every subscriber of every message.
            if target.paused or target.closed:
                target.send(raw, delivery, topic)
                # Cutting a client off flushes (Broker.remove), which starts a new batch
                # list: appending to the old one would strand the frames of the targets
                # after this one.
                out_batch = self.out_batch
                continue
            out = target.out
            if not out:
                out_batch.append(target)
            out.append(raw)

    def handle(self, conn: Connection, frame: Frame) -> None:
        env = frame.env
        kind = env.kind
        topic = env.topic
        if kind == "pub":
            entry = self._pub_specs.get(topic)
            if entry is None:
                if len(topic) > MAX_TOPIC:
                    raise FrameError(f"topic name of {len(topic)} characters; the limit is {MAX_TOPIC}")
                entry = self._pub_spec(topic)
            spec, decoder = entry
            if frame.attachment is not None and not spec.attachment:
                raise FrameError(f"{spec.name} takes no attachment")
            try:
                decoder.decode(env.payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise FrameError(f"{topic}: payload is not a valid {spec.type.__name__}: {exc}") from None
            counts = self.topic_counts
            counts[topic] = counts.get(topic, 0) + 1
            assert frame.raw is not None  # the broker's decoders keep the frame bytes
            self._fan_out(topic, spec.delivery, frame.raw)
            return
        if len(topic) > MAX_TOPIC:
            raise FrameError(f"topic name of {len(topic)} characters; the limit is {MAX_TOPIC}")
        if kind == "req":
            self._request(conn, frame)
        elif kind in ("rep", "err"):
            self._reply(conn, frame)
        elif kind == "sub":
            self._check_pattern(env.topic)
            if env.topic not in conn.patterns:
                conn.patterns.append(env.topic)
                self._routes.clear()
            for topic, raw in self.retained.items():
                if matches(env.topic, topic):
                    conn.send(raw, Delivery.STATE, topic)
        elif kind == "unsub":
            if env.topic in conn.patterns:
                conn.patterns.remove(env.topic)
                self._routes.clear()
        elif kind == "serve":
            if method_spec(env.topic) is None:
                raise FrameError(f"unknown method {env.topic!r}")
            previous = self.servers.get(env.topic)
            if previous is not None and previous is not conn:
                log.info("%s: %r replaces %r as server", env.topic, conn, previous)
            self.servers[env.topic] = conn
        elif kind == "unserve":
            if self.servers.get(env.topic) is conn:
                del self.servers[env.topic]
        elif kind == "hello":
            name = self._validate(str, env.payload, "hello")
            assert isinstance(name, str)
            conn.name = name[:64]
            log.debug("client %r connected", conn)

    @staticmethod
    def _check_pattern(pattern: str) -> None:
        if not pattern or "*" in pattern[:-1]:
            raise FrameError(f"bad subscription pattern {pattern!r}")

    def _request(self, conn: Connection, frame: Frame) -> None:
        env = frame.env
        spec = method_spec(env.topic)
        if spec is None:
            self._error(conn, env.topic, env.seq, "no-such-method", f"unknown method {env.topic!r}")
            return
        params = self._validate(spec.params, env.payload, env.topic)
        if env.topic == "bus.echo":
            assert isinstance(params, EchoParams)
            # The request's envelope with "rep" for "req" and without its attachment: never
            # larger than the request, which was within the limit.
            reply = encode_frame("rep", env.topic, env.payload, seq=env.seq, ts=env.ts)
            conn.send(reply, Delivery.EVENT, "")
            return
        server = self.servers.get(env.topic)
        if server is None:
            self._error(conn, env.topic, env.seq, "no-such-method", f"nobody serves {env.topic}")
            return
        rid = self._next_id + 1
        fwd = encode_frame("req", env.topic, bytes(env.payload), seq=rid, ts=env.ts)
        if frame_size(fwd) > self.max_frame:
            # The broker's id can take more bytes than the requester's: a request at the limit
            # grows past it, and the server's decoder would refuse it by closing its connection.
            self._too_large(conn, env.topic, env.seq, "request", frame_size(fwd))
            return
        self._next_id = rid
        self.inflight[rid] = (conn, env.seq, env.topic, server)
        now = time.monotonic()
        self._inflight_since[rid] = now
        self._expire_requests(now)
        server.send(fwd, Delivery.EVENT, "")

    def _expire_requests(self, now: float) -> None:
        since = self._inflight_since
        while since:
            rid, started = next(iter(since.items()))
            if now - started < REQUEST_TTL_S:
                break
            del since[rid]
            entry = self.inflight.pop(rid, None)
            if entry is not None:
                self.stats.expired_requests += 1
                log.warning("%s: no reply from %r after %.0f s; forgotten", entry[2], entry[3], REQUEST_TTL_S)

    def _reply(self, conn: Connection, frame: Frame) -> None:
        env = frame.env
        entry = self.inflight.pop(env.seq, None)
        since = self._inflight_since.pop(env.seq, None)
        if entry is None:
            return  # the requester left or the id is stale: nothing to deliver
        requester, req_id, method, server = entry
        if server is not conn:
            self.inflight[env.seq] = entry
            if since is not None:
                self._inflight_since[env.seq] = since
            raise FrameError(f"reply to request {env.seq} from a client that was not asked")
        spec = method_spec(method)
        assert spec is not None
        try:
            self._validate(spec.result if env.kind == "rep" else ErrorInfo, env.payload, method)
        except FrameError as exc:
            self._error(requester, method, req_id, "bad-reply", str(exc))
            raise
        out = encode_frame(env.kind, method, bytes(env.payload), seq=req_id, ts=env.ts)
        if frame_size(out) > self.max_frame:
            # Re-encoded with the requester's id (and the method's name), a reply within the
            # limit can grow past it; the requester's decoder would refuse it by closing its
            # connection. The server did nothing wrong: it keeps its connection.
            self._too_large(requester, method, req_id, "reply", frame_size(out))
            return
        requester.send(out, Delivery.EVENT, "")

    def _too_large(self, conn: Connection, method: str, req_id: int, what: str, size: int) -> None:
        self.stats.too_large += 1
        log.warning(
            "%s: %s of %d bytes for %r exceeds the frame limit; sent an error", method, what, size, conn
        )
        message = (
            f"{what}-too-large: {what} of {size} bytes exceeds the frame limit of {self.max_frame} bytes"
        )
        self._error(conn, method, req_id, f"{what}-too-large", message)

    def _error(self, conn: Connection, method: str, req_id: int, code: str, message: str) -> None:
        conn.send(
            encode_error(method, code, message, seq=req_id, max_frame=self.max_frame), Delivery.EVENT, ""
        )

    def flush(self) -> None:
        """Write what this round of input produced, one writelines call per connection."""
        batch = self.out_batch
        if not batch:
            return
        self.out_batch = []
        for conn in batch:
            frames = conn.out
            conn.out = []
            if conn.closed or conn.transport is None:
                continue
            self.stats.frames_out += len(frames)
            conn.transport.writelines(frames)

    # --- serving ----------------------------------------------------------------------------

    async def start(
        self,
        path: Path | None,
        *,
        sock: socket.socket | None = None,
        mode: int = 0o660,
        group: int | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        if sock is None:
            assert path is not None
            sock = bind_socket(path, mode, group)
        self.server = await loop.create_unix_server(lambda: Connection(self), sock=sock)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.clients):
            if conn.transport is not None:
                conn.transport.close()
        if self.server is not None:
            await self.server.wait_closed()


def bind_socket(path: Path, mode: int, group: int | None) -> socket.socket:
    """Bind a listening Unix socket at path, replacing a stale socket file left by a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind with a tight umask so the socket is never reachable with looser permissions.
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, mode)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def group_ids(names: Iterable[str]) -> list[int]:
    gids = []
    for name in names:
        try:
            gids.append(grp.getgrnam(name).gr_gid)
        except KeyError:
            log.debug("group %s does not exist here; ignored", name)
    return gids
