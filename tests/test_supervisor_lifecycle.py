"""Lifecycle corners of the demo supervisor: respawn failures, a daemon stuck stopping,
stopping during the start, a failed start, crash-loop backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from demo_fakes import FakeDaemon, demo_signals, fake_daemons

from appliance.demo import supervisor as sup_mod
from appliance.demo.notify import NotifySocket
from appliance.demo.supervisor import Child, Supervisor
from appliance.runtime import notify

__all__ = ["demo_signals", "fake_daemons"]  # the shared fixtures (demo_fakes), used by name


async def test_a_failed_respawn_is_retried_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The child exits; its respawn fails once (fork: EAGAIN, say). The supervisor says so and
    tries again instead of leaving the daemon down for the rest of the run."""
    monkeypatch.setattr(sup_mod, "RESTART_DELAY_S", 0.0)
    sup = Supervisor(tmp_path / "work", ["thermal"], headless=True)
    child = sup.children["thermal"]
    respawned = asyncio.Event()
    attempts: list[int] = []

    class Exited:
        pid = 0  # no real process: nothing to kill
        returncode: int | None = 1

        async def wait(self) -> int:
            if respawned.is_set() and attempts[-1] > 1:
                await asyncio.Event().wait()  # the respawned daemon runs
            return 1

    async def spawn(c: Child) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        c.proc = Exited()  # type: ignore[assignment]
        respawned.set()

    child.proc = Exited()  # type: ignore[assignment]
    monkeypatch.setattr(sup, "spawn", spawn)
    caplog.set_level(logging.ERROR, logger="appliance.demo")
    task = asyncio.create_task(sup.watch(child))
    try:
        async with asyncio.timeout(5):
            await respawned.wait()
        assert attempts == [1, 2]
        assert any("thermal" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    finally:
        sup.stopping.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_daemon_stuck_stopping_is_killed_even_while_it_pings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon said STOPPING=1 (a critical task failed) and hangs on its way out, its event
    loop still pinging the watchdog: systemd kills it after TimeoutStopSec; so must the demo,
    or the daemon stays down-but-alive for the rest of the run."""
    monkeypatch.setattr(sup_mod, "STOP_TIMEOUT_S", 0.0)
    sup = Supervisor(tmp_path / "work", ["thermal"], headless=True)
    sup.run.mkdir(parents=True)
    child = sup.children["thermal"]
    killed = asyncio.Event()

    class Hung:
        pid = 0
        returncode: int | None = None

        def kill(self) -> None:
            killed.set()

    child.proc = Hung()  # type: ignore[assignment]
    sock = NotifySocket(child.notify_path, child.on_notify)
    await sock.open()
    monkeypatch.setenv("NOTIFY_SOCKET", str(child.notify_path))

    async def pings() -> None:  # the daemon's loop is not blocked: its watchdog task goes on
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(0.05)

    assert notify("STOPPING=1")
    pinger = asyncio.create_task(pings())
    watchdog = asyncio.create_task(sup.watchdog())
    try:
        async with asyncio.timeout(5):
            await killed.wait()
        assert child.stopping_since is None  # one kill, not one per tick until it is reaped
    finally:
        sup.stopping.set()
        for task in (pinger, watchdog):
            task.cancel()
        await asyncio.gather(pinger, watchdog, return_exceptions=True)
        sock.close()


async def test_demo_stops_on_sigterm_while_it_waits_for_pairing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_daemons: list[FakeDaemon], demo_signals: None
) -> None:
    """SIGTERM (or Ctrl-C) while the demo waits up to 10 minutes for an admin to approve the
    kiosk at an external room service: it stops now, and stops the daemons it started."""

    async def pair_external(self: Supervisor) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.Event().wait()  # nobody approves the code

    monkeypatch.setattr(Supervisor, "pair_external", pair_external)
    async with asyncio.timeout(5):
        code = await sup_mod._demo(tmp_path / "work", True, None, None, "http://127.0.0.1:9", None)
    assert code == 0
    assert fake_daemons and all(d.ended.is_set() for d in fake_daemons)


async def test_demo_failing_to_start_stops_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_daemons: list[FakeDaemon], demo_signals: None
) -> None:
    """The children run in sessions of their own: a demo that fails half-way through its start
    must stop those already running, or they outlive it (and hold its ports and sockets)."""

    async def pair_external(self: Supervisor) -> None:
        raise RuntimeError("the room service answered nonsense")

    monkeypatch.setattr(Supervisor, "pair_external", pair_external)
    with pytest.raises(RuntimeError):
        async with asyncio.timeout(5):
            await sup_mod._demo(tmp_path / "work", True, None, None, "http://127.0.0.1:9", None)
    assert fake_daemons and all(d.ended.is_set() for d in fake_daemons)


async def test_a_crash_looping_daemon_is_restarted_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon that dies as soon as it starts is restarted ever more slowly (up to a cap),
    not every second forever, each restart a whole interpreter; a good run resets the pace."""
    import types

    d = sup_mod.RESTART_DELAY_S
    monkeypatch.setattr(sup_mod, "RESTART_MAX_S", 4 * d, raising=False)
    delays: list[float] = []
    sup = Supervisor(tmp_path / "work", ["thermal"], headless=True)
    child = sup.children["thermal"]

    async def sleep(delay: float) -> None:  # the supervisor's restart delays, recorded
        delays.append(delay)
        if len(delays) >= 9:
            sup.stopping.set()
        await asyncio.sleep(0)

    proxy = types.SimpleNamespace(**{k: getattr(asyncio, k) for k in dir(asyncio) if not k.startswith("__")})
    proxy.sleep = sleep
    monkeypatch.setattr(sup_mod, "asyncio", proxy)

    class Crashed:
        pid = 0
        returncode: int | None = 1

        async def wait(self) -> int:
            if len(delays) == 4:  # this run lasted: the next crash starts from the first delay
                child.spawned_at -= getattr(sup_mod, "RESTART_HEALTHY_S", 60.0)
            return 1

    async def spawn(c: Child) -> None:
        c.spawned_at = time.monotonic()
        c.proc = Crashed()  # type: ignore[assignment]

    monkeypatch.setattr(sup, "spawn", spawn)
    await spawn(child)
    async with asyncio.timeout(5):
        await sup.watch(child)
    assert delays == [d, 2 * d, 4 * d, 4 * d, d, 2 * d, 4 * d, 4 * d, 4 * d]
    assert child.restarts == 9


def test_a_busy_setup_port_is_not_the_printed_setup_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something else (a second demo, a dev server) holds 8080: the setup daemon could never bind
    it and would crash-loop all run, and the printed "setup page" would be that other program.
    Without APPLIANCE_DEMO_SETUP_PORT the demo takes a free port instead, and prints that one."""
    import socket

    monkeypatch.delenv("APPLIANCE_DEMO_SETUP_PORT", raising=False)
    holder = socket.socket()
    try:
        try:
            holder.bind(("127.0.0.1", 8080))
            holder.listen()
        except OSError:
            pass  # already held by someone else: busy all the same
        sup = Supervisor(tmp_path / "work", ["bus", "setup"], headless=True)
        sup.write_config()
        port = sup_mod.load_config(sup.config_file, apply_env=False).setup.port
        assert port != 8080
        assert f"http://127.0.0.1:{port}/" in "\n".join(sup.urls())
    finally:
        holder.close()


def test_an_asked_for_setup_port_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_DEMO_SETUP_PORT", "18080")
    sup = Supervisor(tmp_path / "work", ["bus", "setup"], headless=True)
    sup.write_config()
    assert sup_mod.load_config(sup.config_file, apply_env=False).setup.port == 18080
    assert "http://127.0.0.1:18080/" in "\n".join(sup.urls())


_PARENT = """
import signal, subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(sys.argv[1], "w").write(str(kid.pid))
if sys.argv[2] == "crash":
    sys.exit(3)  # gone, its helper left behind
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stops by itself, its helper does not
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    """True while pid runs (a zombie waiting for its reaper is not running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


async def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _spawn_parent(tmp_path: Path, child: Child, mode: str) -> int:
    """A daemon with a helper process of its own (openssl for the setup page's certificate,
    say), in a session of its own as Supervisor.spawn makes it: the helper's pid."""
    pid_file = tmp_path / f"helper-{mode}.pid"
    child.spawned_at = time.monotonic()
    child.proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PARENT, str(pid_file), mode, start_new_session=True
    )
    async with asyncio.timeout(10):
        while not pid_file.exists() or not pid_file.read_text():  # noqa: ASYNC110 - another process writes it
            await asyncio.sleep(0.02)
    return int(pid_file.read_text())


