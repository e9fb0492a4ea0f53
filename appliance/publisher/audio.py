"""The kiosk's microphone to the viewers who listen, as Opus: encoded once, passed through.

Like the video, audio is encoded once (libopus through PyAV, 48 kHz mono, 40 ms frames --
see microphone.FRAME_MS for why -- 32 kbit/s, the VoIP application mode) and each listening
viewer's `OpusTrack` returns the same `av.Packet`s; aiortc's OpusEncoder.pack sends a Packet
as it is.

Every viewer has an audio track from the start (no renegotiation later), but the kiosk's
microphone is open only while at least one viewer listens: the viewer page starts muted and
says `listen` when its user unmutes (appliance.publisher.channels). A kiosk nobody is
listening to captures no sound -- the people at the door are not overheard by a muted page --
and spends no CPU on audio. A track that does not listen gets no packets; its RTP timestamps
follow the monotonic clock, so a pause is a gap in time to the receiver, never a jump back.

A microphone that fails (unplugged, busy) is retried with backoff while anyone listens; the
viewers keep their video and data meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import av

from appliance.publisher.microphone import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    TIME_BASE,
    AudioDeviceError,
    Microphone,
)
from appliance.publisher.packettrack import PacketTrack

log = logging.getLogger(__name__)

BITRATE = 32_000
TRACK_QUEUE = 5  # 200 ms: a sender further behind than that is stalled; old audio is dropped
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0


class OpusEncoder:
    """s16 mono 48 kHz frames in, Opus packets out, pts counted in samples from `start_pts`."""

    def __init__(self, bitrate: int = BITRATE, start_pts: int = 0) -> None:
        cc = av.CodecContext.create("libopus", "w")
        cc.sample_rate = SAMPLE_RATE
        cc.layout = "mono"
        cc.format = "s16"
        cc.bit_rate = bitrate
        cc.time_base = TIME_BASE
        cc.options = {"application": "voip", "frame_duration": str(FRAME_MS)}
        cc.open()
        self._cc = cc
        self._pts = start_pts

    def encode(self, frame: av.AudioFrame) -> list[av.Packet]:
        out = []
        for packet in self._cc.encode(frame):
            # libopus reports its pre-skip as a negative first pts; RTP only needs timestamps
            # that advance by one frame per packet, so count them here.
            packet.pts = self._pts
            packet.time_base = TIME_BASE
            self._pts += FRAME_SAMPLES
            out.append(packet)
        return out


def clock_pts(now: float | None = None) -> int:
    """The monotonic clock in Opus samples: where a capture session's timestamps begin."""
    return round((time.monotonic() if now is None else now) * SAMPLE_RATE)


class OpusTrack(PacketTrack):
    kind = "audio"

    def __init__(self, feed: OpusFeed) -> None:
        super().__init__(maxlen=TRACK_QUEUE)
        self._feed = feed
        self.listening = False

    async def recv(self) -> av.Packet:
        return await self._next_packet()

    def listen(self, on: bool) -> None:
        """The viewer unmuted (True) or muted (False) the kiosk's sound."""
        if self.readyState == "live" and on != self.listening:
            self.listening = on
            self._feed._listeners_changed()

    def offer(self, packet: av.Packet) -> None:
        self._put(packet)  # a full deque drops its oldest

    def stop(self) -> None:
        super().stop()
        self.listening = False
        self._feed._remove(self)


class OpusFeed:
    def __init__(self, microphone: Callable[[], Microphone], *, bitrate: int = BITRATE) -> None:
        self._make_microphone = microphone
        self.bitrate = bitrate
        self._tracks: set[OpusTrack] = set()
        self._task: asyncio.Task[None] | None = None
        self.packets = 0
        self.sessions = 0  # times the microphone was opened
        self.fault: str | None = None

    def track(self) -> OpusTrack:
        track = OpusTrack(self)
        self._tracks.add(track)
        return track

    @property
    def listeners(self) -> list[OpusTrack]:
        return [t for t in self._tracks if t.listening]

    @property
    def capturing(self) -> bool:
        return self._task is not None and not self._task.done()

    def _listeners_changed(self) -> None:
        if self.listeners:
            # A task still running -- even one cancelled a moment ago, closing the microphone
            # -- is left to end: _capture_ended starts the next one once the device is free.
            if self._task is None:
                self._start_capture()
        elif self._task is not None:
            self._task.cancel()

    def _start_capture(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._capture(), name="microphone")
        self._task.add_done_callback(self._capture_ended)

    def _capture_ended(self, task: asyncio.Task[None]) -> None:
        # Dropped at once: a finished task keeps its frames (and the last track they touched)
        # alive through its exception's traceback.
        if self._task is task:
            self._task = None
            if self.listeners:
                # Someone started listening while this task was being cancelled (the last
                # listener had just muted or left): they would otherwise get no sound at all.
                self._start_capture()

    def _remove(self, track: OpusTrack) -> None:
        self._tracks.discard(track)
        self._listeners_changed()

    async def _capture(self) -> None:
        delay = RETRY_INITIAL_S
        while self.listeners:
            mic = self._make_microphone()
            try:
                await mic.open()
                self.sessions += 1
                encoder = OpusEncoder(self.bitrate, start_pts=clock_pts())
                if self.fault is not None:
                    log.info("microphone working again")
                self.fault = None
                delay = RETRY_INITIAL_S
                while True:
                    frame = await mic.read()
                    listeners = self.listeners
                    if not listeners:
                        break
                    for packet in encoder.encode(frame):
                        self.packets += 1
                        for track in listeners:
                            track.offer(packet)
            except Exception as exc:  # a device error, or a codec error: either way retry later
                reason = (
                    str(exc) if isinstance(exc, AudioDeviceError) else f"audio: {type(exc).__name__}: {exc}"
                )
                if self.fault != reason:
                    log.warning(
                        "%s; retrying while viewers listen",
                        reason,
                        exc_info=not isinstance(exc, AudioDeviceError),
                    )
                self.fault = reason
            finally:
                with contextlib.suppress(Exception):
                    await mic.close()
            if self.listeners:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def aclose(self) -> None:
        for track in list(self._tracks):
            track.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
