"""The v4l2 backend: errors for missing or wrong devices, and its pipeline fed by a recorded clip.

There is no webcam here, so the pipeline test replaces only the device: a clip written with
PyAV is read through the same container API (streams, decode, close) at the webcam's pace.
Everything after the device (scaling, turning, preview, encoding, keyframes) is the real code.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from appliance.camera import h264, v4l2_backend
from appliance.camera.base import CameraAbsent, CameraFault, CameraStuck
from appliance.camera.transform import Orientation
from appliance.camera.v4l2_backend import V4L2Backend, check_device

from .helpers import CollectingSink, assert_keyframes_on_time, decode_all, settings


def test_a_missing_device_is_absent_with_the_reason(tmp_path: Path) -> None:
    backend = V4L2Backend(settings(device=str(tmp_path / "video0")))
    with pytest.raises(CameraAbsent, match="does not exist"):
        backend.start(CollectingSink())
    backend.stop()
    assert not backend.request_keyframe()


def test_a_file_or_a_non_camera_device_is_a_fault(tmp_path: Path) -> None:
    plain = tmp_path / "video0"
    plain.write_bytes(b"")
    with pytest.raises(CameraFault, match="not a character device"):
        check_device(str(plain))
    backend = V4L2Backend(settings(device="/dev/null"))
    with pytest.raises(CameraFault, match="/dev/null"):
        backend.start(CollectingSink())
    backend.stop()


class PacedClip:
    """A recorded clip behind the container API the backend uses, delivering at fps like a webcam."""

    def __init__(self, path: Path, fps: float) -> None:
        self.container = av.open(str(path))
        self.streams = self.container.streams
        self.period = 1.0 / fps

    def decode(self, video: int = 0) -> Iterator[Any]:
        for frame in self.container.decode(video=video):
            time.sleep(self.period)
            yield frame

    def close(self) -> None:
        self.container.close()


def write_clip(path: Path, frames: int, width: int = 640, height: int = 480) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=30)  # what many webcams send
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj422p"
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[:, : width // 2] = (0, 0, 255)  # left half red (B, G, R)
            img[: height // 4, :, 1] = 255  # a green band along the top
            img[:, :, 0] = i * 8  # blue changes, so frames differ
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_webcam_pipeline_gives_the_same_outputs(tmp_path: Path, sink: CollectingSink) -> None:
    clip = tmp_path / "clip.avi"
    write_clip(clip, 24)

    class ClipBackend(V4L2Backend):
        def _open(self) -> Any:
            return PacedClip(clip, fps=30)

    # The webcam gives 640x480 at 30 fps; the config asks for 240x320 at 15 fps, turned 90°.
    backend = ClipBackend(
        settings(
            240,
            320,
            fps=15,
            keyframe_interval_s=0.4,
            orientation=Orientation(90),
            preview=(120, 160),
            device="/dev/null",
        )
    )
    backend.start(sink)
    try:
        deadline = time.monotonic() + 10
        while not sink.faults and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        backend.stop()
    assert sink.faults == ["/dev/null: the stream ended"]  # a clip ends; a webcam unplugged does too
    units = sink.units
    # 24 frames at 30 fps thinned to 15 fps: a frame is kept when it comes at least 0.8 of a 15 fps
    # period after the last one kept, so about every other one (the last may still be queued). The
    # clip's frames come 1/30 s apart or later (later on a loaded machine, and then more are kept,
    # still never two closer than that).
    assert len(units) >= 9
    gaps = [b.capture_ts - a.capture_ts for a, b in itertools.pairwise(units)]
    assert min(gaps) >= 0.8 / 15, gaps
    assert_keyframes_on_time(units, 0.4, 15)  # every 6th of the 15 fps
    sps = h264.find_sps(units[0].data)
    assert sps is not None and sps.constrained_baseline and sps.level_idc == 31
    frames = decode_all(au.data for au in units)
    assert len(frames) == len(units)
    picture = frames[0].to_ndarray(format="bgr24")
    assert picture.shape == (320, 240, 3)
    # Turned clockwise: the clip's top (green band) is now on the right, its red left half on top.
    assert picture[10, 230, 1] > 200 and picture[10, 10, 2] > 200 and picture[300, 10, 2] < 60
    preview, _ = sink.previews[0]
    assert preview.shape == (160, 120, 3) and preview[5, 115, 1] > 200 and preview[5, 5, 2] > 200


class StuckDevice:
    """A webcam whose read never returns (a stalled USB camera), until `release` is set."""

    def __init__(self, clip: Path) -> None:
        self.clip = PacedClip(clip, fps=30)
        self.streams = self.clip.streams
        self.release = threading.Event()
        self.reading = threading.Event()
        self.closed_during_read = False
        self.closes = 0

    def decode(self, video: int = 0) -> Iterator[Any]:
        for n, frame in enumerate(self.clip.decode(video)):
            if n == 2:
                self.reading.set()
                self.release.wait(10)  # inside av_read_frame, without the GIL
                self.reading.clear()
            yield frame

    def close(self) -> None:
        # Freeing the demuxer under a thread blocked in it is a use-after-free in FFmpeg.
        self.closed_during_read |= self.reading.is_set()
        self.closes += 1
        self.clip.close()


def test_a_stuck_read_is_not_closed_under_the_capture_thread(tmp_path: Path, sink: CollectingSink) -> None:
    clip = tmp_path / "clip.avi"
    write_clip(clip, 24, 320, 240)
    device = StuckDevice(clip)

    class StuckBackend(V4L2Backend):
        def _open(self) -> Any:
            return device

    backend = StuckBackend(settings(320, 240, fps=15, device="/dev/null"))
    backend.start(sink)
    assert device.reading.wait(5)
    # Only a new process gets the device back from a read that never returns: say so.
    with pytest.raises(CameraStuck):
        backend.stop()
    assert not device.closed_during_read and device.closes == 0
    device.release.set()  # the read returns at last (the webcam was unplugged, say)
    deadline = time.monotonic() + 5
    while device.closes == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert device.closes == 1 and not device.closed_during_read  # released by the capture thread
    backend.stop()  # and a second stop has nothing left to do
    assert device.closes == 1


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_restarting_a_failing_webcam_leaks_no_threads_or_descriptors(tmp_path: Path) -> None:
    """A webcam that keeps failing is restarted by the daemon for weeks: nothing may build up."""
    clip = tmp_path / "clip.avi"
    write_clip(clip, 4, 160, 120)
    opened: list[int] = []
    closed: list[int] = []

    class CountedClip(PacedClip):
        def close(self) -> None:
            closed.append(1)
            super().close()

    class EndingBackend(V4L2Backend):  # a webcam whose stream ends (unplugged) after 4 frames
        def _open(self) -> Any:
            opened.append(1)
            return CountedClip(clip, fps=60)

    def run_once() -> None:
        backend = EndingBackend(settings(160, 120, fps=30, preview=(80, 60), device="/dev/null"))
        sink = CollectingSink()
        backend.start(sink)
        deadline = time.monotonic() + 10
        while not sink.faults and time.monotonic() < deadline:
            time.sleep(0.01)
        backend.stop()
        assert sink.faults == ["/dev/null: the stream ended"]

    run_once()  # the first run loads libraries and their thread pools
    fds, threads = open_fds(), threading.active_count()
    for _ in range(15):
        run_once()
    assert threading.active_count() == threads
    assert open_fds() == fds
    assert len(closed) == len(opened) == 16


def test_a_start_that_fails_after_opening_the_device_closes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    closes: list[int] = []

    class Device:
        streams = types.SimpleNamespace(video=[types.SimpleNamespace(average_rate=30, base_rate=None)])

        def close(self) -> None:
            closes.append(1)

    class Opened(V4L2Backend):
        def _open(self) -> Any:
            return Device()

    def broken_encoder(*args: Any, **kwargs: Any) -> None:
        raise av.FFmpegError(22, "libx264 refused the settings")

    monkeypatch.setattr(v4l2_backend, "SoftwareH264Encoder", broken_encoder)
    backend = Opened(settings(device="/dev/null"))
    with pytest.raises(av.FFmpegError):
        backend.start(CollectingSink())
    backend.stop()  # what the daemon does after a failed start
    assert closes == [1]
    assert not backend.request_keyframe()


def test_a_device_node_that_cannot_capture_is_a_fault_not_an_unplugged_camera(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # FFmpeg answers ENODEV for a V4L2 node without video capture, such as the metadata node a
    # UVC webcam adds beside its capture node (/dev/video1 next to /dev/video0): plugged in and
    # there, just the wrong node. "Unplugged?" would send the installer to the cable.
    def not_capture(path: str, **kwargs: Any) -> Any:
        raise av.FFmpegError(errno.ENODEV, "No such device", path)

    monkeypatch.setattr(av, "open", not_capture)
    backend = V4L2Backend(settings(device="/dev/null"))
    with pytest.raises(CameraFault, match="not a video capture device") as info:
        backend.start(CollectingSink())
    assert not isinstance(info.value, CameraAbsent)
    backend.stop()

    # A node that went away between the check and the open is still an unplugged camera.
    node = tmp_path / "video0"
    node.write_bytes(b"")
    gone = v4l2_backend._open_error(str(node), av.FFmpegError(errno.ENODEV, "No such device"))
    assert isinstance(gone, CameraFault) and "not a video capture device" in str(gone)
    node.unlink()
    gone = v4l2_backend._open_error(str(node), av.FFmpegError(errno.ENODEV, "No such device"))
    assert isinstance(gone, CameraAbsent) and "unplugged" in str(gone)
