"""The demo supervisor: every daemon as its own process, supervised like systemd would.

Each child gets its own NOTIFY_SOCKET and a WATCHDOG_USEC, so the demo sees READY=1 (time to
ready), STATUS= and the watchdog pings exactly as systemd would, and restarts a daemon that
crashes or stops pinging. The bus starts first, then the room service; the others follow in
START_ORDER and stop in reverse on Ctrl-C or at the end of --for.

The room service (appliance.room) runs on 127.0.0.1 at APPLIANCE_DEMO_ROOM_PORT or a free port,
with its database under the work dir; the setup page at APPLIANCE_DEMO_SETUP_PORT, else 8080 if
it is free, else a free port. Before the kiosk's daemons start, the demo makes an admin
with a random password (printed once, stored nowhere but as a hash), a room and a viewer link,
and pairs the simulated kiosk through the real device flow (appliance.pairing for the kiosk's
side, the admin's approval straight in the room's database), so the publisher starts paired.

With a room URL (`--room-url`), the demo starts no room service of its own: once the bus is up,
the kiosk pairs with that service by the device flow, printing each user code it gets
("pairing code: ...") for an admin to approve there, and the other daemons start once it is
paired (or after EXTERNAL_PAIR_TIMEOUT_S, unpaired: the publisher then goes on asking by
itself). The network bench runs the kiosk this way, in a network namespace of its own.
`--scenario` picks the simulated scene (sim.scenario: a bundled name or a file).

The setup page is socket-activated, as appliance-setup.socket makes it on a kiosk: the demo
listens on its port itself and starts the setup daemon only once a connection waits there,
handing it the socket by the sd_listen_fds protocol (fd 3, LISTEN_FDS=1, LISTEN_PID its own
pid); the daemon accepts the waiting connection itself. Its exit with status 0 (idle for
setup.idle_exit_s) is no crash: the next connection starts it again. Any other exit is
restarted like any daemon's, the socket held meanwhile so visits queue rather than fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from appliance import daemons
from appliance.atomic import atomic_write
from appliance.bus.client import BusClient
from appliance.bus.topics import PairingStatus
from appliance.config import AppConfig, load_config
from appliance.demo.notify import NotifySocket
from appliance.demo.provision import Approver, provision_room
from appliance.errors import ApplianceError
from appliance.pairing.credentials import load_credentials, normalize_room_url
from appliance.pairing.service import Pairing, PairingRefused
from appliance.runtime import unless_stopped

log = logging.getLogger("appliance.demo")

WATCHDOG_S = 10.0
STOP_TIMEOUT_S = 5.0
RESTART_DELAY_S = 1.0
# A daemon that keeps dying soon after it starts waits twice as long each time, up to this:
# each restart is a whole interpreter, and a crash loop at 1 s would take a core forever.
RESTART_MAX_S = 30.0
# A run at least this long was a good one: the next crash restarts after RESTART_DELAY_S again.
RESTART_HEALTHY_S = 60.0
ROOM_READY_S = 20.0
DEFAULT_SETUP_PORT = 8080
PAIR_TIMEOUT_S = 20.0
# Someone has to approve the code at an external room service: give them time.
EXTERNAL_PAIR_TIMEOUT_S = 600.0
DEMO_ROOM_NAME = "Demo entrance"
# Started on the first connection to a socket the supervisor holds (appliance-setup.socket).
SOCKET_ACTIVATED = frozenset({"setup"})
SETUP_FD = 3  # SD_LISTEN_FDS_START: where a socket-activated daemon finds its socket
# `sh -c` exports its own pid as LISTEN_PID, then execs the daemon, which keeps that pid: the
# daemon then knows the socket is meant for it, not for a parent that passed its environment on.
LISTEN_PID_SHIM = 'export LISTEN_PID=$$; exec "$0" "$@"'
# The room service comes right after the bus: the kiosk's daemons are paired with it by then.
ORDER = ("bus", "room", *(n for n in daemons.START_ORDER if n != "bus"))

DEMO_CONFIG = """\
# Written by `appliance demo`: simulated hardware, everything under this directory.
[paths]
state_dir = "{state}"
run_dir = "{run}"

