"""Faults in one part of a call that must stay there: one viewer's getStats failing or hanging,
the screening daemon away while a viewer resumes its events. Fakes as in
test_call_lifecycle.py, every step driven explicitly."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from appliance.bus.topics import CallState, EventsPage, EventsSince, ViewerStats
from appliance.errors import RequestTimeout
from appliance.publisher import call as call_module
from appliance.publisher import channels
from appliance.publisher.call import Call

from .test_call_lifecycle import FakeBus, call, connected_viewer, event, settle
from .test_stats import report as stats_report

__all__ = ["call"]  # the fixture, used by name

NOW = datetime.datetime.now(datetime.UTC)


def report(rtt: float) -> dict[str, object]:
    return stats_report(1000, rtt=rtt)


def last_state(call: Call) -> dict[str, ViewerStats]:
    bus: FakeBus = call.bus  # type: ignore[assignment]
    state = [m for t, m in bus.published if t == "call.state"][-1]
    assert isinstance(state, CallState)
    return {v.viewer_id: v for v in state.viewers}


async def test_a_viewer_whose_stats_fail_is_shown_without_figures_not_stale_ones(call: Call) -> None:
    """call.state must not go on showing a viewer's last good round trip once its stats cannot
    be read (its transport is going away): the kiosk's operator would see a healthy call. And a
    report that cannot be read must not cost the other viewers their figures."""
    dana = await connected_viewer(call, "v1")
    sam = await connected_viewer(call, "v2")
    outcome: dict[str, Any] = {"v1": report(0.010), "v2": report(0.020)}

    async def stats_of(viewer_id: str) -> dict[str, object]:
        got = outcome[viewer_id]
        if isinstance(got, BaseException):
            raise got
        return got  # type: ignore[no-any-return]

    dana.stats = lambda: stats_of("v1")  # type: ignore[method-assign]
    sam.stats = lambda: stats_of("v2")  # type: ignore[method-assign]
    await call.tick()
    assert last_state(call)["v1"].rtt_ms == 10.0 and last_state(call)["v2"].rtt_ms == 20.0

    outcome["v1"] = RuntimeError("the transport is closed")
    outcome["v2"] = report(0.030)
    await call.tick()
    assert last_state(call)["v1"] == ViewerStats(viewer_id="v1")
    assert last_state(call)["v2"].rtt_ms == 30.0

    # A report the figures cannot be read from (None where a number belongs).
    broken = report(0.010)
    broken["r"].jitter = None  # type: ignore[attr-defined]
    outcome["v1"] = broken
    outcome["v2"] = report(0.040)
    await call.tick()
    assert last_state(call)["v1"] == ViewerStats(viewer_id="v1")
    assert last_state(call)["v2"].rtt_ms == 40.0


async def test_a_viewer_whose_stats_hang_does_not_stop_call_state(
    call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tick() also releases a silent talker's floor and refreshes the screening state: one
    getStats that never returns must not hold all of that up."""
    monkeypatch.setattr(call_module, "STATS_TIMEOUT_S", 0.05)
    dana = await connected_viewer(call, "v1")
    sam = await connected_viewer(call, "v2")
    never: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()

    async def hang() -> dict[str, object]:
        return await never

    async def fine() -> dict[str, object]:
        return report(0.020)

    dana.stats = hang  # type: ignore[method-assign]
    sam.stats = fine  # type: ignore[method-assign]
    async with asyncio.timeout(5):
        await call.tick()
    assert last_state(call)["v1"] == ViewerStats(viewer_id="v1")
    assert last_state(call)["v2"].rtt_ms == 20.0


@pytest.mark.parametrize("failure", [RequestTimeout("no reply"), ValueError("a reply it cannot read")])
async def test_a_viewer_resuming_while_screening_is_away_gets_what_the_kiosk_holds_once(
    call: Call, failure: Exception
) -> None:
    """The viewer acknowledged seq 11 in its last call; 12 and 13 happened since and the
    publisher has them. With screening.events_since failing, the viewer must still get 12 and
    13 (from the publisher's own history), once, then live events, and keep its call."""
    bus: FakeBus = call.bus  # type: ignore[assignment]
    for seq in (10, 11, 12, 13):
        call.on_event(event(seq))

    async def away(params: EventsSince) -> EventsPage:
        raise failure

    bus.handler = away
    peer = await connected_viewer(call, "v1")
    peer.receive(channels.Join(name="Dana", last_seq=11))
    await settle()
    call.on_event(event(13))  # a duplicate from the bus
    call.on_event(event(14))
    await settle()
    assert "v1" in call.viewers, "the viewer's call was dropped"
    got = [(e.seq, e.live) for e in peer.events()]
    assert got == [(12, False), (13, False), (14, True)]
    peer.receive(channels.Ack(seq=14))
    await settle()
    assert call.viewers["v1"].cursor.acked == 14


async def test_a_resume_that_fails_half_way_loses_nothing_and_repeats_nothing(call: Call) -> None:
    """The first page arrives, the second request times out: what the first page held is not
    sent again, and what the publisher holds beyond it still arrives."""
    from .test_call_lifecycle import record

    bus: FakeBus = call.bus  # type: ignore[assignment]
    for seq in (12, 13):
        call.on_event(event(seq))

    async def half(params: EventsSince) -> EventsPage:
        if params.limit == 1:
            return EventsPage(events=[], last_seq=13)
        if params.seq == 10:
            return EventsPage(events=[record(11, 1.0), record(12, 1.0)], last_seq=13)
        raise RequestTimeout("no reply")

    bus.handler = half
    monkey_page = call_module.pages

    async def small_pages(fetch: Any, after: int, threshold_c: float) -> Any:
        async for e in monkey_page(fetch, after, threshold_c, limit=2):
            yield e

    call_module.pages = small_pages  # type: ignore[assignment]
    try:
        peer = await connected_viewer(call, "v1")
        peer.receive(channels.Join(name="Dana", last_seq=10))
        await settle()
    finally:
        call_module.pages = monkey_page
    got = [(e.seq, e.topic) for e in peer.events()]
    assert got == [(11, "screening.result"), (12, "screening.result"), (13, "screening.result")]
