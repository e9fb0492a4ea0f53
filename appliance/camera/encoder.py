"""Software H.264 through PyAV (libx264), and the worker thread that runs it.

The sim and v4l2 backends (and picamera2 where the ISP cannot do the turn) encode here.
Settings are those of a WebRTC sender, not of a recorder:

- Constrained Baseline, level 3.1 when the picture fits (profile-level-id 42c01f / 42e01f):
  what Chromium's decoder and the publisher's codec preference expect. No B-frames.
- preset ultrafast, tune zerolatency: no lookahead, no frame threads, so each frame in gives
  its access unit out at once; sliced threads keep the latency of one frame low.
- SPS and PPS before every IDR (x264 repeat-headers, no global header), IDRs at the configured
  interval of *time*, not of frames: a webcam in a dim room drops to 15 fps, and a viewer
  joining should still wait at most the interval. scenecut is off so IDRs come only then.
- A forced keyframe is an IDR (x264 forced-idr; a plain forced I-frame would not let a new
  decoder start there).
- VBV (maxrate = bitrate, a buffer of half a second) bounds frame sizes, so a burst after a
  scene change does not stall the network path for seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av.video.frame import PictureType

from appliance.camera import h264
from appliance.camera.base import AccessUnit, FrameSink, LatestQueue, RawFrame

log = logging.getLogger(__name__)

PTS_BASE = Fraction(1, h264.PTS_HZ)
# How many access units may wait for the loop's capture_ts lookup (no B-frames: at most one).
_PENDING_LIMIT = 64


class KeyframeClock:
    """Says when the next IDR is due, by capture time."""

    def __init__(self, interval_s: float, fps: float) -> None:
        # Due half a frame early, so that at the nominal rate the IDR lands on the frame at
        # the interval rather than on the one after it.
        self.interval = max(0.0, interval_s - 0.5 / fps)
        self.last: float | None = None
        self.forced = False

    def force(self) -> None:
        self.forced = True

    def due(self, capture_ts: float) -> bool:
        return self.forced or self.last is None or capture_ts - self.last >= self.interval

    def keyframe_at(self, capture_ts: float) -> None:
        self.last = capture_ts
        self.forced = False


class SoftwareH264Encoder:
    """libx264 via PyAV: raw pictures in, Annex B access units out (one per picture)."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        bitrate: int,
        keyframe_interval_s: float,
        *,
        threads: int = 2,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"4:2:0 needs an even size, got {width}x{height}")
        self.width = width
        self.height = height
        self.level = h264.level_for(width, height, fps, bitrate)
        cc = av.CodecContext.create("libx264", "w")
        cc.width = width
        cc.height = height
        cc.pix_fmt = "yuv420p"
        cc.time_base = PTS_BASE
        cc.framerate = Fraction(fps).limit_denominator(1001)
        cc.bit_rate = bitrate
        # x264's own keyframe cadence is only a backstop; the KeyframeClock forces them on time.
        cc.gop_size = max(1, round(fps * keyframe_interval_s * 2))
        cc.max_b_frames = 0
        cc.thread_count = threads
        cc.profile = "Constrained Baseline"
        cc.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "level": f"{self.level // 10}.{self.level % 10}",
            "forced-idr": "1",
            "maxrate": str(bitrate),
            "bufsize": str(bitrate // 2),
            "x264-params": "repeat-headers=1:scenecut=0:aud=0:bframes=0:rc-lookahead=0",
        }
        cc.open()
        self._cc = cc
        self._clock = KeyframeClock(keyframe_interval_s, fps)
        self._headers = h264.ParameterSetCache()
        self._capture_ts: dict[int, float] = {}
        self._last_pts: int | None = None
        self._lock = threading.Lock()
        self.frames_in = 0

    def request_keyframe(self) -> None:
        """The next picture encoded becomes an IDR (callable from any thread)."""
        with self._lock:
            self._clock.force()

    def encode(self, image: npt.NDArray[np.uint8], fmt: str, capture_ts: float) -> list[AccessUnit]:
        frame = av.VideoFrame.from_ndarray(image, format=fmt)
        if fmt != "yuv420p" or frame.width != self.width or frame.height != self.height:
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        pts = h264.to_pts(capture_ts)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # two captures within 11 µs: pts must still increase
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = PTS_BASE
        with self._lock:
            if self._clock.due(capture_ts):
                frame.pict_type = PictureType.I
        self._capture_ts[pts] = capture_ts
        if len(self._capture_ts) > _PENDING_LIMIT:
            self._capture_ts.pop(next(iter(self._capture_ts)))
        self.frames_in += 1
        return self._collect(self._cc.encode(frame))

    def flush(self) -> list[AccessUnit]:
        return self._collect(self._cc.encode(None))

    def _collect(self, packets: list[av.Packet]) -> list[AccessUnit]:
        out = []
        for packet in packets:
            data, idr = self._headers.ensure(bytes(packet))
            pts = int(packet.pts) if packet.pts is not None else (self._last_pts or 0)
            capture_ts = self._capture_ts.pop(pts, None)
            if capture_ts is None:
                capture_ts = time.monotonic()
            if idr:
                with self._lock:
                    self._clock.keyframe_at(capture_ts)
            out.append(AccessUnit(data, pts, idr, capture_ts, self.width, self.height))
        return out

    def close(self) -> None:
        # Closing the codec context is left to PyAV's finalizer; dropping it here is enough.
        self._capture_ts.clear()


class EncodeWorker:
    """A thread that takes RawFrames from a LatestQueue, encodes them and feeds the sink.

    Keeps the encoder off the event loop and off the capture thread: capture never waits for
    the encoder, and a lagging encoder loses the oldest pictures, not the newest.
    """

    def __init__(
        self,
        encoder: SoftwareH264Encoder,
        sink: FrameSink,
        *,
        queue_len: int = 2,
        prepare: Callable[[RawFrame], RawFrame] | None = None,
    ) -> None:
        self.encoder = encoder
        self.sink = sink
        # Work on the raw picture (turning it, unpadding it) that should not hold up capture.
        self.prepare = prepare
        self.queue: LatestQueue[RawFrame] = LatestQueue(queue_len)
        self.encode_seconds = 0.0  # wall time spent preparing and encoding, for the figures
        self.encoded = 0
        self._thread = threading.Thread(target=self._run, name="camera-encode", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, frame: RawFrame) -> None:
        # A dropped picture was never encoded, so the stream stays decodable; only the frame
        # rate dips. Log the first drop and then every 100th.
        if not self.queue.put(frame) and (self.queue.dropped == 1 or self.queue.dropped % 100 == 0):
            log.warning("encoder lagging: %d raw frames dropped so far", self.queue.dropped)

    def request_keyframe(self) -> None:
        self.encoder.request_keyframe()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the picture in hand; True if the thread ended within timeout."""
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                frame = self.queue.get(timeout=1.0)
                if frame is None:
                    if self.queue.closed:
                        return
                    continue
                t0 = time.perf_counter()
                if self.prepare is not None:
                    frame = self.prepare(frame)
                units = self.encoder.encode(frame.image, frame.fmt, frame.capture_ts)
                self.encode_seconds += time.perf_counter() - t0
                self.encoded += 1
                for unit in units:
                    self.sink.access_unit(unit)
        except Exception as exc:
            log.exception("encoder failed")
            self.sink.fault(f"H.264 encoder failed: {type(exc).__name__}: {exc}")
        finally:
            self.encoder.close()