[bus]
socket_mode = 0o600

[thermal]
backend = "sim"

[camera]
backend = "sim"

[gpio]
pin_factory = "mock"

[screen]
driver = "{screen_driver}"
fullscreen = false

[setup]
host = "127.0.0.1"
port = {setup_port}

[publisher]
audio_backend = "sim"
room_url = "{room_url}"
"""

SIM_SECTION = """
[sim]
scenario = {scenario}
"""

ROOM_CONFIG = """\
# Written by `appliance demo`: the room service on this machine.
[service]
host = "127.0.0.1"
port = {port}
public_url = "{url}"
database = "{database}"
bus_socket = "{bus}"

[pairing]
# The demo pairs its kiosk at start; a short interval keeps that quick.
interval_s = 1
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL to whatever the child started and left running. Each child leads a process group
    of its own (start_new_session): signalled alone, its helpers would be reparented and run on
    as orphans of the demo, where systemd's KillMode=control-group ends them. Also right after
    the child is reaped: its pid, the group's id, is not handed out again while the group has
    members. Never pid 0 (a test's stand-in): killpg(0) is the demo's own group."""
    if proc.pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


class DemoStartError(Exception):
    """The demo cannot start as asked (a port taken, a work directory it cannot write): said in
    one line, before any daemon runs."""


def listen_on(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1:port, bound as the daemons bind (SO_REUSEADDR);
    DemoStartError if it cannot be had."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise DemoStartError(
            f"cannot listen on 127.0.0.1:{port} for the setup page: {exc.strerror or exc}"
        ) from None
    return sock


def as_listen_fd(listener: int) -> Callable[[], None]:
    """A preexec_fn putting the listening socket at fd 3 for the exec that follows.

    Not pass_fds: the subprocess module closes every fd it was not asked to keep after
    preexec_fn runs, fd 3 among them. So with close_fds=False, this marks every other fd past
    stdio close-on-exec itself: the daemon gets stdio and its socket, as under systemd."""

    def preexec() -> None:
        os.dup2(listener, SETUP_FD)  # a dup2 to another fd is inheritable
        if listener == SETUP_FD:
            os.set_inheritable(SETUP_FD, True)
        for name in os.listdir("/proc/self/fd"):
            if int(name) > SETUP_FD:
                with contextlib.suppress(OSError):  # the listing's own fd, closed by now
                    os.set_inheritable(int(name), False)

    return preexec


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the daemons bind (aiohttp sets SO_REUSEADDR): a TIME_WAIT left by the last demo
        # does not make a port busy, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def asked_port(variable: str) -> int | None:
    """The port an environment variable asks for, or None; DemoStartError if it is no port or
    something else listens there already: the daemon would crash-loop on it all run, and the
    printed URL would be another program's."""
    wanted = os.environ.get(variable)
    if not wanted:
        return None
    try:
        port = int(wanted)
    except ValueError:
        port = 0
    # 0 would be a port the daemon picks, which the printed URL could not name.
    if not 1 <= port <= 65535:
        raise DemoStartError(f"{variable}={wanted!r} is not a port number (1-65535)")
    if not port_is_free(port):
        raise DemoStartError(
            f"{variable}={port}: that port is in use by another program; free it or pick another"
        )
    return port


def setup_port() -> int:
    """APPLIANCE_DEMO_SETUP_PORT if set, else 8080 (the kiosk's) if it is free, else a free port.

    A busy 8080 (another demo, a dev server) would crash-loop the setup daemon for the whole run
    and make the printed setup page someone else's."""
    if (wanted := asked_port("APPLIANCE_DEMO_SETUP_PORT")) is not None:
        return wanted
    return DEFAULT_SETUP_PORT if port_is_free(DEFAULT_SETUP_PORT) else free_port()


@dataclass
class Child:
    name: str
    notify_path: Path
    log_file: IO[bytes] | None = None
    proc: asyncio.subprocess.Process | None = None
    spawned_at: float = 0.0
    ready_s: list[float] = field(default_factory=list)
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    status: str = ""
    last_ping: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    watchdog_kills: int = 0
    # When the child said STOPPING=1: from then on it has STOP_TIMEOUT_S to exit, pings or not,
    # as systemd gives a service TimeoutStopSec once it says it is stopping.
    stopping_since: float | None = None
    # Started on a connection to the supervisor's socket, not at the demo's start.
    socket_activated: bool = False
    activations: int = 0

    def on_notify(self, msg: dict[str, str]) -> None:
        now = time.monotonic()
        if msg.get("STOPPING") == "1" and self.stopping_since is None:
            self.stopping_since = now
        if msg.get("READY") == "1" and not self.ready.is_set():
            self.ready_s.append(round(now - self.spawned_at, 3))
            self.ready.set()
            log.info(
                "%s ready in %.2f s%s",
                self.name,
                now - self.spawned_at,
                f": {msg['STATUS']}" if "STATUS" in msg else "",
            )
        if "STATUS" in msg:
            self.status = msg["STATUS"]
        if msg.get("WATCHDOG") == "1" or msg.get("READY") == "1":
            self.last_ping = now


class Supervisor:
    def __init__(
        self,
        workdir: Path,
        names: list[str],
        *,
        headless: bool,
        room_url: str | None = None,
        scenario: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.headless = headless
        # `make demo` on a machine with no desktop session (a server, a container): the status
        # screen draws off-screen instead of failing to take over a console it cannot have.
        self.offscreen = headless or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        self.state = workdir / "state"
        self.run = workdir / "run"
        self.logs = workdir / "logs"
        self.config_file = workdir / "appliance.toml"
        self.room_config = workdir / "room.toml"
        # An external room service (room_url given) is someone else's: nothing of it starts here.
        self.external_room = room_url is not None
        self.scenario = scenario
        if room_url is not None:
            self.room_url = normalize_room_url(room_url)
        else:
            port = asked_port("APPLIANCE_DEMO_ROOM_PORT")
            self.room_url = f"http://127.0.0.1:{port if port is not None else free_port()}"
        self.setup_port = setup_port()
        self.room_lines: list[str] = []
        self.kiosk_paired = False
        self.order = [n for n in ORDER if n in names and not (n == "room" and self.external_room)]
        self.children = {
            n: Child(n, self.run / f"notify-{n}.sock", socket_activated=n in SOCKET_ACTIVATED)
            for n in self.order
        }
        # The setup page's listening socket, from prepare() until stop().
        self.setup_listener: socket.socket | None = None
        self.notify: list[NotifySocket] = []
        self.topic_counts: dict[str, int] = {}
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.bus: BusClient | None = None
        self.started = time.monotonic()

    def prepare(self) -> None:
        """The setup page's socket, the work directory and the config files in it, before
        anything starts; DemoStartError if the port cannot be had or the files cannot be
        written (read-only, another user's, a file in the way)."""
        self.listen()
        try:
            self.write_config()
        except OSError as exc:
            self.close_listener()
            raise DemoStartError(f"cannot write the work dir {self.workdir}: {exc.strerror or exc}") from None

    def listen(self) -> None:
        """Holds the setup page's port from now on, as appliance-setup.socket does from boot."""
        if "setup" in self.children and self.setup_listener is None:
            self.setup_listener = listen_on(self.setup_port)

    def close_listener(self) -> None:
        if self.setup_listener is not None:
            self.setup_listener.close()
            self.setup_listener = None

    def write_config(self) -> None:
        for d in (self.state, self.run, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run, 0o700)
        text = DEMO_CONFIG.format(
            state=self.state,
            run=self.run,
            screen_driver="dummy" if self.offscreen else "auto",
            setup_port=self.setup_port,
            room_url=self.room_url,
        )
        if self.scenario is not None:
            text += SIM_SECTION.format(scenario=json.dumps(self.scenario))  # a TOML string
        atomic_write(self.config_file, text)
        if self.external_room:
            return
        room = ROOM_CONFIG.format(
            port=self.room_url.rsplit(":", 1)[1],
            url=self.room_url,
            database=self.state / "room" / "room.db",
            bus=self.run / "bus.sock",
        )
        atomic_write(self.room_config, room, mode=0o600)

    def env(self, child: Child) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "INVOCATION_ID", "JOURNAL_STREAM"):
            env.pop(key, None)
        env.update(
            APPLIANCE_CONFIG=str(self.config_file),
            NOTIFY_SOCKET=str(child.notify_path),
            WATCHDOG_USEC=str(int(WATCHDOG_S * 1_000_000)),
            GPIOZERO_PIN_FACTORY="mock",
            PYTHONUNBUFFERED="1",
        )
        if self.offscreen:
            env["SDL_VIDEODRIVER"] = "dummy"
        if self.headless or not Path("/dev/snd").exists():
            env["SDL_AUDIODRIVER"] = "dummy"  # no sound card: silence, not ALSA's complaints
        return env

    def argv(self, child: Child) -> list[str]:
        """The daemon's command line."""
        config = ["--config", str(self.room_config)] if child.name == "room" else []
        return [sys.executable, "-m", "appliance", "run", child.name, *config]

    async def spawn(self, child: Child) -> None:
        if self.headless and child.log_file is None:
            child.log_file = open(self.logs / f"{child.name}.log", "ab")  # noqa: ASYNC230, SIM115 - lives with the child
        child.ready.clear()
        child.stopping_since = None
        child.spawned_at = time.monotonic()
        child.last_ping = child.spawned_at
        env = self.env(child)
        env.pop("WATCHDOG_PID", None)
        argv = self.argv(child)
        activation: dict[str, Any] = {}
        if child.socket_activated:
            if self.setup_listener is None:
                raise RuntimeError(f"{child.name} is socket-activated but the demo holds no socket")
            env.update(LISTEN_FDS="1", LISTEN_FDNAMES=child.name)
            argv = ["/bin/sh", "-c", LISTEN_PID_SHIM, *argv]
            activation = {"close_fds": False, "preexec_fn": as_listen_fd(self.setup_listener.fileno())}
        child.proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=child.log_file or None,
            stderr=child.log_file or None,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
            **activation,
        )

    def spawn_task(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def watch(self, child: Child) -> None:
        """Restart the child when it exits, or when it stops pinging the watchdog; a
        socket-activated child that has not run yet or exited 0 starts on the next connection."""
        delay = 0.0  # none yet: the first restart waits RESTART_DELAY_S
        if child.proc is None and not await self.activate(child):
            return
        while not self.stopping.is_set():
            assert child.proc is not None
            code = await child.proc.wait()
            kill_group(child.proc)  # its helpers: not one more orphan per crash
            if self.stopping.is_set():
                return
            if code == 0 and child.socket_activated:
                # Its idle exit, as systemd sees a socket-activated service stop: the socket is
                # still held, and the next visit starts it again. No restart, no backoff.
                log.info("%s stopped when idle; the next connection starts it again", child.name)
                if not await self.activate(child):
                    return
                continue
            child.exit_codes.append(code)
            child.restarts += 1
            if not delay or time.monotonic() - child.spawned_at >= RESTART_HEALTHY_S:
                delay = RESTART_DELAY_S
            else:
                delay = min(delay * 2, RESTART_MAX_S)
            log.warning(
                "%s exited with %s; restarting in %g s (restart %d)", child.name, code, delay, child.restarts
            )
            if not await self.respawn(child, delay):
                return

    async def respawn(self, child: Child, delay: float) -> bool:
        """Starts the child after delay; False if the demo stops first.

        A respawn that fails (fork: EAGAIN, ENOMEM; no log file) is said and tried again:
        left to end the watch, the daemon would stay down for the rest of the run."""
        while True:
            await asyncio.sleep(delay)
            if self.stopping.is_set():
                return False
            try:
                await self.spawn(child)
                return True
            except OSError as exc:
                log.error("%s could not be started: %s; trying again", child.name, exc)
                delay = min(max(delay * 2, RESTART_DELAY_S), RESTART_MAX_S)

    async def activate(self, child: Child) -> bool:
        """Starts a socket-activated child once a connection waits on its socket; False if the
        demo stops first. The connection is left in the backlog for the daemon to accept."""
        if not await self.connection_waiting():
            return False
        if not await self.respawn(child, 0.0):
            return False
        child.activations += 1
        log.info("%s started for a connection (activation %d)", child.name, child.activations)
        return True

    async def connection_waiting(self) -> bool:
        """Until the listening socket is readable (a connection in its backlog), without
        accepting it; False if the demo stops first or holds no socket."""
        listener = self.setup_listener
        if listener is None:
            return False
        loop = asyncio.get_running_loop()
        waiting = loop.create_future()
        fd = listener.fileno()

        def readable() -> None:
            if not waiting.done():
                waiting.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await waiting
        finally:
            loop.remove_reader(fd)
        return not self.stopping.is_set()

    async def watchdog(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for child in self.children.values():
                proc = child.proc
                if proc is None or proc.returncode is not None:
                    continue
                if child.stopping_since is not None and now - child.stopping_since > STOP_TIMEOUT_S:
                    # Stopping by itself (a critical task failed) but stuck on the way out: its
                    # loop may well go on pinging, so the pings alone would keep it forever.
                    child.stopping_since = None
                    log.error("%s did not stop within %.0f s; killing it", child.name, STOP_TIMEOUT_S)
                elif now - child.last_ping > WATCHDOG_S:
                    child.watchdog_kills += 1
                    log.error("%s missed its watchdog; killing it", child.name)
                else:
                    continue
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                kill_group(proc)

    async def count_topics(self) -> None:
        bus = BusClient(self.run / "bus.sock", "demo")
        self.bus = bus
        await bus.connect(timeout=None)
        async for rx in bus.subscribe("*", maxsize=100_000):
            self.topic_counts[rx.topic] = self.topic_counts.get(rx.topic, 0) + 1

    async def start(self) -> None:
        self.listen()
        self.write_config()
        for each in self.children.values():
            sock = NotifySocket(each.notify_path, each.on_notify)
            await sock.open()
            self.notify.append(sock)
        # From the first spawn, not once all have started: the start can wait minutes (for an
        # admin to approve the kiosk) with the bus and the room running, unwatched otherwise.
        self.spawn_task(self.watchdog(), "watchdog")
        for name in self.order:
            child = self.children[name]
            if name == "room":
                admin, password, room_id = self.provision_room()
            if not child.socket_activated:  # else watch() starts it on the first connection
                await self.spawn(child)
            self.spawn_task(self.watch(child), f"watch-{name}")
            if name == "bus":
                # Everyone else needs the socket; the clients would retry, but starting them
                # after the bus is ready keeps the demo's time-to-ready figures meaningful.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await child.ready.wait()
                self.spawn_task(self.count_topics(), "topics")
                if self.external_room:
                    await self.pair_external()
            elif name == "room":
                try:
                    async with asyncio.timeout(ROOM_READY_S):
                        await child.ready.wait()
                except TimeoutError:
                    self.room_lines.append("  kiosk:        not paired: the room service did not start")
                else:
                    await self.pair_kiosk(admin, room_id)
                self.room_lines.insert(
                    0, f"  room admin:   {self.room_url}/  user {admin}  password {password}"
                )

    def provision_room(self) -> tuple[str, str, str]:
        """An admin with a fresh random password, the demo room and a viewer link for it,
        written to the room's database before the service starts: (admin, password, room id)."""
        made = provision_room(self.state / "room" / "room.db", DEMO_ROOM_NAME)
        self.room_lines.append(f"  viewer link:  {self.room_url}/view/{made.invite}")
        return made.admin, made.password, made.room_id

    async def pair_kiosk(self, admin_name: str, room_id: str) -> None:
        """The simulated kiosk's device flow against the running room service; the admin's
        approval goes straight into the room's database as the code appears."""
        config = load_config(self.config_file)
        creds = load_credentials(config.paths.state_dir)
        if creds is not None and creds.room_url == self.room_url:
            self.kiosk_paired = True  # a --workdir used before: its pairing stands
            self.room_lines.append(f"  kiosk:        paired with {creds.room_name!r} (from an earlier run)")
            return
        approver = Approver(self.state / "room" / "room.db", admin_name, room_id)

        def approve(status: PairingStatus) -> None:
            if status.state == "code" and status.user_code:
                approver.approve(status.user_code)

        try:
            await self._pair(config, approve, PAIR_TIMEOUT_S)
        finally:
            approver.close()

    async def pair_external(self) -> None:
        """The device flow against an external room service: each code is printed for an admin
        of that service to approve."""
        config = load_config(self.config_file)
        creds = load_credentials(config.paths.state_dir)
        self.room_lines.append(f"  room service: {self.room_url} (external: not started by the demo)")
        if creds is not None and creds.room_url == self.room_url:
            self.kiosk_paired = True
            self.room_lines.append(f"  kiosk:        paired with {creds.room_name!r} (from an earlier run)")
            return
        shown: set[str] = set()

        def show(status: PairingStatus) -> None:
            if status.state == "code" and status.user_code and status.user_code not in shown:
                shown.add(status.user_code)
                where = status.verification_uri_complete or f"{self.room_url}/activate"
                print(f"  pairing code: {status.user_code} (approve it at {where})", flush=True)

        await self._pair(config, show, EXTERNAL_PAIR_TIMEOUT_S)

    async def _pair(
        self, config: AppConfig, on_status: Callable[[PairingStatus], None], timeout: float
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                creds = await Pairing(config, on_status=on_status).pair_once(self.room_url)
        except (TimeoutError, PairingRefused, ApplianceError, OSError) as exc:
            log.error("pairing the demo kiosk failed: %s", exc or type(exc).__name__)
            self.room_lines.append(f"  kiosk:        not paired ({exc or type(exc).__name__})")
            return
        self.kiosk_paired = True
        self.room_lines.append(f"  kiosk:        paired with {creds.room_name!r}")

    async def stop(self) -> None:
        self.stopping.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.bus is not None:
            await self.bus.close()
        for name in reversed(self.order):
            running = self.children.get(name)
            if running is None or running.proc is None or running.proc.returncode is not None:
                continue
            running.proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await running.proc.wait()
            except TimeoutError:
                log.error("%s did not stop within %.0f s; killing it", name, STOP_TIMEOUT_S)
                running.proc.kill()
                await running.proc.wait()
            kill_group(running.proc)  # whatever it started and left running
        self.close_listener()  # a visit now is refused, not queued for a demo that is gone
        for sock in self.notify:
            sock.close()
        for child in self.children.values():
            if child.log_file is not None:
                child.log_file.close()
        self.clear_run_dir()

    def clear_run_dir(self) -> None:
        """Every daemon is gone: what a killed one could not clean up (the bus socket, frame
        rings of camera pictures) goes too, as /run empties at a kiosk's boot. Only files:
        the run directory is the demo's own, nothing in it outlives a run."""
        try:
            entries = list(os.scandir(self.run))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def report(self) -> dict[str, Any]:
        return {
            "duration_s": round(time.monotonic() - self.started, 3),
            "workdir": str(self.workdir),
            "daemons": {c.name: self.daemon_report(c) for c in self.children.values()},
            "topics": dict(sorted(self.topic_counts.items())),
            "room": {"url": self.room_url, "kiosk_paired": self.kiosk_paired},
        }

    @staticmethod
    def daemon_report(c: Child) -> dict[str, Any]:
        # ready_s: the first start's; for a socket-activated daemon, None until its first visit.
        got: dict[str, Any] = {
            "ready_s": c.ready_s[0] if c.ready_s else None,
            "ready_s_all": c.ready_s,
            "restarts": c.restarts,
            "exit_codes": c.exit_codes,
            "watchdog_kills": c.watchdog_kills,
            "status": c.status,
            "pid": c.proc.pid if c.proc else None,
        }
        if c.socket_activated:
            got.update(socket_activated=True, activations=c.activations)
        return got

    def urls(self) -> list[str]:
        lines = []
        if "setup" in self.children:
            lines.append(f"  setup page:   http://127.0.0.1:{self.setup_port}/ (starts on the first visit)")
        if "room" in self.children or self.external_room:
            lines.extend(self.room_lines)
        return lines


async def _demo(
    workdir: Path,
    headless: bool,
    duration: float | None,
    report: str | None,
    room_url: str | None,
    scenario: str | None,
) -> int:
    names = daemons.available()
    try:
        sup = Supervisor(
            workdir, [n for n in ORDER if n in names], headless=headless, room_url=room_url, scenario=scenario
        )
        sup.prepare()
    except DemoStartError as exc:
        print(f"appliance demo: {exc}", file=sys.stderr, flush=True)
        return 1
    loop = asyncio.get_running_loop()
    # SIGHUP too: the terminal closed. Its default action would end the demo on the spot, and the
    # daemons, in sessions of their own that the hangup does not reach, would run on as orphans.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, sup.stopping.set)
    missing = [n for n in ORDER if n not in names and not (n == "room" and sup.external_room)]
    print(f"appliance demo: running {', '.join(sup.children)} (work dir {workdir})", flush=True)
    if missing:
        print(f"  not in this build yet: {', '.join(missing)}", flush=True)
    if sup.offscreen and not headless:
        print("  no desktop session (DISPLAY unset): the status screen draws off-screen", flush=True)
    try:
        # Ctrl-C or SIGTERM during the start (which can wait minutes for an admin to approve
        # the kiosk) stops the demo now; a start that fails stops the daemons it started, which
        # run in sessions of their own and would otherwise outlive the demo.
        starting = await unless_stopped(sup.start(), sup.stopping)
        if not starting.cancelled():
            starting.result()
        if not sup.stopping.is_set():
            for line in sup.urls():
                print(line, flush=True)
            print(
                "  Ctrl-C stops everything." if duration is None else f"  running for {duration:.0f} s",
                flush=True,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await sup.stopping.wait()
    finally:
        await sup.stop()
        # Also after a start that failed or was interrupted: a bench or CI reading the report
        # learns what ran, rather than finding none (or the last run's).
        summary = sup.report()
        if report:
            write_report(report, summary)
    print(
        "appliance demo: stopped;",
        ", ".join(
            f"{n} ready in {d['ready_s']} s ({d['restarts']} restarts)" for n, d in summary["daemons"].items()
        ),
        flush=True,
    )
    return 0


def write_report(path: str, summary: dict[str, Any]) -> None:
    try:
        atomic_write(path, json.dumps(summary, indent=2) + "\n")
    except OSError as exc:  # the daemons are stopped already; the report alone is lost
        log.error("cannot write the report %s: %s", path, exc.strerror or exc)


def run_demo(
    *,
    headless: bool,
    duration: float | None,
    report: str | None,
    workdir: str | None,
    room_url: str | None = None,
    scenario: str | None = None,
) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo %(levelname)s: %(message)s")
    if room_url is not None:
        try:
            normalize_room_url(room_url)
        except ValueError as exc:
            raise SystemExit(f"appliance demo: --room-url: {exc}") from None
    if scenario is not None and Path(scenario).expanduser().exists():
        scenario = str(Path(scenario).expanduser().resolve())  # the daemons run elsewhere
    if workdir is not None:
        return asyncio.run(_demo(Path(workdir).resolve(), headless, duration, report, room_url, scenario))
    with tempfile.TemporaryDirectory(prefix="appliance-demo-") as tmp:
        return asyncio.run(_demo(Path(tmp), headless, duration, report, room_url, scenario))
