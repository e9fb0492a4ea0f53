"""The room service as an aiohttp application: stores, hub and routes wired in one place.

    make_app(config)       the application (opens the database; closes it on cleanup)
    serving(app, ...)      run it on a TCP site; yields the base URL (the daemon, tests)

Headers every response gets: nosniff, no referrer (links carry tokens), no framing, and on the
admin pages a strict Content-Security-Policy (no inline script, forms post only here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from appliance.room import admin, api, openapi, pages, view
from appliance.room.accesslog import RedactingAccessLogger
from appliance.room.accounts import Accounts
from appliance.room.config import RoomConfig
from appliance.room.db import open_database, server_key
from appliance.room.devices import Devices
from appliance.room.hub import Hub
from appliance.room.rooms import Rooms
from appliance.room.services import SERVICES, Limits, Services
from appliance.room.turn import IceServers
from appliance.webguard import log_bad_requests_briefly, static_errors

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # forms and JSON bodies are small; bigger ones get 413
PURGE_EVERY_S = 60.0
ADMIN_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under /api/, aiohttp's own errors (404, 405, 413) as JSON like every other API error."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api/"):
            raise
        keep = {k: exc.headers[k] for k in ("Allow", "Retry-After") if k in exc.headers}
        slug = exc.reason.lower().replace(" ", "_")
        return api.api_error(exc.status, slug, exc.reason, keep)


_SQLITE_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
DB_RETRY_AFTER_S = 2


@web.middleware
async def database_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """SQLite failing (another writer holding the file past the busy timeout, a damaged or full
    disk) is the service's fault, not the client's: a clear 503 (JSON under /api/) instead of
    aiohttp's bare 500, the details in the log and not in the answer."""
    try:
        return await handler(request)
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        busy = code is not None and code & 0xFF in _SQLITE_BUSY
        if busy:
            log.warning("%s %s: the database is busy: %s", request.method, request.path, exc)
            slug, text = "database_busy", "the database is busy; try again shortly"
        else:
            log.error("%s %s: database error: %s: %s", request.method, request.path, type(exc).__name__, exc)
            slug, text = "database_unavailable", "the service cannot use its database; try again later"
        headers = {"Retry-After": str(DB_RETRY_AFTER_S)}
        if request.path.startswith("/api/"):
            return api.api_error(503, slug, text, headers)
        page = pages.message("Service unavailable", text[0].upper() + text[1:] + ".")
        return web.Response(text=page, status=503, content_type="text/html", headers=headers)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    if response.content_type == "text/html" and not request.path.startswith(("/view/", "/static/")):
        h.setdefault("Content-Security-Policy", ADMIN_CSP)
        h.setdefault("Cache-Control", "no-store")


async def _openapi(request: web.Request) -> web.Response:
    return api.json_response(openapi.document())


def _purge(s: Services) -> None:
    now = s.now()
    s.accounts.purge(now, s.config.pairing.code_ttl_s)
    s.rooms.purge(now)
    s.devices.purge(now)


async def _housekeeping(app: web.Application) -> AsyncIterator[None]:
    s = app[SERVICES]

    async def loop() -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY_S)
            try:
                _purge(s)
            except Exception:  # a locked or full disk must not end the service; say so and retry
                log.exception("purging expired rows failed")

    task = asyncio.get_running_loop().create_task(loop(), name="room-housekeeping")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    s.conn.close()


async def _close_sockets(app: web.Application) -> None:
    app[SERVICES].hub.close_all("the room service is shutting down")


def make_app(
    config: RoomConfig, *, turn_secret: bytes | None = None, clock: Callable[[], float] = time.time
) -> web.Application:
    conn = open_database(config.service.database)
    ice = IceServers(config.ice_servers, turn_secret, config.turn.ttl_s)
    services = Services(
        config=config,
        conn=conn,
        accounts=Accounts(conn),
        rooms=Rooms(conn),
        devices=Devices(conn, config.rooms.max_devices_per_room),
        hub=Hub(lambda peer, valid_s: ice.for_peer(peer, clock(), valid_s)),
        ice=ice,
        key=server_key(conn),
        clock=clock,
        limits=Limits.from_config(config),
    )
    _purge(services)
    log_bad_requests_briefly()
    app = web.Application(client_max_size=MAX_BODY, middlewares=[api_errors, database_errors, static_errors])
    app[SERVICES] = services
    api.add_routes(app)
    app.router.add_get("/api/v1/openapi.json", _openapi, allow_head=False)
    admin.add_routes(app)
    view.add_routes(app)
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_housekeeping)
    return app


def tls_context(config: RoomConfig) -> ssl.SSLContext | None:
    svc = config.service
    if svc.tls_cert is None or svc.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(svc.tls_cert, svc.tls_key)
    return ctx


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve until the block ends; yields the base URL (with the real port when port is 0)."""
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = runner.addresses[0]
        scheme = "https" if ssl_context else "http"
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        yield f"{scheme}://{shown}:{bound[1]}"
    finally:
        await runner.cleanup()