async def test_stopping_the_demo_leaves_no_grandchild(tmp_path: Path) -> None:
    """Ctrl-C: a daemon stops on SIGTERM, but a helper it started would be reparented and run
    on, an orphan of the demo (systemd's KillMode=control-group would end it: so must the demo)."""
    sup = Supervisor(tmp_path / "work", ["setup"], headless=True)
    helper = await _spawn_parent(tmp_path, sup.children["setup"], "stay")
    try:
        async with asyncio.timeout(30):
            await sup.stop()
        assert await _gone(helper), "the daemon's helper outlived the demo"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(helper, signal.SIGKILL)


async def test_a_crashed_daemons_leftovers_go_before_it_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon that crashed leaves its helper behind: it goes with it, as under systemd, not
    one more orphan per restart of a crash-looping daemon."""
    monkeypatch.setattr(sup_mod, "RESTART_DELAY_S", 0.0)
    sup = Supervisor(tmp_path / "work", ["setup"], headless=True)
    child = sup.children["setup"]
    helper = await _spawn_parent(tmp_path, child, "crash")
    respawned = asyncio.Event()

    async def spawn(c: Child) -> None:
        respawned.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(sup, "spawn", spawn)
    task = asyncio.create_task(sup.watch(child))
    try:
        async with asyncio.timeout(10):
            await respawned.wait()
        assert await _gone(helper), "the crashed daemon's helper is still running"
    finally:
        sup.stopping.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(helper, signal.SIGKILL)


async def test_closing_the_terminal_stops_the_demo_and_its_daemons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_daemons: list[FakeDaemon], demo_signals: None
) -> None:
    """`make demo` in a terminal that is closed: SIGHUP. Its default action would end the demo
    at once, and the daemons, in sessions of their own that the hangup never reaches, would run
    on as orphans holding the demo's ports and sockets. It stops like Ctrl-C instead."""
    hangups: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda sig, frame: hangups.append(sig))  # not fatal here

    async def pair_external(self: Supervisor) -> None:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.Event().wait()

    monkeypatch.setattr(Supervisor, "pair_external", pair_external)
    try:
        # Still waiting for the approval after 5 s: the hangup was not taken for a stop.
        async with asyncio.timeout(5):
            code = await sup_mod._demo(tmp_path / "work", True, None, None, "http://127.0.0.1:9", None)
        assert code == 0
        assert fake_daemons and all(d.ended.is_set() for d in fake_daemons)
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)  # the demo's, if any
        signal.signal(signal.SIGHUP, previous)


