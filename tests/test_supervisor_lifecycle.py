"""Lifecycle corners of the demo supervisor: respawn failures, a daemon stuck stopping,
stopping during the start, a failed start, crash-loop backoff."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.demo import supervisor as sup_mod
from appliance.demo.notify import NotifySocket
from appliance.demo.supervisor import Child, Supervisor
from appliance.runtime import notify


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


class _FakeDaemon:
    """A child process as the supervisor sees it: runs until terminated or killed."""

    pid = 0

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.ended = asyncio.Event()

    async def wait(self) -> int:
        await self.ended.wait()
        self.returncode = -15
        return -15

    def terminate(self) -> None:
        self.ended.set()

    kill = terminate


@pytest.fixture
def fake_daemons(monkeypatch: pytest.MonkeyPatch) -> list[_FakeDaemon]:
    started: list[_FakeDaemon] = []

    async def spawn(self: Supervisor, child: Child) -> None:
        child.proc = _FakeDaemon()  # type: ignore[assignment]
        started.append(child.proc)  # type: ignore[arg-type]
        child.ready.set()

    async def no_topics(self: Supervisor) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(Supervisor, "spawn", spawn)
    monkeypatch.setattr(Supervisor, "count_topics", no_topics)
    return started


@pytest.fixture
async def demo_signals() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    yield
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


async def test_demo_stops_on_sigterm_while_it_waits_for_pairing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_daemons: list[_FakeDaemon], demo_signals: None
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_daemons: list[_FakeDaemon], demo_signals: None
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
