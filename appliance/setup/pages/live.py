"""Live view (thermal heatmap with readings and the interrupt mask, a camera snapshot) and
the WebSocket that keeps every page's live fields current.

The socket needs a logged-in session (its cookie) and this page's origin; it sends
{"type": "status", "fields": {...}} on connect and when something changes (at most
STATUS_HZ), {"type": "thermal", ...} frames at most THERMAL_HZ, and closes when the session
ends (logout, expiry, a password change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import WSMsgType, web

from appliance.camera import PREVIEW_RING
from appliance.errors import StateError
from appliance.setup.app import COOKIE, ctx_of, render, same_origin
from appliance.setup.context import Context
from appliance.setup.html import Markup

log = logging.getLogger(__name__)

STATUS_HZ = 4.0
THERMAL_HZ = 5.0
SESSION_CHECK_S = 2.0
MAX_SOCKETS = 16


async def live_page(request: web.Request) -> web.Response:
    body = Markup(
        '<section class="live"><div><h3>Thermal sensor</h3>'
        '<canvas id="heatmap" width="480" height="480" aria-label="thermal heatmap, 8 by 8 pixels"></canvas>'
        '<p>frame <span id="frame-seq">-</span>, sensor body <span id="thermistor">-</span> °C, '
        'age <span id="frame-age">-</span> s. Outlined pixels: the sensor\'s interrupt fired for them.</p>'
        '<table id="readings" class="grid" aria-label="pixel readings in °C"></table></div>'
        "<div><h3>Camera</h3>"
        '<img id="snapshot" src="/snapshot.png" alt="camera snapshot (none yet)" width="320">'
        '<p><button type="button" id="refresh-snapshot">New snapshot</button></p></div></section>'
    )
    return render(request, "Live view", body, current="/live", live=True)


def _snapshot_png(run_dir: str) -> bytes:
    # Imported here, not with the page: these need numpy (~12 MB of RSS), and the setup daemon
    # runs all day while a technician asks for a snapshot now and then.
    from appliance.bus.framering import FrameRingReader, ring_path
    from appliance.screen.frames import to_rgb
    from appliance.setup.png import encode_png

    with FrameRingReader.open(ring_path(PREVIEW_RING, run_dir)) as reader:
        frame = reader.latest()
        if frame is None:
            raise StateError("the camera has not written a frame yet")
        layout = reader.layout
        return encode_png(to_rgb(frame.pixels, layout.fmt, layout.width, layout.height))


async def snapshot(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    try:
        png = await asyncio.to_thread(_snapshot_png, str(ctx.config.paths.run_dir))
    except StateError as exc:
        raise web.HTTPNotFound(text=f"no camera picture: {exc}\n") from None
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})


async def websocket(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    if not same_origin(request) or request.headers.get("Origin") is None:
        raise web.HTTPForbidden(text="cross-origin WebSocket refused\n")
    sockets = ctx.sockets
    if len(sockets) >= MAX_SOCKETS:
        raise web.HTTPServiceUnavailable(text="too many live pages open\n")
    token = request.cookies.get(COOKIE)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
    await ws.prepare(request)
    sockets.add(ws)
    reader = asyncio.get_running_loop().create_task(_drain(ws))
    try:
        await _feed(ctx, ws, token, reader)
    finally:
        sockets.discard(ws)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await ws.close()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    """The page sends nothing we act on; reading keeps pings answered and notices a close."""
    async for msg in ws:
        if msg.type == WSMsgType.ERROR:
            return


async def _feed(
    ctx: Context, ws: web.WebSocketResponse, token: str | None, reader: asyncio.Task[None]
) -> None:
    live = ctx.live
    sent_status = sent_thermal = -1
    last_status = last_thermal = 0.0
    next_check = time.monotonic() + SESSION_CHECK_S
    while not ws.closed and not reader.done():
        now = time.monotonic()
        if now >= next_check:
            next_check = now + SESSION_CHECK_S
            # A look, not activity: a page left open still idles out (SESSION_IDLE_S).
            session = ctx.sessions.get(token, touch=False)
            if session is None or not session.authenticated:
                await ws.close(code=4401, message=b"session ended")
                return
        if live.status_version != sent_status and now - last_status >= 1.0 / STATUS_HZ:
            sent_status, last_status = live.status_version, now
            await ws.send_json(
                {"type": "status", "fields": live.status_fields(now, bus_connected=ctx.bus.connected)}
            )
        if live.thermal_version != sent_thermal and now - last_thermal >= 1.0 / THERMAL_HZ:
            msg = live.thermal_message(now)
            sent_thermal, last_thermal = live.thermal_version, now
            if msg is not None:
                await ws.send_json(msg)
        pending = live.status_version != sent_status or live.thermal_version != sent_thermal
        wait = 1.0 / max(STATUS_HZ, THERMAL_HZ) if pending else SESSION_CHECK_S
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await live.changed().wait()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/live", live_page)
    app.router.add_get("/snapshot.png", snapshot)
    app.router.add_get("/ws", websocket)
