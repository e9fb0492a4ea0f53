"""What every camera backend gives the daemon, and how it fails.

A backend runs its own threads (capture, encode; picamera2's own) and hands results to a
`FrameSink` from those threads: access units, preview frames, and a fault if it dies while
running. `start` and `stop` block and are called from a worker thread, never from the event
loop. A backend that cannot start raises `CameraAbsent` (there is no camera: nothing to fix
in software) or `CameraFault` (there is one and it fails), each with a reason for a human.
"""

from __future__ import annotations

import abc
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from appliance.camera.transform import Orientation
from appliance.config import CameraConfig
from appliance.errors import HardwareError

T = TypeVar("T")


class CameraAbsent(HardwareError):
    """No camera to open: not detected, not plugged in, or its library is missing."""


class CameraFault(HardwareError):
    """A camera is there but fails: it refuses the configuration, errors, or stops sending."""


class CameraStuck(CameraFault):
    """stop() could not release the camera (a driver call that never returns): only a new
    process gets it back, so the daemon exits to be restarted."""


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One H.264 access unit, Annex B, with SPS and PPS in front when it is an IDR."""

    data: bytes
    pts: int  # 90 kHz
    keyframe: bool
    capture_ts: float  # time.monotonic() when the picture was taken
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A picture waiting for the encoder: upright, at the output size, in a PyAV pixel format."""

    image: npt.NDArray[np.uint8]
    fmt: str  # "bgr24" (H, W, 3) or "yuv420p" (H * 3/2, W)
    capture_ts: float


class FrameSink(Protocol):
    """Where a backend delivers; every method may be called from any of the backend's threads."""

    def access_unit(self, au: AccessUnit) -> None: ...

    def preview(self, image: npt.NDArray[np.uint8], capture_ts: float) -> None:
        """A (preview_height, preview_width, 3) frame, B, G, R in memory."""

    def fault(self, reason: str) -> None:
        """The backend stopped working while running; the daemon will stop and retry it."""


@dataclass(frozen=True)
class StreamSettings:
    """The camera section of the config, resolved into what the pipelines need."""

    width: int
    height: int
    fps: int
    bitrate: int
    keyframe_interval_s: float
    orientation: Orientation
    preview_width: int
    preview_height: int
    device: str = "/dev/video0"

    @classmethod
    def from_config(cls, cam: CameraConfig) -> StreamSettings:
        return cls(
            width=cam.width,
            height=cam.height,
            fps=cam.fps,
            bitrate=cam.bitrate,
            keyframe_interval_s=cam.keyframe_interval_s,
            orientation=Orientation(cam.rotation, cam.hflip, cam.vflip),
            preview_width=cam.preview_width,
            preview_height=cam.preview_height,
            device=cam.device,
        )

    @property
    def capture_size(self) -> tuple[int, int]:
        return self.orientation.capture_size(self.width, self.height)

    @property
    def preview_capture_size(self) -> tuple[int, int]:
        return self.orientation.capture_size(self.preview_width, self.preview_height)

    @property
    def keyframe_period(self) -> int:
        """Frames between keyframes at the nominal rate, at least 1."""
        return max(1, round(self.fps * self.keyframe_interval_s))

    @property
    def encode_size(self) -> tuple[int, int]:
        """4:2:0 needs even dimensions; an odd configured size loses its last row or column."""
        return self.width - self.width % 2, self.height - self.height % 2


class Backend(abc.ABC):
    name: str

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def start(self, sink: FrameSink) -> None:
        """Open the camera and start streaming to sink; raise CameraAbsent or CameraFault."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop streaming and release the camera; safe to call twice or after a failed start."""

    @abc.abstractmethod
    def request_keyframe(self) -> bool:
        """Make the next access unit an IDR; False when not streaming."""

    @property
    def fps(self) -> float:
        """The frame rate in effect (a webcam may give less than asked)."""
        return float(self.settings.fps)

    @property
    def size(self) -> tuple[int, int]:
        """The size of the encoded picture (a camera may align the one asked for)."""
        return self.settings.encode_size


class LatestQueue(Generic[T]):
    """A bounded hand-off between threads that drops the oldest item when full.

    Raw frames wait here for the encoder: when it lags, the newest picture wins and the
    latency stays at most `maxlen` frames instead of growing without end.
    """

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._items: deque[T] = deque()
        self._maxlen = maxlen
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Queue item; False if an older one was dropped to make room."""
        with self._cond:
            dropped = len(self._items) >= self._maxlen
            if dropped:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()
            return not dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, or None on timeout or once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)


class FrameClock:
    """Paces a capture loop at fps on the monotonic clock, skipping ahead instead of bursting."""

    def __init__(self, fps: float, start: float) -> None:
        self.period = 1.0 / fps
        self.next = start

    def wait_time(self, now: float) -> float:
        """Seconds until the next frame is due (0 if due now)."""
        return max(0.0, self.next - now)

    def tick(self, now: float) -> int:
        """Account for a frame taken at `now`; returns frames skipped because we were late."""
        late = now - self.next
        skipped = max(0, math.floor(late / self.period)) if late > 0 else 0
        self.next += (skipped + 1) * self.period
        return skipped
