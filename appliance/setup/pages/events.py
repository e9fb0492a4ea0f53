"""Events: stored screening results and alerts, filtered, as a table, a chart and CSV.

Read through appliance.screening.events (EventStore.open_readonly: a WAL reader, safe while
the screening daemon writes) in a worker thread. Filters: result, a date range (local
days, inclusive), alerts only. The table shows the newest TABLE_ROWS; the chart and the CSV
take every matching event.
"""

from __future__ import annotations

import asyncio
import datetime
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from appliance.config import load_config
from appliance.errors import ApplianceError, StateError
from appliance.screening.units import format_temperature
from appliance.setup.app import ctx_of, render
from appliance.setup.chart import Point, chart_svg
from appliance.setup.html import Markup, h, join, notice

if TYPE_CHECKING:
    # The store (sqlite3) and the CSV writer load when the page is first asked for, not with
    # the setup daemon, which runs all day (~1.6 MB of RSS).
    from appliance.screening.events import StoredEvent

TABLE_ROWS = 200
RESULTS = ("normal", "elevated", "retry")


@dataclass(frozen=True, slots=True)
class Filters:
    result: str | None = None
    since: datetime.date | None = None
    until: datetime.date | None = None
    alerts_only: bool = False

    def matches(self, ev: StoredEvent) -> bool:
        if self.alerts_only and ev.topic != "alert.fever":
            return False
        if not self.alerts_only and ev.topic != "screening.result":
            return False  # a result and its alert share a seq: one row per person
        if self.result is not None and ev.result.result != self.result:
            return False
        day = datetime.datetime.fromtimestamp(ev.wall_ts).date()
        if self.since is not None and day < self.since:
            return False
        return self.until is None or day <= self.until

    def query(self) -> str:
        parts = []
        if self.result:
            parts.append(f"result={self.result}")
        if self.since:
            parts.append(f"since={self.since.isoformat()}")
        if self.until:
            parts.append(f"until={self.until.isoformat()}")
        if self.alerts_only:
            parts.append("alerts=1")
        return "&".join(parts)


def parse_filters(query: Mapping[str, str]) -> tuple[Filters, list[str]]:
    problems = []
    result = query.get("result") or None
    if result is not None and result not in RESULTS:
        problems.append(f"unknown result {result!r}")
        result = None

    def day(key: str) -> datetime.date | None:
        text = (query.get(key) or "").strip()
        if not text:
            return None
        try:
            return datetime.date.fromisoformat(text)
        except ValueError:
            problems.append(f"{key}: not a date (YYYY-MM-DD)")
            return None

    filters = Filters(result, day("since"), day("until"), query.get("alerts") == "1")
    return filters, problems


def _events(state_dir: str, filters: Filters) -> list[StoredEvent]:
    from appliance.screening.events import EventStore, path_in

    try:
        store = EventStore.open_readonly(path_in(state_dir))
    except StateError as exc:
        if "no events database" in str(exc):
            return []
        raise
    with store:
        return [ev for ev in store.rows(0) if filters.matches(ev)]


def _filter_form(filters: Filters) -> Markup:
    options = join(
        h(
            '<option value="{v}"{s}>{t}</option>',
            v=v,
            t=t,
            s=Markup(" selected" if (filters.result or "") == v else ""),
        )
        for v, t in (("", "all results"), *((r, r) for r in RESULTS))
    )
    return h(
        '<form method="get" action="/events" class="filters">'
        '<label>Result <select name="result" id="filter-result">{options}</select></label>'
        '<label>From <input type="date" name="since" value="{since}"></label>'
        '<label>To <input type="date" name="until" value="{until}"></label>'
        '<label><input type="checkbox" name="alerts" value="1"{alerts}> fever alerts only</label>'
        '<button type="submit" id="apply-filters">Show</button></form>',
        options=options,
        since=filters.since.isoformat() if filters.since else "",
        until=filters.until.isoformat() if filters.until else "",
        alerts=Markup(" checked" if filters.alerts_only else ""),
    )


async def events_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    filters, problems = parse_filters(request.query)
    try:
        config = load_config(ctx.config_file)
    except ApplianceError:
        config = ctx.config
    unit = config.screening.units
    try:
        events = await asyncio.to_thread(_events, str(ctx.config.paths.state_dir), filters)
    except StateError as exc:
        body = h("{f}{n}", f=_filter_form(filters), n=notice("error", f"The events cannot be read: {exc}"))
        return render(request, "Events", body, current="/events", status=500)
    points = [Point(ev.wall_ts, ev.result.estimate_c, ev.result.result) for ev in events]
    rows = join(
        h(
            "<tr><td>{seq}</td><td>{when}</td><td>{result}</td><td>{est}</td><td>{conf}</td><td>{dist}</td></tr>",
            seq=ev.seq,
            when=datetime.datetime.fromtimestamp(ev.wall_ts).strftime("%Y-%m-%d %H:%M:%S"),
            result=ev.result.result,
            est=format_temperature(ev.result.estimate_c, unit) if ev.result.estimate_c is not None else "",
            conf=f"{ev.result.confidence:.2f}",
            dist=f"{ev.result.distance_m:.2f} m" if ev.result.distance_m is not None else "",
        )
        for ev in reversed(events[-TABLE_ROWS:])
    )
    query = filters.query()
    body = h(
        "{problems}{form}<p>{n} events match. "
        '<a href="/events.csv{q}" id="export-csv" download>Export them as CSV</a></p>'
        "<figure>{chart}<figcaption>Readings over time (°{unit}); dashed: the fever threshold. "
        "Circle: normal, triangle: elevated, cross: retry.</figcaption></figure>"
        '<table id="events"><thead><tr><th>seq</th><th>time</th><th>result</th><th>reading</th>'
        "<th>confidence</th><th>distance</th></tr></thead><tbody>{rows}</tbody></table>",
        problems=join(notice("error", p) for p in problems),
        form=_filter_form(filters),
        n=len(events),
        q=f"?{query}" if query else "",
        chart=Markup(chart_svg(points, config.screening.threshold_c, unit)),
        unit=unit,
        rows=rows,
    )
    return render(request, "Events", body, current="/events")


async def export(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    filters, problems = parse_filters(request.query)
    if problems:
        raise web.HTTPBadRequest(text="; ".join(problems) + "\n")
    try:
        events = await asyncio.to_thread(_events, str(ctx.config.paths.state_dir), filters)
    except StateError as exc:
        raise web.HTTPInternalServerError(text=f"the events cannot be read: {exc}\n") from None
    from appliance.screening.export import iso_utc, write_csv

    stamp = iso_utc(datetime.datetime.now().timestamp())[:10]
    out = io.StringIO()
    write_csv(events, out)
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="events-{stamp}.csv"'},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/events", events_page)
    app.router.add_get("/events.csv", export)
