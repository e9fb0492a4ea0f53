"""Stand-ins for the demo supervisor's tests: daemons that are never spawned, and the signal
handlers `_demo` installs taken down again (shared by tests/test_supervisor_lifecycle.py and
tests/test_demo_hardening.py; import the fixtures by name)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import pytest

from appliance.demo.supervisor import Child, Supervisor


class FakeDaemon:
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
def fake_daemons(monkeypatch: pytest.MonkeyPatch) -> list[FakeDaemon]:
    """Supervisor.spawn makes a FakeDaemon, READY at once; no bus topics are counted."""
    started: list[FakeDaemon] = []

    async def spawn(self: Supervisor, child: Child) -> None:
        child.proc = FakeDaemon()  # type: ignore[assignment]
        started.append(child.proc)  # type: ignore[arg-type]
        child.last_ping = time.monotonic()
        child.ready.set()

    async def no_topics(self: Supervisor) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(Supervisor, "spawn", spawn)
    monkeypatch.setattr(Supervisor, "count_topics", no_topics)
    return started


@pytest.fixture
async def demo_signals() -> AsyncIterator[None]:
    """Removes the signal handlers `_demo` installs, so the next test's loop starts clean."""
    loop = asyncio.get_running_loop()
    yield
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.remove_signal_handler(sig)
