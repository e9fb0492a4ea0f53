"""Status: each daemon's health (bus) and unit state (systemd, or its cgroup and heartbeat where
systemd cannot be asked), the sensor, the camera, the room.

Every value sits in an element with data-field="<key>"; the page's WebSocket sends the same
keys (LiveState.status_fields) as they change, and app.js puts them in place.
"""

from __future__ import annotations

from aiohttp import web

from appliance import daemons
from appliance.setup.app import ctx_of, render
from appliance.setup.html import Markup, h, join


def field(fields: dict[str, str], key: str) -> Markup:
    return h('<span data-field="{k}">{v}</span>', k=key, v=fields.get(key, ""))


async def status_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    f = ctx.live.status_fields(bus_connected=ctx.bus.connected)
    systemd = ctx.system.active
    rows = join(
        h(
            "<tr><th scope=row>{name}</th><td>{state}</td><td>{up}</td>{unit}<td>{status}</td></tr>",
            name=name,
            state=field(f, f"daemon.{name}.state"),
            up=field(f, f"daemon.{name}.up"),
            unit=h("<td>{u}</td>", u=field(f, f"daemon.{name}.unit")) if systemd else Markup(""),
            status=field(f, f"daemon.{name}.status"),
        )
        for name in daemons.START_ORDER
    )
    body = h(
        '<section><h3>Daemons</h3><table id="daemons"><thead><tr><th>daemon</th><th>health</th>'
        "<th>up for</th>"
        "{unit_head}<th>status</th></tr></thead><tbody>{rows}</tbody></table>{unit_note}</section>"
        '<section class="cards">'
        "<div><h3>Thermal sensor</h3><p>{ts} {td}</p><p>frames seen: {tf}</p></div>"
        "<div><h3>Screening</h3><p>{ss}</p></div>"
        "<div><h3>Camera</h3><p>{cs} {cd}</p></div>"
        "<div><h3>Room</h3><p>pairing: {ps} {pr}</p><p>room service: {cr}</p><p>viewers: {cv}</p></div>"
        "</section>",
        unit_head=Markup("<th>unit</th>") if systemd else Markup(""),
        # Where the unit states came from (systemd, or the cgroups and heartbeats on a kiosk):
        # a live field, as the source can change while the page is open.
        unit_note=h('<p class="muted">{s}</p>', s=field(f, "units.source"))
        if systemd
        else Markup('<p class="muted">Not running under systemd here: unit states are not shown.</p>'),
        rows=rows,
        ts=field(f, "thermal.state"),
        td=field(f, "thermal.detail"),
        tf=field(f, "thermal.frames"),
        ss=field(f, "screening.state"),
        cs=field(f, "camera.state"),
        cd=field(f, "camera.detail"),
        ps=field(f, "pairing.state"),
        pr=field(f, "pairing.room"),
        cr=field(f, "call.room"),
        cv=field(f, "call.viewers"),
    )
    return render(request, "Status", body, current="/status", live=True)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/status", status_page)
