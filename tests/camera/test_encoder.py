"""The software H.264 encoder: what Chromium and the publisher need, checked with FFmpeg's decoder."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from appliance.camera import h264
from appliance.camera.base import AccessUnit, FrameClock, LatestQueue, RawFrame
from appliance.camera.encoder import EncodeWorker, KeyframeClock, SoftwareH264Encoder

from .helpers import CollectingSink, decode_all


def pictures(n: int, width: int = 320, height: int = 240) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return [np.roll(base, 4 * i, axis=1) for i in range(n)]


def encode(encoder: SoftwareH264Encoder, n: int, fps: float, t0: float = 1000.0) -> list[AccessUnit]:
    out: list[AccessUnit] = []
    for i, picture in enumerate(pictures(n, encoder.width, encoder.height)):
        out += encoder.encode(picture, "bgr24", t0 + i / fps)
    return out + encoder.flush()


def test_constrained_baseline_level_31_with_headers_on_every_idr() -> None:
    encoder = SoftwareH264Encoder(320, 240, 10, 300_000, 1.0, threads=1)
    units = encode(encoder, 35, fps=10)
    assert len(units) == 35  # one access unit per picture: no delay, no B-frames
    keyframes = [i for i, au in enumerate(units) if au.keyframe]
    assert keyframes == [0, 10, 20, 30]
    for i, au in enumerate(units):
        types = h264.nal_types(au.data)
        assert au.data.startswith(b"\x00\x00\x00\x01") or au.data.startswith(b"\x00\x00\x01")
        if au.keyframe:
            assert types.index(7) < types.index(8) < types.index(5), types
            sps = h264.find_sps(au.data)
            assert sps is not None
            assert sps.profile_idc == 66 and sps.constraint_set(1), sps
            assert sps.level_idc == 31
        else:
            assert 5 not in types and 7 not in types, (i, types)
    # pts: 90 kHz of the capture time, increasing; the decoder takes every unit.
    assert [au.pts for au in units] == [h264.to_pts(1000.0 + i / 10) for i in range(35)]
    assert all(au.capture_ts == pytest.approx(1000.0 + i / 10) for i, au in enumerate(units))
    frames = decode_all(au.data for au in units)
    assert len(frames) == 35
    assert (frames[0].width, frames[0].height) == (320, 240)


def test_every_keyframe_starts_a_decodable_stream() -> None:
    encoder = SoftwareH264Encoder(320, 240, 10, 300_000, 0.5, threads=1)
    units = encode(encoder, 12, fps=10)
    starts = [i for i, au in enumerate(units) if au.keyframe]
    assert starts == [0, 5, 10]
    for start in starts[1:]:
        # A viewer joining at this IDR decodes everything from it on, with no earlier state.
        assert len(decode_all(au.data for au in units[start:])) == len(units) - start


def test_keyframes_follow_time_when_frames_are_dropped() -> None:
    encoder = SoftwareH264Encoder(320, 240, 30, 300_000, 1.0, threads=1)
    # A webcam that delivers 10 of its nominal 30 fps: an IDR still comes every second.
    units = encode(encoder, 25, fps=10)
    assert [i for i, au in enumerate(units) if au.keyframe] == [0, 10, 20]


def test_a_requested_keyframe_is_the_next_unit_and_an_idr() -> None:
    encoder = SoftwareH264Encoder(320, 240, 10, 300_000, 10.0, threads=1)
    pics = pictures(8)
    units = [u for i in range(4) for u in encoder.encode(pics[i], "bgr24", 10 + i / 10)]
    encoder.request_keyframe()
    forced = encoder.encode(pics[4], "bgr24", 10.4)
    after = [u for i in range(5, 8) for u in encoder.encode(pics[i], "bgr24", 10 + i / 10)]
    assert [au.keyframe for au in units] == [True, False, False, False]
    assert len(forced) == 1 and forced[0].keyframe
    assert 5 in h264.nal_types(forced[0].data) and 7 in h264.nal_types(forced[0].data)
    assert not any(au.keyframe for au in after)
    assert len(decode_all(au.data for au in forced + after)) == 4


def test_level_follows_the_picture_size() -> None:
    encoder = SoftwareH264Encoder(1920, 1080, 30, 4_000_000, 1.0, threads=1)
    (au,) = encoder.encode(np.zeros((1080, 1920, 3), np.uint8), "bgr24", 1.0)
    sps = h264.find_sps(au.data)
    assert sps is not None and sps.level_idc == 40 and sps.constrained_baseline


def test_odd_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        SoftwareH264Encoder(321, 240, 10, 300_000, 1.0)


def test_keyframe_clock() -> None:
    clock = KeyframeClock(1.0, 10)
    assert clock.due(5.0)  # nothing sent yet
    clock.keyframe_at(5.0)
    assert not clock.due(5.5)
    assert clock.due(5.96)  # half a frame early
    clock.force()
    assert clock.due(5.1)
    clock.keyframe_at(5.1)
    assert not clock.due(5.2)


def test_latest_queue_drops_the_oldest() -> None:
    q: LatestQueue[int] = LatestQueue(2)
    assert q.put(1) and q.put(2)
    assert not q.put(3)
    assert q.dropped == 1
    assert [q.get(0), q.get(0), q.get(0)] == [2, 3, None]
    q.close()
    assert q.get(None) is None  # closed and empty: does not block


def test_frame_clock_skips_instead_of_bursting() -> None:
    clock = FrameClock(10, start=100.0)
    assert clock.wait_time(99.95) == pytest.approx(0.05)
    assert clock.tick(100.0) == 0
    assert clock.next == pytest.approx(100.1)
    assert clock.tick(100.45) == 3  # 0.35 s late: three frames skipped, next one on the grid
    assert clock.next == pytest.approx(100.5)


def test_worker_keeps_the_newest_frames_when_the_encoder_lags(sink: CollectingSink) -> None:
    gate = threading.Event()

    class SlowEncoder(SoftwareH264Encoder):
        def encode(self, image: np.ndarray, fmt: str, capture_ts: float) -> list[AccessUnit]:
            gate.wait(5)
            return super().encode(image, fmt, capture_ts)

    worker = EncodeWorker(SlowEncoder(320, 240, 10, 300_000, 1.0, threads=1), sink, queue_len=2)
    worker.start()
    pics = pictures(10)
    for i, pic in enumerate(pics):
        worker.submit(RawFrame(pic, "bgr24", 50.0 + i / 10))
        time.sleep(0.01)
    gate.set()
    units = sink.wait_units(3)
    assert worker.stop()
    # The first picture was taken by the blocked encoder; of the other nine only the newest
    # two waited. Nothing queued without bound, and the stream still decodes.
    assert worker.queue.dropped == 7
    assert [round(au.capture_ts, 1) for au in units] == [50.0, 50.8, 50.9]
    assert len(decode_all(au.data for au in units)) == 3
    assert sink.faults == []


def test_worker_reports_an_encoder_failure(sink: CollectingSink) -> None:
    worker = EncodeWorker(SoftwareH264Encoder(320, 240, 10, 300_000, 1.0, threads=1), sink)
    worker.start()
    worker.submit(RawFrame(np.zeros((10, 10, 3), np.uint8), "nonsense-format", 1.0))
    deadline = time.monotonic() + 5
    while not sink.faults and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    assert sink.faults and "encoder failed" in sink.faults[0]
