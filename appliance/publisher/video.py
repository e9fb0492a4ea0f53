"""The camera's H.264 to every viewer without re-encoding: one feed, one passthrough track each.

    feed = CameraFeed(ask_camera)               # ask_camera: sends camera.keyframe on the bus
    rt.spawn(feed.run(bus.subscribe("camera.h264")), "video")
    pc.addTransceiver(feed.track(), "sendonly")  # per viewer

The camera daemon encodes once. `CameraFeed` turns each camera.h264 access unit into one
`av.Packet` (pts in the unit's 90 kHz time base) and hands the same packet to every viewer's
`PassthroughTrack`; aiortc's RTCRtpSender sees a Packet instead of a Frame and, instead of
encoding, asks its encoder to `pack()` it: split on start codes, STAP-A / FU-A payloads.
Nothing is decoded or encoded here.

Packetising is the same work for every viewer, so it is done once: `SharedPacketizer` stands in
for each passthrough sender's H264Encoder and keeps the payloads aiortc's own packetiser made
(`FullFragments`: FU-A fragments cut full rather than even, for UDP GSO) on the packet itself
(`av.Packet.opaque`), for the other senders to reuse. What remains per viewer is what has to
be: RTP headers, SRTP, the socket (aiortc_sender_loop.py does those with less work per packet
than aiortc's own loop). peer.py installs it in aiortc's private
`_RTCRtpSender__encoder` slot, which the sender fills with its own encoder only when empty; if a
future aiortc renamed that slot, the sender would simply pack for itself again (slower, still
correct), and tests/publisher/test_video.py would say so.

Keyframes: aiortc answers a PLI or FIR by setting a flag that only its own encoder reads, so
with pre-encoded packets a viewer's request would go nowhere. `CameraFeed.picture_lost()` is
hooked into each sender instead (see peer.py) and turned into a `camera.keyframe` request,
coalesced and rate-limited by `KeyframeRequests`. The same happens when

- a track starts: a viewer's decoder can only begin at an IDR, so a new track drops access
  units until one arrives, and asks for one so the wait is one frame, not a keyframe interval;
- camera.h264 seqs jump: camera.h264 is telemetry (latest-wins), so the bus may have dropped
  access units, after which every P-frame references a picture the viewers never got. All
  tracks then skip to the next IDR (the viewer sees a short freeze instead of smeared
  garbage) and one is requested at once. A seq going back means the camera daemon restarted;
  that is treated the same way;
- a viewer's queue overflows (its sender stalled): its backlog is dropped and it restarts at an IDR.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Protocol, cast

import av
from aiortc.codecs.h264 import FU_A_HEADER_SIZE, NAL_HEADER_SIZE, NAL_TYPE_FU_A, PACKET_MAX, H264Encoder
from aiortc.mediastreams import MediaStreamTrack

from appliance.bus.client import Subscription
from appliance.bus.topics import H264AccessUnit
from appliance.publisher.aiortc_report_clock import FrameClock
from appliance.publisher.keyframes import KeyframeRequests
from appliance.publisher.packettrack import PacketTrack, Sink

log = logging.getLogger(__name__)

# Access units a track may hold for its sender: one second at 30 fps. A sender that falls this
# far behind is not draining (a stalled peer); latency would only grow, so it starts over.
TRACK_QUEUE = 30


class VideoSource(Protocol):
    """What a viewer's peer needs from the video path (the passthrough feed, or the bench's
    re-encoding baseline)."""

    # What the viewers' RTCP report timers wake on (the camera's frames), or None: their own timers.
    report_clock: FrameClock | None

    def track(self) -> MediaStreamTrack: ...

    def picture_lost(self) -> None:
        """A viewer sent a PLI or FIR."""


class FullFragments(H264Encoder):
    """aiortc's H.264 packetiser (it makes no codec until asked to encode), but FU-A fragments
    as full as they go, the last one shorter: as many packets as aiortc makes, all of one size,
    so a viewer's sender hands a NAL unit's fragments to the kernel in one UDP GSO call
    (aiortc_sender_loop.py). aiortc evens the sizes out instead; they then differ by a byte,
    which takes two calls."""

    @staticmethod
    def _packetize_fu_a(data: bytes) -> list[bytes]:
        # RFC 6184 5.8; only called for a NAL unit longer than PACKET_MAX: two fragments or more.
        indicator = (data[0] & 0xE0) | NAL_TYPE_FU_A  # F and NRI of the NAL unit
        nal_type = data[0] & 0x1F
        size = PACKET_MAX - FU_A_HEADER_SIZE
        last = NAL_HEADER_SIZE + (len(data) - NAL_HEADER_SIZE - 1) // size * size
        fragments = []
        for start in range(NAL_HEADER_SIZE, len(data), size):
            header = nal_type | (0x80 if start == NAL_HEADER_SIZE else 0) | (0x40 if start == last else 0)
            fragments.append(bytes((indicator, header)) + data[start : start + size])
        return fragments


class SharedPacketizer:
    """A passthrough sender's stand-in for aiortc's H264Encoder: packs each packet only once."""

    _packer = FullFragments()
    packed = 0  # access units actually packetised, over all instances (for the tests)
    # The packet asked for last and its payloads: the feed offers one packet to every sender in
    # turn, and an identity check is cheaper than PyAV's opaque lookup.
    _last: tuple[av.Packet | None, tuple[list[bytes], int]] = (None, ([], 0))

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        last, done = SharedPacketizer._last
        if last is packet:
            return done
        kept = packet.opaque
        if kept is None:
            kept = packet.opaque = self._packer.pack(packet)
            SharedPacketizer.packed += 1
        done = cast(tuple[list[bytes], int], kept)
        SharedPacketizer._last = (packet, done)
        return done


class PassthroughTrack(PacketTrack):
    """One viewer's view of the camera feed: av.Packets, starting at an IDR."""

    kind = "video"

    def __init__(self, feed: CameraFeed) -> None:
        super().__init__()
        self._feed = feed
        self._started = False
        self.need_keyframe = True
        self.skipped = 0  # access units dropped while waiting for an IDR
        self.overflows = 0

    async def recv(self) -> av.Packet:
        self._start()
        return await self._next_packet()

    async def push(self, sink: Sink) -> av.Packet | None:
        self._start()
        return await super().push(sink)

    def _start(self) -> None:
        if not self._started:
            # The sender asks for its first packet once DTLS is up: ask for the IDR now, not at
            # viewer-joined, or it would pass before the viewer could receive it.
            self._started = True
            if self.need_keyframe:
                self._feed.want_keyframe()

    def offer(self, packet: av.Packet, keyframe: bool) -> None:
        """A new access unit from the feed (called on the event loop)."""
        if keyframe:
            self.need_keyframe = False
        elif self.need_keyframe:
            self.skipped += 1
            return
        if len(self._queue) >= TRACK_QUEUE:
            self._queue.clear()
            self.overflows += 1
            if not keyframe:
                self.need_keyframe = True
                self.skipped += 1
                self._feed.want_keyframe()
                return
        self._put(packet)

    def resync(self) -> None:
        """Access units were lost upstream: drop what is queued and wait for an IDR."""
        self._queue.clear()
        self.need_keyframe = True

    def stop(self) -> None:
        super().stop()
        self._feed._tracks.discard(self)


