"""From the backend's threads to the event loop: bounded, coalesced, and safe after a restart.

One `Outlet` per run of a backend. Backend threads call it (it is the backend's FrameSink);
the daemon's publishing task takes what it holds with `take()` after `wait()`.

- Access units queue up to `max_units`. Past that the publisher is not keeping up (a broker
  pushing back, a loop stalled): the queue is emptied, the backend asked for an IDR, and
  access units are dropped until that IDR, because a P-frame after a gap would decode to
  garbage. Nothing grows without bound, and the stream stays decodable.
- Preview frames go into the shared-memory ring at once, in the calling thread (a memcpy);
  only the newest frame's notice waits for the loop, older notices are superseded.
- The loop is woken with one call_soon_threadsafe per batch, not per item.
- After `close()` every call is ignored, so a backend thread that outlives its run (a stuck
  driver) cannot write into the ring or publish behind the back of the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from appliance.bus.framering import FrameRingWriter
from appliance.camera.base import AccessUnit
from appliance.errors import StateError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PreviewNotice:
    seq: int
    capture_ts: float


@dataclass
class Batch:
    units: list[AccessUnit] = field(default_factory=list)
    preview: PreviewNotice | None = None
    fault: str | None = None


class Outlet:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ring: FrameRingWriter | None,
        *,
        max_units: int = 60,
        request_keyframe: Callable[[], object] | None = None,
    ) -> None:
        self._loop = loop
        self._ring = ring
        self._max_units = max_units
        self.request_keyframe = request_keyframe
        self._lock = threading.Lock()
        self._units: list[AccessUnit] = []
        self._preview: PreviewNotice | None = None
        self._fault: str | None = None
        self._wake_pending = False
        self._event = asyncio.Event()
        self._closed = False
        self._skip_to_idr = False
        self.units_in = 0
        self.units_dropped = 0
        self.bytes_in = 0
        self.previews = 0
        self.last_unit_at = time.monotonic()
        self.ring_error: str | None = None

    # --- backend threads --------------------------------------------------------------------

    def access_unit(self, au: AccessUnit) -> None:
        ask_idr = False
        with self._lock:
            if self._closed:
                return
            self.last_unit_at = time.monotonic()
            if len(self._units) >= self._max_units:
                self.units_dropped += len(self._units)
                self._units.clear()
                if not self._skip_to_idr:
                    log.warning("publishing lags: dropped %d access units, awaiting an IDR", self._max_units)
                self._skip_to_idr = ask_idr = True
            if self._skip_to_idr and not au.keyframe:
                self.units_dropped += 1
            else:
                self._skip_to_idr = False
                self._units.append(au)
                self.units_in += 1
                self.bytes_in += len(au.data)
                self._wake_locked()
        if ask_idr and self.request_keyframe is not None:
            self.request_keyframe()

    def preview(self, image: npt.NDArray[np.uint8], capture_ts: float) -> None:
        with self._lock:
            if self._closed or self._ring is None:
                return
            try:
                seq = self._ring.write(image, capture_ts)
            except (ValueError, StateError) as exc:
                # A wrong-sized preview is a bug in the backend, a closed ring a shutdown race:
                # either way the H.264 stream matters more, so say it once and carry on.
                if self.ring_error is None:
                    log.error("preview ring: %s", exc)
                self.ring_error = str(exc)
                return
            self.previews += 1
            self._preview = PreviewNotice(seq, capture_ts)
            self._wake_locked()

    def attach_ring(self, ring: FrameRingWriter) -> None:
        """A preview ring made after this run began (it could not be created before)."""
        with self._lock:
            if not self._closed and self._ring is None:
                self._ring = ring

    def streaming_started(self) -> None:
        """The backend's start returned: silence counts from now, not from before the start."""
        with self._lock:
            self.last_unit_at = max(self.last_unit_at, time.monotonic())

    def fault(self, reason: str) -> None:
        with self._lock:
            if self._closed or self._fault is not None:
                return
            self._fault = reason
            self._wake_locked()

    def _wake_locked(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon is exiting
                self._loop.call_soon_threadsafe(self._event.set)

    # --- the event loop ---------------------------------------------------------------------

    async def wait(self, timeout: float) -> None:
        """Until there is something to take, or timeout seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()

    def take(self) -> Batch:
        self._event.clear()
        with self._lock:
            # Cleared under the lock before taking: an item added after this is sure to wake us.
            self._wake_pending = False
            batch = Batch(self._units, self._preview, self._fault)
            self._units = []
            self._preview = None
        return batch

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._units = []
            self._preview = None

    @property
    def closed(self) -> bool:
        return self._closed
