"""`appliance run setup`: the technician's setup page on the local network.

    bus (health.*, thermal.*, camera.status, pairing.status, call.state, screening.state)
        --> LiveState --> pages and their WebSocket
    pages --> bus methods (pairing.start, pairing.unpair, screening.calibrate), setup.code,
              the config file (atomic), systemd (restart, reboot)

Listens on setup.host:setup.port, over HTTPS with a self-signed certificate when setup.tls
(made at the first start, see tls.py). Socket-activated (appliance-setup.socket, or the demo),
it serves on the socket it is passed instead, and exits after setup.idle_exit_s without use
(see activation.py). The page edits the config file this daemon was
pointed at (APPLIANCE_CONFIG, else /etc/appliance/appliance.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from appliance.bus.client import Subscription
from appliance.config import config_path
from appliance.errors import StateError
from appliance.runtime import Runtime, listen_fds
from appliance.setup import activation, live, sessionstore, tls
from appliance.setup.activation import Activity, Clock, IdleExit
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
    activated: bool = False  # serving on a socket it was passed
    idle: IdleExit | None = None  # the idle exit, when it may exit


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


def _restore_logins(ctx: Context) -> None:
    """At start, before serving: the logins the last stop of this boot kept (sessionstore.py).
    In the loop's thread, as _keep_logins: a small file, read before any request comes."""
    try:
        password = ctx.store.fingerprint()
    except StateError:
        password = None  # the page stays locked (logged at start): no login comes back
    sessionstore.load(ctx.config.paths.state_dir, ctx.sessions, ctx.devices, password=password)


def _keep_logins(ctx: Context) -> None:
    """At stop (the idle exit, a clean stop), after the server stopped taking requests: the
    logins, for the next start of this boot. In the loop's thread: nothing else runs any more,
    and no login can change them between reading and writing. A failure costs only the logins."""
    try:
        sessionstore.save(
            ctx.config.paths.state_dir, ctx.sessions, ctx.devices, password=ctx.store.fingerprint()
        )
    except (OSError, StateError) as exc:
        log.warning("the setup logins were not kept for the next start: %s", exc)


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


def _url(scheme: str, host: str, port: int) -> str:
    """The URL to reach host:port from this machine (the loopback for every interface)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _where(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def start(
    rt: Runtime,
    *,
    fds: Sequence[int] | None = None,
    clock: Clock = time.monotonic,
    idle_check_s: float | None = None,
) -> SetupServer:
    """Start every part on rt; returns the server (tests use its URL and context).

    fds: the sockets passed by socket activation (None: read LISTEN_FDS), owned from here on.
    clock, idle_check_s: the idle exit's monotonic clock and check period (tests)."""
    config = rt.config
    # First: a unit file set up wrong is refused before anything else starts.
    inherited = activation.inherited_socket(listen_fds() if fds is None else fds)
    if inherited is not None:
        rt.stack.callback(inherited.close)  # if the start fails before the server owns it
        host, port = inherited.getsockname()[:2]
        if port != config.setup.port:
            log.warning(
                "the passed socket listens on port %d, not on setup.port %d: the socket unit decides "
                "the port (change it with systemctl edit appliance-setup.socket)",
                port,
                config.setup.port,
            )
    else:
        host, port = config.setup.host, config.setup.port
    bus = await rt.connect_bus()
    path = config_path()
    system = SystemControl(
        state_dir=config.paths.state_dir, config_path=path, control_dir=config.paths.run_dir / "control"
    )
    cert_path = None
    ssl_context = None
    if config.setup.tls:
        cert_path, key_path = await asyncio.to_thread(
            tls.ensure_certificate, config.paths.state_dir, _extra_ips(host)
        )
        ssl_context = tls.server_context(cert_path, key_path)
    ctx = Context(
        config, path, bus, system, tls=config.setup.tls, cert_path=cert_path, activity=Activity(clock)
    )
    logging.getLogger().addHandler(ctx.ring_log)
    rt.stack.callback(logging.getLogger().removeHandler, ctx.ring_log)
    try:
        if not await ctx.password_is_set():
            log.info("no setup password yet: first use needs the code from the kiosk's screen")
    except StateError as exc:
        # The page stays locked and says why; the daemon still runs to show it.
        log.error("%s", exc)
    ctx.publish_code()  # clears a code a previous run left on the screen
    _restore_logins(ctx)
    # Pushed before the runner's cleanup, so run after it (the stack unwinds in reverse).
    rt.stack.callback(_keep_logins, ctx)
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
    scheme = "https" if ssl_context else "http"
    site: web.BaseSite
    if inherited is not None:
        site = web.SockSite(runner, inherited, ssl_context=ssl_context)
    else:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        raise StateError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    idle = None
    if inherited is not None and config.setup.idle_exit_s > 0:
        idle = IdleExit(rt, ctx, config.setup.idle_exit_s, check_s=idle_check_s)
        # Not critical: a fault in it keeps the page up, only the memory is not given back.
        rt.spawn(idle.run(), "idle-exit", critical=False)
    activated = " (socket-activated)" if inherited is not None else ""
    rt.ready(f"listening on {_where(scheme, host, port)}{activated}")
    return SetupServer(ctx, runner, _url(scheme, host, port), activated=inherited is not None, idle=idle)


async def main(rt: Runtime) -> None:
    await start(rt)
