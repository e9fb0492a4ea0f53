"""The bridge from backend threads to the loop: bounded, recovers at an IDR, silent after close."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np

from appliance.bus.framering import FrameRingReader, FrameRingWriter
from appliance.camera.base import AccessUnit
from appliance.camera.outlet import Outlet


def au(i: int, key: bool = False) -> AccessUnit:
    return AccessUnit(bytes([0, 0, 1, 0x65 if key else 0x41, i]), i * 3000, key, i / 30, 320, 240)


async def test_units_cross_threads_in_order() -> None:
    outlet = Outlet(asyncio.get_running_loop(), None, max_units=100)

    def send() -> None:
        for i in range(50):
            outlet.access_unit(au(i, i == 0))

    sender = threading.Thread(target=send)
    sender.start()
    got: list[int] = []
    while len(got) < 50:
        await outlet.wait(5)
        got += [u.pts // 3000 for u in outlet.take().units]
    sender.join()
    assert got == list(range(50))


async def test_overflow_drops_until_an_idr_and_asks_for_one() -> None:
    asked: list[int] = []
    outlet = Outlet(asyncio.get_running_loop(), None, max_units=4, request_keyframe=lambda: asked.append(1))
    for i in range(4):
        outlet.access_unit(au(i, i == 0))
    outlet.access_unit(au(4))  # the fifth: the publisher is not keeping up
    assert asked == [1]
    outlet.access_unit(au(5))  # still no IDR: dropped, and no second request
    outlet.access_unit(au(6, key=True))
    outlet.access_unit(au(7))
    batch = outlet.take()
    assert [u.pts // 3000 for u in batch.units] == [6, 7]
    assert outlet.units_dropped == 6
    assert asked == [1]


async def test_previews_go_to_the_ring_and_only_the_newest_notice_waits(tmp_path: Path) -> None:
    ring = FrameRingWriter.create(tmp_path / "camera-preview", 8, 6, "RGB888")
    outlet = Outlet(asyncio.get_running_loop(), ring)
    for i in range(3):
        outlet.preview(np.full((6, 8, 3), i, np.uint8), 10.0 + i)
    batch = outlet.take()
    assert batch.preview is not None and batch.preview.seq == 3 and batch.preview.capture_ts == 12.0
    with FrameRingReader.open(tmp_path / "camera-preview") as reader:
        frame = reader.read(3)
        assert frame is not None and (frame.pixels == 2).all() and frame.capture_ts == 12.0
    # A wrong-sized preview is refused and remembered, without an exception into the backend.
    outlet.preview(np.zeros((2, 2, 3), np.uint8), 13.0)
    assert outlet.ring_error is not None
    ring.close()


async def test_fault_is_reported_once_and_nothing_passes_after_close(tmp_path: Path) -> None:
    ring = FrameRingWriter.create(tmp_path / "ring", 8, 6, "RGB888")
    outlet = Outlet(asyncio.get_running_loop(), ring)
    outlet.fault("first")
    outlet.fault("second")
    await outlet.wait(1)
    assert outlet.take().fault == "first"
    outlet.close()
    outlet.access_unit(au(0, True))
    outlet.preview(np.zeros((6, 8, 3), np.uint8), 1.0)
    assert outlet.take().units == []
    assert ring.last_seq == 0  # a backend thread that outlives its run cannot write into the ring
    ring.close()
