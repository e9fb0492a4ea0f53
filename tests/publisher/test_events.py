"""Results and alerts to viewers: once each, in any arrival order, resumed from the real store."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from appliance.bus.topics import EventsPage, EventsSince
from appliance.publisher.channels import Event
from appliance.publisher.events import (
    EventLog,
    Seen,
    ViewerCursor,
    from_alert,
    from_record,
    from_result,
    pages,
)
from appliance.screening.events import Draft, EventStore

_wall = itertools.count(1_718_000_000)


def draft(result: str = "normal", estimate: float = 36.6) -> Draft:
    t = float(next(_wall))
    return Draft(
        wall_ts=t,
        start=t - 1,
        end=t,
        result=result,  # type: ignore[arg-type]
        estimate_c=estimate,
        confidence=0.9,
        threshold_c=38.0,
    )


def ev(seq: int, topic: str = "screening.result") -> Event:
    return Event(seq=seq, topic=topic, live=True, wall_ts=1.0, result="normal")  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore.open(tmp_path / "events.db", boot_id="boot")


def test_seen_takes_each_event_once_whatever_the_order() -> None:
    seen = Seen()
    # A burst after an outage: result 5, result 6, then the alert of 5 (two subscriptions).
    assert seen.add(ev(5))
    assert seen.add(ev(6))
    assert seen.add(ev(5, "alert.fever"))
    assert not seen.add(ev(5))
    assert not seen.add(ev(5, "alert.fever"))
    assert seen.newest == 6


def test_seen_stays_small_and_old_events_stay_duplicates() -> None:
    seen = Seen(limit=100)
    for seq in range(1, 1001):
        assert seen.add(ev(seq))
    assert len(seen.keys) <= 100
    assert not seen.add(ev(3))
    assert seen.add(ev(1001))


def test_seen_upto_counts_everything_at_or_below() -> None:
    seen = Seen.upto(10)
    assert not seen.add(ev(10, "alert.fever"))
    assert seen.add(ev(11))


def test_event_log_keeps_history_and_the_first_ack() -> None:
    log = EventLog()
    assert log.add(ev(1)) and log.add(ev(2)) and not log.add(ev(2))
    assert [e.seq for e in log.history] == [1, 2]
    assert all(not e.live for e in log.history)  # history is replayed, never an alarm
    assert log.acknowledge(2, "Dana", 5.0)
    assert not log.acknowledge(2, "Sam", 6.0)
    alert = ev(2, "alert.fever")
    annotated = log.annotate(alert, live=False)
    assert annotated.acked_by == "Dana" and not annotated.live
    assert log.annotate(ev(2), live=True).acked_by is None  # results are not acknowledged


def test_a_viewer_cannot_acknowledge_what_it_was_not_sent() -> None:
    cursor = ViewerCursor()
    cursor.take(ev(3))
    cursor.ack(10)
    assert cursor.acked == 3


def test_conversions_keep_the_fields(store: EventStore) -> None:
    appended = store.append(draft("elevated", 38.6))
    assert appended.alert is not None
    result, alert = from_result(appended.result), from_alert(appended.alert)
    assert (result.seq, result.topic, result.result, result.estimate_c) == (
        appended.seq,
        "screening.result",
        "elevated",
        38.6,
    )
    assert (alert.topic, alert.threshold_c, alert.live) == ("alert.fever", 38.0, True)
    page = store.since(0)
    stored = [from_record(r, 38.0) for r in page.events]
    assert [(e.topic, e.live) for e in stored] == [("screening.result", False), ("alert.fever", False)]
    assert stored[1].threshold_c == 38.0 and stored[1].estimate_c == 38.6


async def test_pages_walk_the_real_store_in_order(store: EventStore) -> None:
    for i in range(25):
        store.append(draft("elevated" if i % 5 == 0 else "normal", 38.5 if i % 5 == 0 else 36.5))
    calls: list[EventsSince] = []

    async def fetch(params: EventsSince) -> EventsPage:
        calls.append(params)
        return store.since(params.seq, params.limit)

    got = [e async for e in pages(fetch, 10, 38.0, limit=4)]
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs) and seqs[0] == 11 and seqs[-1] == 25
    # Elevated results come with their alert, the result first.
    assert [e.topic for e in got if e.seq == 16] == ["screening.result", "alert.fever"]
    assert len(calls) == 4  # 15 seqs, 4 per page
    assert [e async for e in pages(fetch, 25, 38.0)] == []


async def test_a_resuming_viewer_gets_the_missed_events_once(store: EventStore) -> None:
    """Live events arriving during the catch-up and also in its pages are sent once."""
    for _ in range(6):
        store.append(draft())

    async def fetch(params: EventsSince) -> EventsPage:
        return store.since(params.seq, params.limit)

    cursor = ViewerCursor()
    cursor.start_after(2)
    sent = [e.seq async for e in pages(fetch, 2, 38.0) if cursor.take(e)]
    live = [from_result(store.append(draft()).result) for _ in range(2)]
    sent += [e.seq for e in [ev(5), ev(6), *live] if cursor.take(e)]  # 5, 6 again from the bus backlog
    assert sent == [3, 4, 5, 6, 7, 8]
