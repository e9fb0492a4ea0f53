"""Small helpers shared by the publisher's tests."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from appliance.bus.client import BusClient
from appliance.bus.topics import EventsPage, EventsSince, Health
from appliance.camera.base import StreamSettings
from appliance.camera.transform import Orientation
from appliance.screening.events import Draft, EventStore


def camera_settings(width: int = 160, height: int = 120, fps: int = 15) -> StreamSettings:
    """Small frames, and keyframes only when asked for (or every 10 s), so a test sees which
    IDRs its requests caused."""
    return StreamSettings(
        width=width,
        height=height,
        fps=fps,
        bitrate=200_000,
        keyframe_interval_s=10.0,
        orientation=Orientation(),
        preview_width=80,
        preview_height=60,
    )


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Screening:
    """The screening daemon's side that the publisher talks to: a real EventStore behind
    screening.events_since, results and alerts published as the daemon publishes them, and its
    retained health."""

    def __init__(self, bus: BusClient, store: EventStore) -> None:
        self.bus = bus
        self.store = store
        self.requests = 0
        bus.serve("screening.events_since", self._since)
        bus.publish_nowait(
            "health.screening", Health(daemon="screening", state="ready", pid=os.getpid(), started_ts=0.0)
        )

    async def _since(self, params: EventsSince) -> EventsPage:
        self.requests += 1
        return self.store.since(params.seq, params.limit)

    def record(self, result: str = "normal", estimate: float = 36.6, *, publish: bool = True) -> int:
        """Store a result (and its alert if elevated); publish them unless told not to."""
        now = time.time()
        appended = self.store.append(
            Draft(
                wall_ts=now,
                start=now - 1,
                end=now,
                result=result,  # type: ignore[arg-type]
                estimate_c=estimate,
                confidence=0.9,
                threshold_c=38.0,
            )
        )
        if publish:
            self.bus.publish_nowait("screening.result", appended.result)
            if appended.alert is not None:
                self.bus.publish_nowait("alert.fever", appended.alert)
        return appended.seq


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