class CameraFeed:
    """camera.h264 from the bus, fanned out to passthrough tracks; keyframe requests to the camera."""

    def __init__(
        self,
        ask_camera: Callable[[], Awaitable[bool]],
        *,
        requests: KeyframeRequests | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask_camera = ask_camera
        self.requests = requests or KeyframeRequests()
        self._clock = clock
        self._tracks: set[PassthroughTrack] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._asking: set[asyncio.Task[None]] = set()
        self.last_seq: int | None = None
        self.units = 0
        self.lost_units = 0
        self.restarts = 0
        self.width = 0
        self.height = 0
        self._camera_refused = False
        # Ticked once per access unit: the viewers' RTCP reports go out on the frames
        # (aiortc_report_clock, installed by peer.py).
        self.report_clock = FrameClock()

    # --- the viewers' side ------------------------------------------------------------------

    def track(self) -> PassthroughTrack:
        track = PassthroughTrack(self)
        self._tracks.add(track)
        return track

    @property
    def tracks(self) -> int:
        return len(self._tracks)

    def picture_lost(self) -> None:
        self.want_keyframe()

    def want_keyframe(self) -> None:
        if self.requests.want(self._clock()):
            self._ask()
        self._arm_timer()

    # --- the camera's side ------------------------------------------------------------------

    async def run(self, sub: Subscription) -> None:
        """Feed every access unit on the subscription to the tracks (the daemon's task)."""
        try:
            async for rx in sub:
                msg = rx.msg
                if isinstance(msg, H264AccessUnit) and rx.attachment is not None:
                    self.feed(rx.seq, msg, rx.attachment)
        finally:
            self.close()

    def feed(self, seq: int, msg: H264AccessUnit, data: bytes) -> None:
        last = self.last_seq
        self.last_seq = seq
        if last is not None and seq != last + 1:
            if seq > last:
                self.lost_units += seq - last - 1
                log.info("camera.h264: %d access units lost on the bus; resyncing at an IDR", seq - last - 1)
            else:
                self.restarts += 1
                log.info("camera.h264 started again (seq %d after %d); resyncing at an IDR", seq, last)
            for track in self._tracks:
                track.resync()
            if not msg.keyframe and self._tracks:
                self.want_keyframe()
        self.units += 1
        self.width, self.height = msg.width, msg.height
        if msg.keyframe:
            self.requests.keyframe_seen()
        if self._tracks:
            packet = av.Packet(data)
            packet.pts = msg.pts
            packet.dts = msg.pts  # no B-frames: decode order is presentation order
            packet.time_base = Fraction(1, msg.time_base_den)
            # One packet object for every track: the senders only read it (bytes, pts, time_base).
            for track in list(self._tracks):
                track.offer(packet, msg.keyframe)
        # The reports due go out now, right behind the frame, while everything is awake.
        self.report_clock.tick()

    # --- requests to the camera -------------------------------------------------------------

    def _ask(self) -> None:
        task = asyncio.get_running_loop().create_task(self._ask_once(), name="camera.keyframe")
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    async def _ask_once(self) -> None:
        try:
            ok = await self._ask_camera()
        except Exception as exc:  # bus down, camera daemon absent: the timer asks again
            ok = False
            if not self._camera_refused:
                log.warning("camera.keyframe failed: %s", exc)
        else:
            if not ok and not self._camera_refused:
                log.warning("the camera refused a keyframe request")
        if ok and self._camera_refused:
            log.info("camera.keyframe answered again")
        self._camera_refused = not ok

    def _arm_timer(self) -> None:
        deadline = self.requests.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - self._clock())
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        waiting = any(t.need_keyframe for t in self._tracks)
        if self.requests.due(self._clock(), waiting):
            self._ask()
        self._arm_timer()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._asking):
            task.cancel()
        for track in list(self._tracks):
            track.stop()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._asking, return_exceptions=True)
