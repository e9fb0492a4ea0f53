"""A viewer's camera on the kiosk screen: decoded frames into a shared-memory ring.

aiortc decodes the viewer's video (VP8 or H.264, whatever the browser sent); each frame is
scaled to fit RING_WIDTH x RING_HEIGHT, keeping its shape (black bars), and written as
"RGB888" (B, G, R in memory, like camera-preview) into the ring `call-remote-video` in the
run directory. A `FrameRingNotice` on call.remote_video tells the screen; the pixels never
ride the bus.

The screen has one picture-in-picture, so one viewer is shown at a time: whoever started
sending first keeps it until their frames stop for SOURCE_IDLE_S or they leave; then the
next viewer sending takes over. Frames arrive at the browser's rate (the viewer page asks
for 15 fps); the ring is written at most MAX_FPS times a second.

A ring that cannot be made or written (the run directory gone, tmpfs full, the file torn
down) costs the picture-in-picture, never the call: the failure is logged once, and the ring
is made again at most every RING_RETRY_S while a viewer sends video, so a passing fault does
not leave the screen without the viewer's picture until the next restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import av

from appliance.bus.framering import FrameRingWriter, ring_path
from appliance.bus.topics import FrameRingNotice
from appliance.errors import StateError

log = logging.getLogger(__name__)

RING = "call-remote-video"
RING_FORMAT = "RGB888"
RING_WIDTH = 320
RING_HEIGHT = 240
SOURCE_IDLE_S = 2.0
MAX_FPS = 15.0
RING_RETRY_S = 30.0


def fit(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """The largest even size with the frame's aspect ratio inside the box."""
    scale = min(box_w / width, box_h / height)
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return min(w, box_w), min(h, box_h)


def letterbox(frame: av.VideoFrame, box_w: int = RING_WIDTH, box_h: int = RING_HEIGHT) -> bytearray:
    """The frame scaled into a black box_w x box_h picture, centred: bgr24 rows, no padding."""
    # Rows copied out of PyAV's plane rather than through to_ndarray(), which needs numpy.
    w, h = fit(frame.width, frame.height, box_w, box_h)
    plane = frame.reformat(width=w, height=h, format="bgr24").planes[0]
    pixels = memoryview(plane).cast("B")
    stride = plane.line_size  # may be more than w * 3: FFmpeg pads rows for alignment
    row = w * 3
    out = bytearray(box_w * box_h * 3)  # black
    y, x = (box_h - h) // 2, (box_w - w) // 2
    for r in range(h):
        at = ((y + r) * box_w + x) * 3
        out[at : at + row] = pixels[r * stride : r * stride + row]
    return out


class RemoteVideo:
    def __init__(
        self,
        run_dir: str,
        publish: Callable[[FrameRingNotice], object],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = ring_path(RING, run_dir)
        self._publish = publish
        self._clock = clock
        self._ring: FrameRingWriter | None = None
        self.fault: str | None = None  # the ring could not be made: no picture-in-picture
        self._failed_at = 0.0
        self.source: str | None = None
        self._last_frame = 0.0
        self._last_write = 0.0
        self.frames = 0

    def offer(self, viewer_id: str, frame: av.VideoFrame) -> None:
        now = self._clock()
        if self.source != viewer_id:
            if self.source is not None and now - self._last_frame < SOURCE_IDLE_S:
                return  # someone else holds the picture-in-picture
            log.info("picture-in-picture: showing viewer %s", viewer_id)
            self.source = viewer_id
        self._last_frame = now
        if now - self._last_write < 1.0 / MAX_FPS:
            return
        ring = self._open()
        if ring is None:
            return
        self._last_write = now
        try:
            seq = ring.write(letterbox(frame), now)
        except (OSError, StateError) as exc:
            self._failed(f"no picture-in-picture: writing the ring failed: {exc}", now)
            self.close()
            return
        self.fault = None
        self.frames += 1
        self._publish(
            FrameRingNotice(
                ring=RING,
                frame_seq=seq,
                width=RING_WIDTH,
                height=RING_HEIGHT,
                capture_ts=now,
                generation=ring.layout.generation,
            )
        )

    def viewer_left(self, viewer_id: str) -> None:
        if self.source == viewer_id:
            self.source = None

    def _open(self) -> FrameRingWriter | None:
        now = self._clock()
        if self._ring is None and (self.fault is None or now - self._failed_at >= RING_RETRY_S):
            try:
                self._ring = FrameRingWriter.create(self.path, RING_WIDTH, RING_HEIGHT, RING_FORMAT, slots=4)
            except StateError as exc:
                # The call goes on without the picture-in-picture.
                self._failed(f"no picture-in-picture: {exc}", now)
        return self._ring

    def _failed(self, fault: str, now: float) -> None:
        if fault != self.fault:
            log.error("%s (tried again every %g s)", fault, RING_RETRY_S)
        self.fault = fault
        self._failed_at = now

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
