"""Socket activation of the setup daemon, and its exit when nobody uses it.

A technician opens the setup page a few times in the kiosk's life, but an aiohttp daemon
costs ~41 MB of RSS all day. So systemd (appliance-setup.socket), or `appliance demo`, holds
the listening TCP socket; the first connection starts the daemon, which serves on the socket it
inherits (the sd_listen_fds protocol: LISTEN_FDS, LISTEN_PID, fd 3) and exits after
setup.idle_exit_s without a request, without a request in flight and without an open live
page. Connections that come meanwhile wait in the socket's queue, which outlives the daemon,
and the next one starts it again. What the pages show comes from the bus's retained values at
start, so a late start loses nothing.

Some state lives only in this process, and the daemon stays up while it matters: a setup code
shown on the kiosk's screen (it would stop working), and login failures still counted by the
rate limit (a guesser would get a fresh allowance each idle period). Logins do not hold it:
at stop the authenticated sessions and known devices are written to the state directory
(hashes only) and the next start of the same boot reads them back (sessionstore.py), so a
technician who paused is still logged in.

A daemon that bound setup.port itself never exits: nobody would be listening after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from appliance.errors import StateError

if TYPE_CHECKING:
    from appliance.runtime import Runtime
    from appliance.setup.context import Context

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# How often the idle exit looks (at most; half the idle period when that is shorter). The
# daemon exits up to this much after the idle period: nothing depends on the exact moment.
IDLE_CHECK_S = 5.0


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def inherited_socket(fds: Sequence[int]) -> socket.socket | None:
    """The one listening TCP socket among fds (this function owns them), or None for none.

    More than one, or one that is not a listening TCP stream socket, is a unit file set up
    wrong: a StateError that says what was passed, the fds closed."""
    if not fds:
        return None
    if len(fds) > 1:
        _close_all(fds)
        raise StateError(
            f"{len(fds)} sockets were passed (LISTEN_FDS={len(fds)}); the setup daemon serves on "
            "exactly one: give appliance-setup.socket a single ListenStream="
        )
    fd = fds[0]
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        _close_all(fds)
        raise StateError(f"the passed fd {fd} is not a socket ({exc.strerror})") from None
    problem = None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        problem = (
            f"the passed socket (fd {fd}, {sock.family.name}, {sock.type.name}) is not a TCP stream "
            "socket: appliance-setup.socket needs ListenStream=<port>"
        )
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = (
            f"the passed TCP socket (fd {fd}) is not listening: appliance-setup.socket must listen on it"
        )
    if problem is not None:
        sock.close()
        raise StateError(problem)
    sock.setblocking(False)
    return sock


class Activity:
    """When the last HTTP request began or ended, and how many are under way (a live page's
    WebSocket is a request for as long as it is open)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()
        self.in_flight = 0

    def quiet_for(self) -> float:
        """Seconds since the last request ended; 0 while one is under way."""
        return 0.0 if self.in_flight else max(0.0, self.clock() - self.last)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The outermost middleware: a request refused by a later one (401, 403, 404) counts too.
        self.in_flight += 1
        self.last = self.clock()
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
            self.last = self.clock()


def idle_message(idle_s: int) -> str:
    return f"idle for {idle_s} s: exiting; the socket starts it again"


class IdleExit:
    """Stops the daemon (exit status 0, the Runtime's normal stop) once it has been idle for
    idle_s: no request for that long, none under way, no live page open, and no state that
    only this process holds (see the module's docstring)."""

    def __init__(self, rt: Runtime, ctx: Context, idle_s: int, *, check_s: float | None = None) -> None:
        self.rt = rt
        self.ctx = ctx
        self.idle_s = idle_s
        self.check_s = check_s if check_s is not None else min(IDLE_CHECK_S, idle_s / 2)
        self.checked = asyncio.Event()  # set after every check: tests wait for checks with it

    def held(self) -> bool:
        ctx = self.ctx
        return (
            bool(ctx.sockets)
            or ctx.activity.in_flight > 0
            or ctx.codes.current() is not None
            or ctx.limiter.counting()
        )

    def check(self) -> bool:
        """Stop the daemon if it is idle; whether it did."""
        if self.held() or self.ctx.activity.quiet_for() < self.idle_s:
            return False
        text = idle_message(self.idle_s)
        self.rt.status(text)
        log.info("%s", text)
        self.rt.stop(0)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            stopping = self.check()
            self.checked.set()
            if stopping:
                return
