"""Screening results and fever alerts for viewers: nothing missed, nothing twice.

Events carry the durable seq the screening daemon gave them in events.db; an elevated result
is two events with the same seq (screening.result, then alert.fever); (seq, topic) names an
event. `Seen` records which ones a stream has had, whatever order they came in:

- `EventLog` (one per publisher): the events seen, a short history for viewers who join
  fresh, and who acknowledged which alert. It learns events from the bus (live) and from
  `screening.events_since` (catch-up after the publisher's bus connection was cut, when
  events published meanwhile never reached it).
- `ViewerCursor` (one per viewer): what it was sent and the seq it last acknowledged. A viewer
  joining with the seq it acknowledged in an earlier call gets everything after it from
  events_since, then live events; anything it was already sent is dropped, so a live event
  that also came in the catch-up page is sent once.

`pages()` is the one piece of I/O: it walks screening.events_since page by page.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

from appliance.bus.topics import EventRecord, EventsPage, EventsSince, FeverAlert, ScreeningResult
from appliance.publisher.channels import Event

HISTORY = 50  # events a fresh viewer gets as history
PAGE = 200
_ACKS_KEPT = 500


@dataclass
class Seen:
    """Which events a stream has had: every seq up to `floor`, and the (seq, topic) keys above it.

    Not a single high-water mark: results and alerts come through two bus subscriptions, and
    after an outage a burst can hold result N, alert N and result N+1, which two consumers may
    take in either order. A set makes "once" hold whatever the order; the floor keeps it small.
    """

    floor: int = 0
    keys: set[tuple[int, str]] = field(default_factory=set)
    limit: int = 1024

    @classmethod
    def upto(cls, seq: int) -> Seen:
        return cls(floor=seq)

    def add(self, event: Event) -> bool:
        """True (and recorded) if the event was not seen before."""
        key = (event.seq, event.topic)
        if event.seq <= self.floor or key in self.keys:
            return False
        self.keys.add(key)
        if len(self.keys) > self.limit:
            # Forget the older half: an event that old arriving now is a duplicate anyway.
            seqs = sorted(seq for seq, _ in self.keys)
            self.floor = seqs[len(seqs) // 2]
            self.keys = {k for k in self.keys if k[0] > self.floor}
        return True

    @property
    def newest(self) -> int:
        return max((seq for seq, _ in self.keys), default=self.floor)

    def copy(self) -> Seen:
        return Seen(self.floor, set(self.keys), self.limit)


def from_result(msg: ScreeningResult, *, live: bool = True) -> Event:
    return Event(
        seq=msg.seq,
        topic="screening.result",
        live=live,
        wall_ts=msg.wall_ts,
        result=msg.result,
        estimate_c=msg.estimate_c,
        confidence=msg.confidence,
        distance_m=msg.distance_m,
    )


def from_alert(msg: FeverAlert) -> Event:
    return Event(
        seq=msg.seq,
        topic="alert.fever",
        live=True,
        wall_ts=msg.wall_ts,
        result="elevated",
        estimate_c=msg.estimate_c,
        confidence=msg.confidence,
        threshold_c=msg.threshold_c,
    )


def from_record(record: EventRecord, threshold_c: float) -> Event:
    """A stored event. The store keeps an alert as its result, without the threshold it was
    judged against; the configured threshold stands in (it changes only by config)."""
    event = from_result(record.result, live=False)
    if record.topic == "alert.fever":
        event = msgspec.structs.replace(event, topic="alert.fever", threshold_c=threshold_c)
    return event


@dataclass
class EventLog:
    history: deque[Event] = field(default_factory=lambda: deque(maxlen=HISTORY))
    seen: Seen = field(default_factory=Seen)
    acks: OrderedDict[int, tuple[str, float]] = field(default_factory=OrderedDict)
    # The seqs of the last fever alerts seen: an acknowledgement must name one of them, and
    # `seen` forgets which seqs were alerts once it has moved its floor past them.
    alerts: OrderedDict[int, None] = field(default_factory=OrderedDict)

    def add(self, event: Event) -> bool:
        """True if the event is new: pass it on to the viewers."""
        if not self.seen.add(event):
            return False
        self.history.append(msgspec.structs.replace(event, live=False))
        if event.topic == "alert.fever":
            self.alerts[event.seq] = None
            while len(self.alerts) > _ACKS_KEPT:
                self.alerts.popitem(last=False)
        return True

    def is_alert(self, seq: int) -> bool:
        return seq in self.alerts

    @property
    def newest_seq(self) -> int:
        return self.seen.newest

    def acknowledge(self, seq: int, by: str, wall_ts: float) -> bool:
        """Record the first acknowledgement of alert seq; False if it was already acknowledged."""
        if seq in self.acks:
            return False
        self.acks[seq] = (by, wall_ts)
        while len(self.acks) > _ACKS_KEPT:
            self.acks.popitem(last=False)
        return True

    def annotate(self, event: Event, *, live: bool) -> Event:
        """The event as one viewer gets it: live or replayed, with who acknowledged it."""
        by = self.acks.get(event.seq) if event.topic == "alert.fever" else None
        if event.live == live and by is None:
            return event
        return msgspec.structs.replace(event, live=live, acked_by=by[0] if by else None)


@dataclass
class ViewerCursor:
    sent: Seen = field(default_factory=Seen)
    acked: int = 0

    def start_after(self, seq: int) -> None:
        self.sent = Seen.upto(seq)
        self.acked = seq

    def take(self, event: Event) -> bool:
        """True if this viewer should get the event now (it moves the cursor)."""
        return self.sent.add(event)

    def ack(self, seq: int) -> None:
        # A viewer cannot acknowledge what it was never sent.
        self.acked = max(self.acked, min(seq, self.sent.newest))


Fetch = Callable[[EventsSince], Awaitable[EventsPage]]


async def pages(fetch: Fetch, after: int, threshold_c: float, *, limit: int = PAGE) -> AsyncIterator[Event]:
    """Every stored event with a seq above `after`, oldest first, one page at a time."""
    seq = after
    while True:
        page = await fetch(EventsSince(seq=seq, limit=limit))
        if not page.events:
            return
        for record in page.events:
            yield from_record(record, threshold_c)
        seq = max(r.seq for r in page.events)
        if seq >= page.last_seq:
            return
