"""A track that hands aiortc pre-encoded av.Packets from a queue its feed fills on the loop:
the base of the passthrough video track and the Opus audio track."""

from __future__ import annotations

import asyncio
from collections import deque

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


class PacketTrack(MediaStreamTrack):
    def __init__(self, maxlen: int | None = None) -> None:
        super().__init__()
        self._queue: deque[av.Packet] = deque(maxlen=maxlen)
        self._waiter: asyncio.Future[None] | None = None
        self.sent = 0

    async def _next_packet(self) -> av.Packet:
        """The next queued packet, waiting for one; MediaStreamError once the track stopped."""
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.sent += 1
        return self._queue.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def stop(self) -> None:
        super().stop()
        self._queue.clear()
        self._wake()  # a recv() waiting ends with MediaStreamError
