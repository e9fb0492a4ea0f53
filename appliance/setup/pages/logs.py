"""Logs: the journal of the appliance's units under systemd, else the log files, and always
this daemon's own recent lines."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from appliance import daemons
from appliance.config import load_config
from appliance.errors import ApplianceError
from appliance.setup import logs as sources
from appliance.setup.app import ctx_of, render
from appliance.setup.html import Markup, h, join, notice

log = logging.getLogger(__name__)

LEVELS = {"all": 7, "info": 6, "warning": 4, "error": 3}


def _table(lines: list[sources.LogLine]) -> Markup:
    if not lines:
        return Markup('<p class="muted">No lines.</p>')
    rows = join(
        h(
            '<tr class="p{p}"><td>{when}</td><td>{src}</td><td><pre>{text}</pre></td></tr>',
            p=line.priority,
            when=line.when,
            src=line.source,
            text=line.text,
        )
        for line in lines
    )
    return h(
        '<table class="logs"><thead><tr><th>time</th><th>daemon</th><th>message</th></tr></thead>'
        "<tbody>{r}</tbody></table>",
        r=rows,
    )


async def logs_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    daemon = request.query.get("daemon") or None
    if daemon is not None and daemon not in daemons.START_ORDER:
        daemon = None
    level = request.query.get("level", "info")
    max_priority = LEVELS.get(level, 6)
    try:
        log_dir = load_config(ctx.config_file).setup.log_dir
    except ApplianceError:
        log_dir = ctx.config.setup.log_dir
    problem = None
    try:
        if ctx.system.active and sources.journal_available():
            source = "the systemd journal (this boot)"
            lines = await asyncio.to_thread(sources.read_journal, daemon)
        elif log_dir is not None:
            source = f"log files in {log_dir}"
            lines = await asyncio.to_thread(sources.read_files, log_dir, daemon)
        else:
            source = None
            lines = []
    except OSError as exc:
        # A journal file being rotated or damaged: the page still shows this daemon's own lines,
        # which are what a technician needs most when the rest of the logging is in trouble.
        log.warning("cannot read the logs: %s", exc)
        problem = notice(
            "error", f"Cannot read the logs ({exc.strerror or exc}); only this daemon's own lines."
        )
        source, lines = None, []
    lines = [line for line in lines if line.priority <= max_priority]
    own = [line for line in ctx.ring_log.records if line.priority <= max_priority]
    daemon_options = join(
        h(
            '<option value="{v}"{s}>{t}</option>',
            v=v,
            t=t,
            s=Markup(" selected" if (daemon or "") == v else ""),
        )
        for v, t in (("", "all daemons"), *((d, d) for d in daemons.START_ORDER))
    )
    level_options = join(
        h('<option value="{v}"{s}>{v}</option>', v=v, s=Markup(" selected" if v == level else ""))
        for v in LEVELS
    )
    body = h(
        '<form method="get" action="/logs" class="filters">'
        '<label>Daemon <select name="daemon">{d}</select></label>'
        '<label>Level <select name="level">{lv}</select></label><button type="submit">Show</button></form>'
        "{where}{table}<h3>This setup daemon</h3>{own}",
        d=daemon_options,
        lv=level_options,
        where=problem
        or (
            h("<p>From {s}.</p>", s=source)
            if source
            else notice(
                "info", "No journal here and no setup.log_dir configured: only this daemon's own lines."
            )
        ),
        table=_table(lines) if source else Markup(""),
        own=_table(own),
    )
    return render(request, "Logs", body, current="/logs")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/logs", logs_page)
