"""Stand-ins for picamera2, videodev2 and libcamera, shaped like the real ones where it matters.

picamera2 exists only on Raspberry Pi OS, so the backend's start() and stop() are tested here
against modules that copy the behaviour of picamera2's source (raspberrypi/picamera2,
picamera2/picamera2.py, encoders/encoder.py, encoders/v4l2_encoder.py) that the backend relies
on, including its failure paths:

- `Picamera2.__init__` makes a notification pipe and registers the instance with the camera
  manager before it opens the camera, and raises RuntimeError if opening fails (camera busy),
  undoing neither; `close()` returns at once when the camera never opened.
- `create_video_configuration` / `configure` refuse odd stream sizes and a lores stream larger
  than the main one (check_stream_config, check_camera_config).
- `start_recording` starts the encoder (which opens /dev/video11 and starts its poll thread),
  then the camera; `stop()` stops only the camera, `stop_recording()` the camera and encoders.
"""

from __future__ import annotations

import enum
import os
import sys
import threading
import types
from typing import Any

import pytest


class FakeCameraManager:
    def __init__(self) -> None:
        self.cameras: dict[int, Any] = {}

    def add(self, index: int, camera: Any) -> None:
        self.cameras[index] = camera

    def cleanup(self, index: int) -> None:
        del self.cameras[index]


class Picamera2:
    _cm = FakeCameraManager()
    busy = False  # the next opens fail as when another process holds the camera
    fail_start = False  # libcamera refuses to start streaming
    instances: list[Picamera2] = []

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [{"Model": "imx708", "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0}]

    def __init__(self, camera_num: int = 0) -> None:
        self.notifyme_r, self.notifyme_w = os.pipe2(os.O_NONBLOCK)
        self.notifymeread = os.fdopen(self.notifyme_r, "rb")
        self.is_open = False
        self._cm.add(camera_num, self)
        self.camera_idx = camera_num
        self.started = False
        self.post_callback: Any = None
        self._encoders: set[Any] = set()
        self.camera_config: dict[str, Any] = {}
        type(self).instances.append(self)
        if type(self).busy:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.is_open = True

    def create_video_configuration(
        self,
        main: dict[str, Any],
        lores: dict[str, Any] | None = None,
        transform: Any = None,
        controls: dict[str, Any] | None = None,
        encode: str = "main",
    ) -> dict[str, Any]:
        return {"main": dict(main), "lores": dict(lores) if lores else None, "transform": transform}

    def configure(self, config: dict[str, Any]) -> None:
        for name in ("main", "lores"):
            stream = config[name]
            if stream is None:
                continue
            size = stream["size"]
            if type(size) is not tuple or len(size) != 2:
                raise RuntimeError(f"size in {name} stream should be (width, height)")
            if size[0] % 2 or size[1] % 2:
                raise RuntimeError("width and height should be even")
        if config["lores"] is not None:
            main_w, main_h = config["main"]["size"]
            lores_w, lores_h = config["lores"]["size"]
            if lores_w > main_w or lores_h > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
        self.camera_config = config

    def stream_configuration(self, name: str) -> dict[str, Any]:
        return self.camera_config[name]

    def start_recording(self, encoder: Any, output: Any) -> None:
        encoder.output = output
        encoder.start()
        self._encoders.add(encoder)
        self.start()

    def start(self) -> None:
        if type(self).fail_start:
            raise RuntimeError("Failed to start camera: Device or resource busy")
        self.started = True

    def stop(self) -> None:
        self.started = False

    def stop_recording(self) -> None:
        self.stop()
        for encoder in self._encoders:
            encoder.stop()
        self._encoders.clear()

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        self._cm.cleanup(self.camera_idx)
        self.is_open = False
        self.notifymeread.close()
        os.close(self.notifyme_w)


class Encoder:
    def __init__(self) -> None:
        self._running = False
        self.firsttimestamp: int | None = None
        self.output: Any = None

    def start(self) -> None:
        if self._running:
            raise RuntimeError("Encoder already running")
        self._running = True
        self._start()

    def stop(self) -> None:
        if not self._running:
            raise RuntimeError("Encoder already stopped")
        self._running = False
        self._stop()

    def _start(self) -> None:
        pass

    def _stop(self) -> None:
        pass


class V4L2Encoder(Encoder):
    """Opens the codec device and runs a poll thread until stopped, as picamera2's does."""

    def __init__(self, bitrate: int | None = None) -> None:
        super().__init__()
        self.bitrate = bitrate
        self._controls: list[tuple[int, int]] = []
        self._key_frames_requested = 0
        self._key_frames_generated = 0
        self.vd: int | None = None

    def _start(self) -> None:
        self.vd = os.open(os.devnull, os.O_RDWR)  # /dev/video11 on a Pi 4
        self._quit = threading.Event()
        self.thread = threading.Thread(target=self._quit.wait, name="fake-v4l2-poll", daemon=True)
        self.thread.start()

    def _stop(self) -> None:
        self._quit.set()
        self.thread.join()
        assert self.vd is not None
        os.close(self.vd)
        self.vd = None

    def _check_for_picture(self, buf: bytes) -> bool:
        return len(buf) > 64


class H264Encoder(V4L2Encoder):
    def __init__(
        self,
        bitrate: int | None = None,
        repeat: bool = True,
        iperiod: int | None = None,
        framerate: float | None = None,
        enable_sps_framerate: bool = False,
        qp: int | None = None,
        profile: str | None = None,
    ) -> None:
        super().__init__(bitrate)
        self.iperiod, self.repeat, self.framerate = iperiod, repeat, framerate

    def _start(self) -> None:
        self._controls = [(3, self.iperiod or 0)]
        super()._start()

    def force_key_frame(self) -> None:
        self._key_frames_requested += 1


class LibavH264Encoder(Encoder):
    pass


class Output:
    def __init__(self, pts: Any = None) -> None:
        self.recording = False


class Platform(enum.Enum):
    VC4 = 0
    PISP = 1


class MappedArray:
    def __init__(self, request: Any, stream: str) -> None:
        raise AssertionError("no frames flow in these tests")


class Transform:
    def __init__(self, hflip: bool = False, vflip: bool = False) -> None:
        self.hflip, self.vflip = hflip, vflip


def install(monkeypatch: pytest.MonkeyPatch) -> type[Picamera2]:
    """Put the stand-ins where the backend imports them from; a fresh camera manager each time."""
    cam_cls = type("Picamera2", (Picamera2,), {"_cm": FakeCameraManager(), "instances": []})

    def module(name: str, **attrs: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    module("picamera2", Picamera2=cam_cls, MappedArray=MappedArray)
    module("picamera2.encoders", H264Encoder=H264Encoder)
    module("picamera2.encoders.libav_h264_encoder", LibavH264Encoder=LibavH264Encoder)
    module("picamera2.encoders.v4l2_encoder", V4L2Encoder=V4L2Encoder)
    module("picamera2.outputs", Output=Output)
    module("picamera2.platform", Platform=Platform, get_platform=lambda: Platform.VC4)
    module(
        "videodev2",
        V4L2_CID_MPEG_VIDEO_H264_PROFILE=1,
        V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE=11,
        V4L2_CID_MPEG_VIDEO_H264_LEVEL=2,
        **{
            f"V4L2_MPEG_VIDEO_H264_LEVEL_{major}_{minor}": major * 10 + minor
            for major in range(1, 6)
            for minor in range(3)
        },
    )
    module("libcamera", Transform=Transform)
    return cam_cls
