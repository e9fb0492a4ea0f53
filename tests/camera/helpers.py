"""Shared by the camera tests: a sink that collects what a backend delivers, an H.264 decoder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import av
import numpy as np
import numpy.typing as npt

from appliance.camera.base import AccessUnit, StreamSettings
from appliance.camera.transform import Orientation


class CollectingSink:
    """A FrameSink that keeps everything, thread-safe, with a wait helper."""

    def __init__(self) -> None:
        self.units: list[AccessUnit] = []
        self.previews: list[tuple[npt.NDArray[np.uint8], float]] = []
        self.faults: list[str] = []
        self._cond = threading.Condition()

    def access_unit(self, au: AccessUnit) -> None:
        with self._cond:
            self.units.append(au)
            self._cond.notify_all()

    def preview(self, image: npt.NDArray[np.uint8], capture_ts: float) -> None:
        with self._cond:
            self.previews.append((image.copy(), capture_ts))

    def fault(self, reason: str) -> None:
        with self._cond:
            self.faults.append(reason)
            self._cond.notify_all()

    def wait_units(self, n: int, timeout: float = 10.0) -> list[AccessUnit]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.units) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.units)} of {n} access units arrived (faults: {self.faults})"
                self._cond.wait(left)
            return list(self.units)


def decode_all(units: Iterable[bytes]) -> list[av.VideoFrame]:
    """Decode access units with a fresh PyAV (FFmpeg) H.264 decoder, one packet per unit."""
    decoder = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    for data in units:
        frames.extend(decoder.decode(av.Packet(data)))
    frames.extend(decoder.decode(None))
    return frames


def settings(
    width: int = 320,
    height: int = 240,
    fps: int = 10,
    *,
    bitrate: int = 400_000,
    keyframe_interval_s: float = 1.0,
    orientation: Orientation | None = None,
    preview: tuple[int, int] = (160, 120),
    device: str = "/dev/video0",
) -> StreamSettings:
    return StreamSettings(
        width=width,
        height=height,
        fps=fps,
        bitrate=bitrate,
        keyframe_interval_s=keyframe_interval_s,
        orientation=orientation or Orientation(),
        preview_width=preview[0],
        preview_height=preview[1],
        device=device,
    )


def assert_keyframes_on_time(
    units: list[AccessUnit], interval_s: float, fps: float, *, at_least: int = 2
) -> None:
    """An IDR exactly when the interval (less half a frame) has passed since the last one, by capture time.

    Checked against the capture times the units carry, so a loaded machine that delays or skips
    frames does not make the test flaky, while a missing or extra keyframe still fails it.
    """
    assert units and units[0].keyframe, "the stream must start with an IDR"
    due_after = interval_s - 0.5 / fps
    last = units[0].capture_ts
    for i, au in enumerate(units[1:], 1):
        due = au.capture_ts - last >= due_after - 1e-9
        assert au.keyframe == due, (
            f"unit {i}: keyframe={au.keyframe} at {au.capture_ts - last:.3f} s after the last"
        )
        if au.keyframe:
            last = au.capture_ts
    assert sum(au.keyframe for au in units) >= at_least
