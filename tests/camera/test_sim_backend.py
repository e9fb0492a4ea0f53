"""The sim backend end to end (without the bus): decodable stamped H.264, keyframes, previews."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from appliance.camera import h264, stamp
from appliance.camera.base import CameraFault
from appliance.camera.sim_backend import SimBackend
from appliance.camera.transform import Orientation

from .helpers import CollectingSink, assert_keyframes_on_time, decode_all, settings


def test_streams_decodable_constrained_baseline_with_stamps(sink: CollectingSink) -> None:
    backend = SimBackend(settings(320, 240, fps=10, keyframe_interval_s=0.5))
    backend.start(sink)
    try:
        units = sink.wait_units(14)
    finally:
        backend.stop()
    assert sink.faults == []
    assert units[0].keyframe
    assert_keyframes_on_time(units, 0.5, 10, at_least=3)  # every 5th frame at 10 fps
    for au in units:
        assert (au.width, au.height) == (320, 240)
        if au.keyframe:
            types = h264.nal_types(au.data)
            assert 7 in types and 8 in types
            sps = h264.find_sps(au.data)
            assert sps is not None and sps.constrained_baseline and sps.level_idc == 31
    gaps = np.diff([au.capture_ts for au in units])
    assert gaps.min() > 0.05 and np.median(gaps) == pytest.approx(0.1, abs=0.01)  # paced at 10 fps
    assert all(b.pts > a.pts for a, b in itertools.pairwise(units))

    frames = decode_all(au.data for au in units)
    stamps = [stamp.decode_stamp(f.to_ndarray(format="bgr24")) for f in frames]
    assert None not in stamps
    counters = [s.counter for s in stamps if s is not None]
    assert counters == list(range(counters[0], counters[0] + len(counters)))
    # The stamped time is the capture time on the wall clock: close to now, not in the future.
    now = stamp.wall_ms()
    assert all(0 <= stamp.ms_since(now, s.ms) < 10_000 for s in stamps if s is not None)

    # Previews: the configured size, B, G, R, unstamped, one per frame.
    assert len(sink.previews) >= len(units)
    image, _ = sink.previews[0]
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    assert stamp.decode_stamp(image) is None


def test_keyframe_request_makes_the_next_unit_an_idr(sink: CollectingSink) -> None:
    backend = SimBackend(settings(320, 240, fps=15, keyframe_interval_s=10.0))
    backend.start(sink)
    try:
        before = len(sink.wait_units(4))
        assert backend.request_keyframe()
        units = sink.wait_units(before + 3)
    finally:
        backend.stop()
    later = units[before:]
    # The unit in flight when the request arrived may still be a P-frame; the next one is the IDR.
    assert later[0].keyframe or later[1].keyframe
    assert not any(au.keyframe for au in units[1:before])
    assert not backend.request_keyframe()  # stopped


def test_rotation_gives_the_configured_output_size(sink: CollectingSink) -> None:
    backend = SimBackend(
        settings(240, 320, fps=10, orientation=Orientation(90, hflip=True), preview=(120, 160))
    )
    backend.start(sink)
    try:
        units = sink.wait_units(2)
    finally:
        backend.stop()
    frames = decode_all(au.data for au in units)
    assert (frames[0].width, frames[0].height) == (240, 320)
    assert stamp.decode_stamp(frames[0].to_ndarray(format="bgr24")) is not None  # stamped after turning
    assert sink.previews[0][0].shape == (160, 120, 3)


def test_an_unknown_scenario_is_a_fault_with_the_reason() -> None:
    backend = SimBackend(settings(), scenario="no-such-scenario")
    with pytest.raises(CameraFault, match="no-such-scenario"):
        backend.start(CollectingSink())
    backend.stop()


def test_stop_is_prompt_and_idempotent(sink: CollectingSink) -> None:
    backend = SimBackend(settings(320, 240, fps=5))
    backend.start(sink)
    sink.wait_units(1)
    t0 = time.monotonic()
    backend.stop()
    backend.stop()
    assert time.monotonic() - t0 < 1.0
    n = len(sink.units)
    time.sleep(0.3)
    assert len(sink.units) == n
