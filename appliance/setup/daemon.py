"""`appliance run setup`: the technician's setup page on the local network.

    bus (health.*, thermal.*, camera.status, pairing.status, call.state, screening.state)
        --> LiveState --> pages and their WebSocket
    pages --> bus methods (pairing.start, pairing.unpair, screening.calibrate), setup.code,
              the config file (atomic), systemd (restart, reboot)

Listens on setup.host:setup.port, over HTTPS with a self-signed certificate when setup.tls
(made at the first start, see tls.py). The page edits the config file this daemon was
pointed at (APPLIANCE_CONFIG, else /etc/appliance/appliance.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass

from aiohttp import web

from appliance.bus.client import Subscription
from appliance.config import config_path
from appliance.errors import StateError
from appliance.runtime import Runtime
from appliance.setup import live, tls
from appliance.setup.app import make_app
from appliance.setup.context import Context
from appliance.setup.system import SystemControl

log = logging.getLogger(__name__)

UNIT_POLL_S = 5.0
CODE_CLOCK_CHECK_S = 5.0
SHUTDOWN_S = 2.0


@dataclass
class SetupServer:
    ctx: Context
    runner: web.AppRunner
    url: str


async def _consume(sub: Subscription, ctx: Context) -> None:
    async for rx in sub:
        ctx.live.apply(rx.topic, rx.msg)


async def _poll_units(ctx: Context) -> None:
    while True:
        ctx.live.set_units(await asyncio.to_thread(ctx.system.unit_states))
        await asyncio.sleep(UNIT_POLL_S)


async def _follow_clock(ctx: Context) -> None:
    """The setup code's expiry on the screen follows a wall clock that was set (NTP's first
    sync on a Pi without a real-time clock)."""
    while True:
        await asyncio.sleep(CODE_CLOCK_CHECK_S)
        if ctx.republish_code_if_clock_jumped():
            log.info("the wall clock was set: the setup code's expiry was sent to the screen again")


async def _close_sockets(ctx: Context) -> None:
    for ws in list(ctx.sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"the setup daemon is stopping")


def _extra_ips(host: str) -> list[str]:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return []
    return [] if addr.is_unspecified else [str(addr)]


async def start(rt: Runtime) -> SetupServer:
    """Start every part on rt; returns the server (tests use its URL and context)."""
    config = rt.config
    bus = await rt.connect_bus()
    path = config_path()
    system = SystemControl(
        state_dir=config.paths.state_dir, config_path=path, control_dir=config.paths.run_dir / "control"
    )
    cert_path = None
    ssl_context = None
    if config.setup.tls:
        cert_path, key_path = await asyncio.to_thread(
            tls.ensure_certificate, config.paths.state_dir, _extra_ips(config.setup.host)
        )
        ssl_context = tls.server_context(cert_path, key_path)
    ctx = Context(config, path, bus, system, tls=config.setup.tls, cert_path=cert_path)
    logging.getLogger().addHandler(ctx.ring_log)
    rt.stack.callback(logging.getLogger().removeHandler, ctx.ring_log)
    try:
        if not await ctx.password_is_set():
            log.info("no setup password yet: first use needs the code from the kiosk's screen")
    except StateError as exc:
        # The page stays locked and says why; the daemon still runs to show it.
        log.error("%s", exc)
    ctx.publish_code()  # clears a code a previous run left on the screen
    for topic in live.TOPICS:
        frames = topic == "thermal.frame"
        sub = bus.subscribe(topic, maxsize=4 if frames else 256)
        rt.spawn(_consume(sub, ctx), f"sub:{topic}")
    rt.spawn(_follow_clock(ctx), "code-clock", critical=False)
    if system.active:
        rt.spawn(_poll_units(ctx), "units", critical=False)

    app = make_app(ctx)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    rt.stack.push_async_callback(runner.cleanup)
    rt.stack.push_async_callback(_close_sockets, ctx)
    site = web.TCPSite(runner, config.setup.host, config.setup.port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        raise StateError(
            f"cannot listen on {config.setup.host}:{config.setup.port}: {exc.strerror}"
        ) from None
    scheme = "https" if ssl_context else "http"
    host = "127.0.0.1" if config.setup.host in ("0.0.0.0", "") else config.setup.host
    url = f"{scheme}://{host}:{config.setup.port}"
    rt.ready(f"listening on {scheme}://{config.setup.host}:{config.setup.port}")
    return SetupServer(ctx, runner, url)


async def main(rt: Runtime) -> None:
    await start(rt)
