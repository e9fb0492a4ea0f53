"""When to ask the camera for a keyframe: coalesced and rate-limited. Pure, no I/O.

Every viewer that needs a picture asks: a track starting (a viewer joining), a PLI or FIR from
a browser, a gap in camera.h264 seqs, a viewer whose queue overflowed. Browsers send a PLI
every few hundred milliseconds while they cannot decode, and with several viewers those
requests arrive together, so each one going to the camera would turn the stream into a run of
IDRs (each several times the size of a P-frame) exactly when the network is struggling.

The policy:
- a request while one is in flight (asked, no IDR seen since, not yet timed out) is absorbed:
  the IDR on its way serves everyone;
- at most one request per `min_interval`; a request inside the interval is remembered and
  sent when the interval ends, unless an IDR passes first (then it is already served);
- an IDR from the camera's own cadence serves every pending request as well.

`KeyframeRequests` only decides; its owner calls `want()` and `keyframe_seen()` and sends the
bus request when told to, and calls `due()` from a timer at `next_deadline()`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KeyframeRequests:
    min_interval: float = 0.5
    # A request the camera never answered (camera restarting, bus down) is retried after this.
    answer_timeout: float = 1.0
    last_sent: float | None = None
    pending: bool = False
    in_flight: bool = False
    sent: int = 0
    absorbed: int = 0

    def want(self, now: float) -> bool:
        """Someone needs an IDR; True if a request should go to the camera now."""
        if self.in_flight and self.last_sent is not None and now - self.last_sent < self.answer_timeout:
            self.absorbed += 1
            return False
        if self.last_sent is not None and now - self.last_sent < self.min_interval:
            self.pending = True
            self.absorbed += 1
            return False
        return self._send(now)

    def due(self, now: float, waiting: bool = True) -> bool:
        """Called from a timer at `next_deadline()`: True if a request should go now.

        `waiting`: whether anyone still lacks a picture; a request the camera never answered
        is sent again only then.
        """
        if self.pending:
            if self.last_sent is not None and now - self.last_sent < self.min_interval:
                return False
            return self._send(now)
        if self.in_flight and self.last_sent is not None and now - self.last_sent >= self.answer_timeout:
            if waiting:
                return self._send(now)
            self.in_flight = False
        return False

    def next_deadline(self) -> float | None:
        """When `due` may next return True, or None when nothing waits."""
        if self.last_sent is None:
            return None
        if self.pending:
            return self.last_sent + self.min_interval
        if self.in_flight:
            return self.last_sent + self.answer_timeout
        return None

    def keyframe_seen(self) -> None:
        """An IDR passed: it serves every request made so far."""
        self.pending = False
        self.in_flight = False

    def _send(self, now: float) -> bool:
        self.last_sent = now
        self.pending = False
        self.in_flight = True
        self.sent += 1
        return True