async def test_the_watchdog_runs_while_the_demo_waits_for_pairing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_daemons: list[FakeDaemon], demo_signals: None
) -> None:
    """The start can wait 10 minutes for an admin to approve the kiosk, the bus running all that
    time: a bus whose loop hangs then must be killed and restarted like at any other time, not
    left hung (and every client with it) until someone approves the code."""
    monkeypatch.setattr(sup_mod, "WATCHDOG_S", 0.0)  # no ping ever comes in time: a hung loop
    monkeypatch.setattr(sup_mod, "RESTART_DELAY_S", 0.0)

    async def pair_external(self: Supervisor) -> None:
        # Waits for the watchdog within the 5 s the test gives the whole demo, then says stop.
        async with asyncio.timeout(5):
            while self.children["bus"].watchdog_kills == 0:  # noqa: ASYNC110 - the count is the signal
                await asyncio.sleep(0.05)
        self.stopping.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(Supervisor, "pair_external", pair_external)
    async with asyncio.timeout(10):
        code = await sup_mod._demo(tmp_path / "work", True, None, None, "http://127.0.0.1:9", None)
    assert code == 0
    assert len(fake_daemons) >= 2  # the bus, killed, and the bus again


async def test_what_killed_daemons_left_in_the_run_dir_goes_with_the_demo(tmp_path: Path) -> None:
    """A daemon killed on the way out (it hung past STOP_TIMEOUT_S, or the watchdog took it)
    leaves its socket and its frame rings behind, megabytes of camera pictures in a --workdir
    kept between runs. The run directory is the demo's /run: empty once it has stopped."""
    import socket

    sup = Supervisor(tmp_path / "work", ["bus", "camera"], headless=True)
    sup.write_config()
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sup.run / "bus.sock"))
    (sup.run / "camera-preview").write_bytes(b"\0" * 4096)
    (sup.run / ".camera-preview.x1y2.tmp").write_bytes(b"")
    await sup.stop()
    assert sorted(p.name for p in sup.run.iterdir()) == []
    assert sup.config_file.exists()  # the rest of the work dir is kept
