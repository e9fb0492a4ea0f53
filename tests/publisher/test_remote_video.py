"""The viewer's video into the picture-in-picture ring: a ring that cannot be made is retried."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import pytest

from appliance.bus.framering import FrameRingReader
from appliance.bus.topics import FrameRingNotice
from appliance.publisher import remote_video
from appliance.publisher.remote_video import RING, RemoteVideo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame() -> av.VideoFrame:
    return av.VideoFrame(64, 48, "rgb24")


def test_a_ring_that_could_not_be_made_is_tried_again_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"  # not there yet: the ring cannot be made
    clock = Clock()
    notices: list[FrameRingNotice] = []
    pip = RemoteVideo(str(run_dir), notices.append, clock=clock)

    with caplog.at_level(logging.ERROR, logger=remote_video.__name__):
        for _ in range(5):
            clock.now += 0.1
            pip.offer("v1", frame())
    assert notices == []
    assert pip.fault is not None and "picture-in-picture" in pip.fault
    # One failure, one log line: not one a frame (the browser sends 15 a second).
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

    run_dir.mkdir()
    clock.now += 1.0
    pip.offer("v1", frame())
    assert notices == [], "not tried again before RING_RETRY_S"

    clock.now += remote_video.RING_RETRY_S
    pip.offer("v1", frame())
    assert len(notices) == 1
    assert pip.fault is None
    reader = FrameRingReader.open(run_dir / RING)
    try:
        assert reader.latest() is not None
    finally:
        reader.close()
    pip.close()


def test_a_ring_write_that_fails_drops_the_ring_and_makes_a_new_one_later(tmp_path: Path) -> None:
    clock = Clock()
    notices: list[FrameRingNotice] = []
    pip = RemoteVideo(str(tmp_path), notices.append, clock=clock)
    pip.offer("v1", frame())
    assert len(notices) == 1
    assert pip._ring is not None
    pip._ring.close()  # a write now fails, as on a ring torn down under the writer

    clock.now += 1.0
    pip.offer("v1", frame())  # must not raise into the viewer's receive loop
    assert len(notices) == 1
    assert pip.fault is not None

    clock.now += remote_video.RING_RETRY_S
    pip.offer("v1", frame())
    assert len(notices) == 2
    assert pip.fault is None
    pip.close()
