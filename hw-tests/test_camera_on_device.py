"""On a device: the camera backends against real cameras.

- picamera2 on a Raspberry Pi with a camera module on the CSI connector: hardware H.264 on a
  Pi 4 (picamera2's libx264 on a Pi 5), checked with FFmpeg's decoder for what the WebRTC
  publisher and Chromium need, and the software-turn path for rotation 90.
- v4l2 with a USB webcam (any Linux machine): /dev/v4l/by-id/usb-*-video-index0, or the
  device named by $APPLIANCE_TEST_WEBCAM.

Each test skips with the reason when its hardware is not there.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import itertools
import os
import threading
import time

import av
import numpy as np
import numpy.typing as npt
import pytest

from appliance.camera import h264
from appliance.camera.base import AccessUnit, Backend, StreamSettings
from appliance.camera.transform import Orientation

pytestmark = pytest.mark.hw


class Sink:
    def __init__(self) -> None:
        self.units: list[AccessUnit] = []
        self.previews: list[tuple[npt.NDArray[np.uint8], float]] = []
        self.faults: list[str] = []
        self.lock = threading.Lock()

    def access_unit(self, au: AccessUnit) -> None:
        with self.lock:
            self.units.append(au)

    def preview(self, image: npt.NDArray[np.uint8], capture_ts: float) -> None:
        with self.lock:
            self.previews.append((image.copy(), capture_ts))

    def fault(self, reason: str) -> None:
        with self.lock:
            self.faults.append(reason)


def stream_settings(rotation: int = 0, fps: int = 30) -> StreamSettings:
    return StreamSettings(
        width=640,
        height=480,
        fps=fps,
        bitrate=1_500_000,
        keyframe_interval_s=1.0,
        orientation=Orientation(rotation),  # type: ignore[arg-type]
        preview_width=320,
        preview_height=240,
    )


def run_for(backend: Backend, seconds: float) -> Sink:
    sink = Sink()
    backend.start(sink)
    try:
        time.sleep(seconds / 2)
        before = len(sink.units)
        assert backend.request_keyframe()
        time.sleep(seconds / 2)
    finally:
        backend.stop()
    assert sink.faults == []
    # The keyframe we asked for: among the first few units after the request.
    assert any(au.keyframe for au in sink.units[before + 1 : before + 4]), "camera.keyframe had no effect"
    return sink


def check_stream(sink: Sink, fps: int, width: int = 640, height: int = 480) -> None:
    units = sink.units
    assert len(units) >= fps, f"only {len(units)} access units"
    assert units[0].keyframe
    for au in units:
        assert (au.width, au.height) == (width, height)
        if au.keyframe:
            types = h264.nal_types(au.data)
            assert 7 in types and 8 in types and 5 in types, types
            sps = h264.find_sps(au.data)
            assert sps is not None and sps.profile_idc == 66 and sps.constraint_set(1), sps
            assert sps.level_idc == 31, sps
    keyframes = [au.capture_ts for au in units if au.keyframe]
    gaps = np.diff(keyframes)
    assert len(gaps) and gaps.max() < 1.6, f"keyframes {gaps} s apart"
    assert all(b.pts > a.pts for a, b in itertools.pairwise(units))
    # capture_ts is on our monotonic clock (the sensor's timestamps are CLOCK_MONOTONIC).
    assert 0 < time.monotonic() - units[-1].capture_ts < 2.0
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for au in units for f in decoder.decode(av.Packet(au.data))]
    assert len(frames) >= len(units) - 2
    assert (frames[0].width, frames[0].height) == (width, height)
    assert sink.previews and sink.previews[-1][0].shape == (240, 320, 3)


@pytest.fixture
def pi_camera(raspberry_pi: str) -> str:
    if importlib.util.find_spec("picamera2") is None:
        pytest.skip(
            "picamera2 is not importable: apt install python3-picamera2, venv with --system-site-packages"
        )
    from picamera2 import Picamera2

    cameras = Picamera2.global_camera_info()
    if not cameras:
        pytest.skip("libcamera finds no camera on this Pi")
    return str(cameras[0].get("Model", "camera"))


def test_picamera2_streams_constrained_baseline(pi_camera: str) -> None:
    from appliance.camera.picamera2_backend import Picamera2Backend

    sink = run_for(Picamera2Backend(stream_settings()), 4.0)
    check_stream(sink, 30)
    fps = len(sink.units) / (sink.units[-1].capture_ts - sink.units[0].capture_ts)
    assert fps > 25, f"{pi_camera} gave {fps:.1f} fps"


def test_picamera2_rotation_90_in_software(pi_camera: str) -> None:
    from appliance.camera.picamera2_backend import Picamera2Backend

    sink = run_for(Picamera2Backend(stream_settings(rotation=90, fps=15)), 4.0)
    check_stream(sink, 15)


def webcam() -> str | None:
    named = os.environ.get("APPLIANCE_TEST_WEBCAM")
    if named:
        return named
    found = sorted(glob.glob("/dev/v4l/by-id/usb-*-video-index0"))
    return found[0] if found else None


def test_v4l2_webcam_streams_constrained_baseline() -> None:
    device = webcam()
    if device is None:
        pytest.skip(
            "no USB webcam (/dev/v4l/by-id/usb-*-video-index0); set APPLIANCE_TEST_WEBCAM to name one"
        )
    from appliance.camera.v4l2_backend import V4L2Backend

    backend = V4L2Backend(dataclasses.replace(stream_settings(fps=15), device=device))
    sink = run_for(backend, 4.0)
    check_stream(sink, 10)
