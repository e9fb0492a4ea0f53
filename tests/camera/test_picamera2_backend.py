"""The picamera2 backend's own logic, which runs without picamera2 (the rest is in hw-tests/).

The encoder subclasses are tested against stand-ins shaped like picamera2's H264Encoder and
V4L2Encoder (the same _start chain), to show that our controls reach the V4L2 ioctl stage.
"""

from __future__ import annotations

import importlib.util
import types

import pytest

from appliance.camera import h264
from appliance.camera.base import CameraAbsent
from appliance.camera.picamera2_backend import (
    AccessUnitOutput,
    Picamera2Backend,
    _output_class,
    _v4l2_encoder,
)

from .helpers import CollectingSink, settings

SPS = b"\x00\x00\x00\x01" + bytes([0x67, 0x42, 0xC0, 0x1F, 0xDA])
PPS = b"\x00\x00\x00\x01" + bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = b"\x00\x00\x00\x01" + bytes([0x65, 0x88, 0x84])
P = b"\x00\x00\x00\x01" + bytes([0x41, 0x9A, 0x02])


def test_output_maps_sensor_time_and_repairs_headers(sink: CollectingSink) -> None:
    first_us = 5_000_000_000  # the encoder's firsttimestamp: µs on CLOCK_MONOTONIC
    logic = AccessUnitOutput(sink, 640, 480, lambda: first_us)

    class FakeOutputBase:
        def __init__(self) -> None:
            self.recording = False

    output = _output_class(FakeOutputBase)(logic)
    output.outputframe(SPS + PPS + IDR, True, 0)
    output.outputframe(P, False, 33_333)
    output.outputframe(IDR, True, 66_667)  # a hardware IDR whose headers came in a dropped buffer
    output.outputframe(None, True, 70_000, audio=True)  # audio is not ours
    a, b, c = sink.units
    assert a.capture_ts == pytest.approx(5000.0) and a.pts == h264.to_pts(5000.0)
    assert b.capture_ts == pytest.approx(5000.033333) and not b.keyframe
    assert c.keyframe and h264.nal_types(c.data) == [7, 8, 5]
    assert (c.width, c.height) == (640, 480)


def test_output_without_a_sensor_base_anchors_on_the_monotonic_clock(sink: CollectingSink) -> None:
    logic = AccessUnitOutput(sink, 320, 240, lambda: None)
    first = logic.frame(SPS + PPS + IDR, 0)
    second = logic.frame(P, 100_000)
    assert second.capture_ts - first.capture_ts == pytest.approx(0.1)
    assert second.pts > first.pts


def test_v4l2_encoder_sets_constrained_baseline_and_the_level() -> None:
    applied: list[list[tuple[int, int]]] = []
    fake_v4l2 = types.SimpleNamespace(
        V4L2_CID_MPEG_VIDEO_H264_PROFILE=1,
        V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE=11,
        V4L2_CID_MPEG_VIDEO_H264_LEVEL=2,
        V4L2_MPEG_VIDEO_H264_LEVEL_3_1=9,
        V4L2_CID_MPEG_VIDEO_H264_I_PERIOD=3,
    )

    class V4L2Encoder:  # stands in for picamera2's: applies self._controls in _start
        def __init__(self) -> None:
            self._controls: list[tuple[int, int]] = []

        def _start(self) -> None:
            applied.append(list(self._controls))

        def _check_for_picture(self, buf: bytes) -> bool:
            return len(buf) > 64

    class H264Encoder(V4L2Encoder):  # builds its list, then calls up the chain
        def __init__(self, iperiod: int) -> None:
            super().__init__()
            self.iperiod = iperiod

        def _start(self) -> None:
            self._controls = [(2, 11), (3, self.iperiod)]  # e.g. a level 4.1 from picamera2's own logic
            super()._start()

    remembered: list[bytes] = []
    cls = _v4l2_encoder(H264Encoder, V4L2Encoder, fake_v4l2, 31, remembered.append)
    encoder = cls(iperiod=30)
    encoder._start()
    assert sorted(applied[0]) == [(1, 11), (2, 9), (3, 30)]
    assert not encoder._check_for_picture(SPS + PPS)
    assert remembered == [SPS + PPS]


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
def test_without_picamera2_the_camera_is_absent_with_the_reason() -> None:
    backend = Picamera2Backend(settings())
    with pytest.raises(CameraAbsent, match="python3-picamera2"):
        backend.start(CollectingSink())
    backend.stop()
    assert not backend.request_keyframe()


def test_an_error_in_our_output_is_a_fault_not_the_end_of_picamera2s_encoder_thread(
    sink: CollectingSink,
) -> None:
    # outputframe runs in picamera2's V4L2 poll thread, between dequeuing an encoded buffer and
    # queuing it back: an exception there ends that thread silently and leaves the encoder
    # without buffers, so the daemon would see only "no frames" seconds later.
    def broken_clock() -> int:
        raise OverflowError("timestamp out of range")

    logic = AccessUnitOutput(sink, 640, 480, broken_clock)

    class FakeOutputBase:
        pass

    output = _output_class(FakeOutputBase)(logic)
    output.outputframe(SPS + PPS + IDR, True, 0)  # must not raise into picamera2
    output.outputframe(P, False, 33_333)
    assert sink.units == []
    assert sink.faults and "OverflowError: timestamp out of range" in sink.faults[0]
