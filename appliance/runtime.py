"""The daemon runtime every appliance daemon runs in.

    async def main(rt: Runtime) -> None:
        bus = await rt.connect_bus()                  # parts start in order...
        sensor = rt.stack.enter_context(open_sensor())
        rt.spawn(sample_loop(bus, sensor), "sample")
        rt.ready("streaming at 10 fps")               # READY=1 only now

    sys.exit(run_daemon("thermal", main, config))

After main returns, the runtime waits for SIGTERM or SIGINT, then cancels the spawned tasks
and unwinds rt.stack: parts stop in reverse order. Under systemd it sends READY=1, STATUS=
and STOPPING=1, and pings the watchdog from the event loop itself at half of WATCHDOG_USEC, so
a blocked loop stops the pings and systemd kills and restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

from systemd import daemon as sd_daemon

from appliance.bus.client import BusClient
from appliance.bus.topics import Health
from appliance.config import AppConfig
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

HealthState = Literal["starting", "ready", "degraded", "stopping"]
# health.<daemon> again every so often, unchanged or not: the setup page sees the daemon is
# alive, and a soak follows its asyncio task count without a request per daemon.
HEALTH_HEARTBEAT_S = 10.0
# After the loop ends, asyncio.run waits for the default executor's threads and the interpreter
# joins every executor thread at exit. One stuck in a driver call (I2C, the camera) would keep a
# stopped daemon alive until systemd's SIGKILL (TimeoutStopSec=5), and forever without systemd:
# the threads get this long, then the process exits without them.
EXIT_GRACE_S = 2.0

Main = Callable[["Runtime"], Awaitable[None]]
T = TypeVar("T")


def under_systemd() -> bool:
    return "INVOCATION_ID" in os.environ or "JOURNAL_STREAM" in os.environ


def setup_logging(name: str, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if under_systemd():
        from systemd.journal import JournalHandler

        # APPLIANCE_DAEMON: one field to select a daemon's entries in the journal
        # (journalctl APPLIANCE_DAEMON=thermal), whatever the unit or identifier is called.
        handler = JournalHandler(SYSLOG_IDENTIFIER=f"appliance-{name}", APPLIANCE_DAEMON=name)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s")
        )
    root.addHandler(handler)
    wanted = os.environ.get("APPLIANCE_LOG_LEVEL", "").upper()
    if wanted and wanted not in logging.getLevelNamesMapping():
        root.setLevel(level)
        logging.getLogger(__name__).warning(
            "APPLIANCE_LOG_LEVEL=%s is not a level; using %s", wanted, logging.getLevelName(level)
        )
    else:
        root.setLevel(wanted or level)


def notify(state: str) -> bool:
    """sd_notify through systemd-python; a no-op returning False where NOTIFY_SOCKET is unset.

    A notify socket that went away (a supervisor restarting, a test harness gone) is not the
    daemon's failure: it keeps running, and says so once at debug level.
    """
    try:
        return bool(sd_daemon.notify(state))
    except OSError as exc:
        log.debug("sd_notify(%s) failed: %s", state.split("=", 1)[0], exc)
        return False


def _one_line(text: str) -> str:
    """text fit for STATUS=: sd_notify reads one VAR=value a line, so a line break in an error
    message would cut the status short, and the next line could pass for READY=1 or WATCHDOG=1."""
    return _LINE_BREAKS.sub(" ", text).strip()


_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC, or None when systemd asked for no watchdog (or not for us)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 2 / 1_000_000
    except ValueError:
        return None


def listen_fds() -> list[int]:
    """The fds systemd passed (sd_listen_fds: LISTEN_FDS, LISTEN_PID, from fd 3 on), the
    environment unset so that nothing this daemon starts (systemctl, journalctl) takes them
    for its own."""
    fds = list(sd_daemon.listen_fds(unset_environment=True))
    # sd_listen_fds unsets the C environment; os.environ, which subprocess hands on, is a copy.
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return fds


class Runtime:
    def __init__(self, name: str, config: AppConfig) -> None:
        self.name = name
        self.config = config
        self.stack = contextlib.AsyncExitStack()
        self.bus: BusClient | None = None
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.started = time.monotonic()
        self.is_ready = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._status = ""
        self._degraded = False
        self._state: HealthState = "starting"

    # --- parts ------------------------------------------------------------------------------

    async def connect_bus(self, timeout: float = 30.0) -> BusClient:
        """Connect to the bus (waiting for it within timeout) and close it last on the way out."""
        bus = BusClient(self.config.bus_socket, self.name, max_frame=self.config.bus.max_frame_bytes)
        await bus.connect(timeout)
        self.stack.push_async_callback(bus.close)
        self.bus = bus
        self._publish_health("starting")
        return bus

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str, *, critical: bool = True) -> asyncio.Task[Any]:
        """Run a background task, held by reference. A critical task that fails stops the
        daemon with exit code 1, so systemd restarts it in a known state."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, critical))
        return task

    def _task_done(self, task: asyncio.Task[Any], critical: bool) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self.stopping.is_set():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed", task.get_name(), exc_info=exc)
            if critical:
                self.stop(1)
        elif critical:
            log.error("task %s ended unexpectedly", task.get_name())
            self.stop(1)

    # --- systemd ----------------------------------------------------------------------------

    def ready(self, status: str = "") -> None:
        self.is_ready = True
        notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))
        self._status = status
        log.info("ready%s", f": {status}" if status else "")
        # Ready is not healthy: a daemon degraded during its start (a camera absent) stays
        # degraded until status() says otherwise, else status() would see nothing to change.
        self._publish_health("degraded" if self._degraded else "ready")

    def status(self, text: str, *, degraded: bool = False) -> None:
        if text == self._status and degraded == self._degraded:
            return
        self._status = text
        self._degraded = degraded
        notify(f"STATUS={_one_line(text)}")
        self._publish_health("degraded" if degraded else ("ready" if self.is_ready else "starting"))

    def stop(self, code: int = 0) -> None:
        if code and not self.exit_code:
            self.exit_code = code
        self.stopping.set()

    def _publish_health(self, state: HealthState | None = None) -> None:
        if state is not None:
            self._state = state
        if self.bus is None:
            return
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # no running loop: only in tests that drive a Runtime by hand
            tasks = 0
        msg = Health(
            daemon=self.name,
            state=self._state,
            status=self._status[:4096],
            pid=os.getpid(),
            started_ts=self.started,
            tasks=tasks,
        )
        self.bus.publish_nowait(f"health.{self.name}", msg)

    async def _heartbeat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._publish_health()

    async def _watchdog(self, interval: float) -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _shutdown(self) -> None:
        notify("STOPPING=1")
        self._publish_health("stopping")
        await self._cancel_tasks()

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def unless_stopped(work: Awaitable[T], stopping: asyncio.Event) -> asyncio.Future[T]:
    """Run `work` until it ends or `stopping` is set, whichever comes first; returns its task,
    done either way: cancelled if the stop came first, else with its result or exception."""
    task = asyncio.ensure_future(work)
    stop_wait = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait((task, stop_wait), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
    return task


def _block_loop_forever() -> None:
    log.warning("SIGUSR2 with APPLIANCE_TEST_HOOKS=1: blocking the event loop")
    while True:
        time.sleep(1)


async def _amain(name: str, main: Main, config: AppConfig) -> int:
    rt = Runtime(name, config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, rt.stop)
    if os.environ.get("APPLIANCE_TEST_HOOKS") == "1":
        # Tests under a real systemd: SIGUSR2 wedges the event loop, so the watchdog must fire.
        loop.add_signal_handler(signal.SIGUSR2, _block_loop_forever)
    interval = watchdog_interval()
    watchdog = loop.create_task(rt._watchdog(interval)) if interval else None
    heartbeat = loop.create_task(rt._heartbeat(HEALTH_HEARTBEAT_S))
    try:
        async with rt.stack:
            # SIGTERM, or a critical task failing, while main() still waits for something (the
            # bus, a device) stops the daemon now, not once a start that may never end is done.
            starting = await unless_stopped(main(rt), rt.stopping)
            try:
                if not starting.cancelled():
                    starting.result()
            except ApplianceError as exc:
                log.error("%s cannot start: %s", name, exc)
                notify(f"STATUS=failed: {_one_line(str(exc))}")
                await rt._cancel_tasks()  # before the parts they use are closed
                return 1
            except BaseException:
                await rt._cancel_tasks()
                raise
            if not rt.is_ready and not starting.cancelled():
                rt.ready()
            await rt.stopping.wait()
            log.info("stopping")
            await rt._shutdown()
    finally:
        heartbeat.cancel()
        if watchdog is not None:
            watchdog.cancel()
    return rt.exit_code


def _exit_after(seconds: float, code: int) -> None:
    """os._exit(code) in `seconds` from a daemon thread, unless the process has ended by then."""

    def expire() -> None:
        time.sleep(seconds)
        me = threading.current_thread()
        stuck = [t.name for t in threading.enumerate() if t is not me and t is not threading.main_thread()]
        log.error("threads still running %g s after the stop (%s); exiting without them", seconds, stuck)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    threading.Thread(target=expire, name="exit-deadline", daemon=True).start()


def run_daemon(name: str, main: Main, config: AppConfig) -> int:
    setup_logging(name)

    async def run() -> int:
        code = 1  # also for an exception out of _amain: the interpreter's own exit code for it
        try:
            code = await _amain(name, main, config)
        finally:
            # Armed only here, not in _amain: tests run _amain in the test process.
            _exit_after(EXIT_GRACE_S, code)
        return code

    return asyncio.run(run())
