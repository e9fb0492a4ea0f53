"""A track that hands aiortc pre-encoded av.Packets from a queue its feed fills on the loop:
the base of the passthrough video track and the Opus audio track.

Two ways out. aiortc's senders pull: `recv()` (through `_next_packet`) waits for the queue.
A sender that knows this track can instead wait in `push()`: while it waits, a packet the feed
offers goes straight to the sender's sink, synchronously, in the feed's own call, so fanning a
frame out to N viewers is one pass on the loop rather than N task wake-ups (what
aiortc_sender_loop does for the camera's senders). A sink that cannot finish a packet at once
(a TURN relay to await, a failure) calls `release()`: later packets queue as usual until the
sender comes back, so a stalled sender still meets the queue's bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

Sink = Callable[[av.Packet], None]


class PacketTrack(MediaStreamTrack):
    def __init__(self, maxlen: int | None = None) -> None:
        super().__init__()
        self._queue: deque[av.Packet] = deque(maxlen=maxlen)
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Sink | None = None
        self.sent = 0

    async def _next_packet(self) -> av.Packet:
        """The next queued packet, waiting for one; MediaStreamError once the track stopped."""
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            await self._wait()
        self.sent += 1
        return self._queue.popleft()

    async def push(self, sink: Sink) -> av.Packet | None:
        """Wait as `recv()` does, with packets offered meanwhile going to `sink` as they come.

        Returns a queued packet (one was waiting already), or None once the sink released the
        track; MediaStreamError once the track stopped. The sink must not raise (one that does
        is released and the error logged: the feed's other tracks still get the packet)."""
        if self._queue:
            self.sent += 1
            return self._queue.popleft()
        if self.readyState != "live":
            raise MediaStreamError
        self._sink = sink
        try:
            await self._wait()
        finally:
            self._sink = None
        if self._queue:  # queued after a release, before the sender ran again
            self.sent += 1
            return self._queue.popleft()
        if self.readyState != "live":
            raise MediaStreamError
        return None

    def release(self) -> None:
        """From the sink: stop pushing; the sender's push() returns and later packets queue."""
        self._sink = None
        self._wake()

    def _put(self, packet: av.Packet) -> None:
        """A packet for the sender: into its sink if it waits in push(), else onto the queue
        (the subclasses' offer() decides which packets get here, and trims the queue)."""
        sink = self._sink
        if sink is None:
            self._queue.append(packet)
            self._wake()
            return
        self.sent += 1
        try:
            sink(packet)
        except Exception:
            log.exception("a %s sender's sink failed; it goes back to pulling", self.kind)
            self.release()

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def stop(self) -> None:
        super().stop()
        self._queue.clear()
        self._sink = None
        self._wake()  # a recv() or push() waiting ends with MediaStreamError
