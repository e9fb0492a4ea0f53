"""The daemon runtime: systemd notifications, the watchdog interval, stop and failure paths."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.bus.topics import Health
from appliance.config import AppConfig, replace
from appliance.errors import SensorFault
from appliance.runtime import Runtime, _amain, notify, watchdog_interval


@pytest.fixture
def notify_socket(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    path = tmp_path_factory.mktemp("notify") / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("200000", None, 0.1),
        ("200000", "own", 0.1),
        ("200000", "1", None),  # the watchdog is meant for another process
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "own" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert watchdog_interval() == expected


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_notify_reaches_the_socket(notify_socket: socket.socket) -> None:
    assert notify("STATUS=hello") is True
    assert received(notify_socket) == ["STATUS=hello"]


async def test_sigterm_stops_cleanly(notify_socket: socket.socket) -> None:
    stopped: list[str] = []

    async def main(rt: Runtime) -> None:
        async def forever() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                stopped.append("task")

        rt.spawn(forever(), "forever")
        rt.stack.callback(stopped.append, "stack")
        rt.ready("up")
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)

    assert await _amain("unit", main, AppConfig()) == 0
    assert stopped == ["task", "stack"]  # tasks cancelled first, then parts unwound
    assert received(notify_socket) == ["READY=1\nSTATUS=up", "STOPPING=1"]


async def test_failing_critical_task_exits_1(notify_socket: socket.socket) -> None:
    async def main(rt: Runtime) -> None:
        async def crash() -> None:
            raise SensorFault("i2c bus gone")

        rt.spawn(crash(), "sample")

    assert await _amain("unit", main, AppConfig()) == 1
    assert received(notify_socket) == ["READY=1", "STOPPING=1"]


async def test_startup_error_exits_1_with_status(notify_socket: socket.socket) -> None:
    async def main(rt: Runtime) -> None:
        raise SensorFault("no AMG8833 at 0x69")

    assert await _amain("unit", main, AppConfig()) == 1
    assert received(notify_socket) == ["STATUS=failed: no AMG8833 at 0x69"]


async def test_health_follows_status_changes(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("rt") / "bus.sock"
    broker = Broker()
    await broker.start(path)
    config = replace(AppConfig(), bus={"socket": path})
    rt = Runtime("unit", config)
    try:
        async with BusClient(path, "observer") as observer:
            health = observer.subscribe("health.unit")
            await rt.connect_bus()

            async def next_state() -> tuple[str, str]:
                msg = (await health.get(5)).msg
                assert isinstance(msg, Health) and msg.daemon == "unit" and msg.pid == os.getpid()
                return msg.state, msg.status

            assert await next_state() == ("starting", "")
            rt.ready("10 fps")
            assert await next_state() == ("ready", "10 fps")
            rt.status("10 fps", degraded=True)  # same text, new state: still published
            assert await next_state() == ("degraded", "10 fps")
            rt.status("10 fps", degraded=True)  # no change: nothing published
            rt.status("1 fps")
            assert await next_state() == ("ready", "1 fps")
    finally:
        await rt.stack.aclose()
        await broker.close()


def test_setup_logging_level_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import logging

    from appliance.runtime import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.setenv("APPLIANCE_LOG_LEVEL", "debug")
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    try:
        setup_logging("unit")
        assert root.level == logging.DEBUG
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_a_notify_socket_that_went_away_does_not_fail_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from appliance import runtime

    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert runtime.notify("READY=1") is True
    assert listener.recv(64) == b"READY=1"
    listener.close()
    path.unlink()
    assert runtime.notify("WATCHDOG=1") is False  # no exception: the daemon carries on


async def test_health_heartbeat_carries_the_task_count(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("appliance.runtime.HEALTH_HEARTBEAT_S", 0.1)
    path = tmp_path_factory.mktemp("rt") / "bus.sock"
    broker = Broker()
    await broker.start(path)
    config = replace(AppConfig(), bus={"socket": path})
    release = asyncio.Event()

    async def main(rt: Runtime) -> None:
        await rt.connect_bus()
        for i in range(5):
            rt.spawn(release.wait(), f"waiter-{i}")
        rt.ready("up")

    try:
        async with BusClient(path, "observer") as observer:
            health = observer.subscribe("health.unit")
            daemon = asyncio.create_task(_amain("unit", main, config))
            counts = []
            while len(counts) < 3:
                msg = (await health.get(5)).msg
                assert isinstance(msg, Health)
                if msg.state == "ready":
                    counts.append(msg.tasks)
            # The heartbeat repeats the state it had (no new status) with the live task count:
            # this test's own tasks, the daemon's five waiters and its heartbeat at least.
            assert min(counts) >= 5 + 1
            release.set()  # the waiters end: critical tasks ending stop the daemon with code 1
            assert await daemon == 1
    finally:
        await broker.close()


async def test_a_status_of_several_lines_is_one_status(notify_socket: socket.socket) -> None:
    """sd_notify takes one VAR=value a line: a status holding an error message of several lines
    would show only its first, and a line of it could be read as another variable (READY=1,
    WATCHDOG=1: a wedged daemon fed by its own error text)."""

    async def main(rt: Runtime) -> None:
        rt.ready("camera fault: ioctl failed\nWATCHDOG=1")
        rt.status("line one\r\nline two")
        raise SensorFault("no AMG8833\nREADY=1")

    assert await _amain("unit", main, AppConfig()) == 1
    assert received(notify_socket) == [
        "READY=1\nSTATUS=camera fault: ioctl failed WATCHDOG=1",
        "STATUS=line one line two",
        "STATUS=failed: no AMG8833 READY=1",
    ]


async def test_sigterm_during_start_stops_the_daemon(notify_socket: socket.socket) -> None:
    """SIGTERM while main() still waits for something (the bus, a device) stops the daemon
    at once: it does not wait for a start that may never finish."""
    stopped: list[str] = []

    async def main(rt: Runtime) -> None:
        rt.stack.callback(stopped.append, "stack")
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        try:
            await asyncio.Event().wait()  # a start that never completes
        finally:
            stopped.append("main")

    async with asyncio.timeout(5):
        assert await _amain("unit", main, AppConfig()) == 0
    assert stopped == ["main", "stack"]
    assert "READY=1" not in received(notify_socket)


async def test_critical_task_failing_during_start_stops_the_daemon(notify_socket: socket.socket) -> None:
    async def main(rt: Runtime) -> None:
        async def crash() -> None:
            raise SensorFault("i2c bus gone")

        rt.spawn(crash(), "sample")
        await asyncio.Event().wait()  # main waits on something the dead task would have given

    async with asyncio.timeout(5):
        assert await _amain("unit", main, AppConfig()) == 1


async def test_startup_error_cancels_spawned_tasks_before_unwinding(notify_socket: socket.socket) -> None:
    """A start that fails after spawning tasks: the tasks stop before the parts they use are
    closed, and none outlives the daemon."""
    order: list[str] = []
    spawned: list[asyncio.Task[None]] = []

    async def main(rt: Runtime) -> None:
        async def forever() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                order.append("task")

        rt.stack.callback(order.append, "stack")
        spawned.append(rt.spawn(forever(), "forever"))
        await asyncio.sleep(0)  # the task starts
        raise SensorFault("no AMG8833 at 0x69")

    assert await _amain("unit", main, AppConfig()) == 1
    assert spawned[0].done()
    assert order == ["task", "stack"]


async def test_ready_keeps_a_degraded_state(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The camera's start: degraded before ready, then ready and degraded with the same text.
    health.<daemon> must say degraded, not ready."""
    path = tmp_path_factory.mktemp("rt") / "bus.sock"
    broker = Broker()
    await broker.start(path)
    rt = Runtime("unit", replace(AppConfig(), bus={"socket": path}))
    try:
        async with BusClient(path, "observer") as observer:
            health = observer.subscribe("health.unit")
            await rt.connect_bus()
            rt.status("camera absent: no device", degraded=True)
            rt.ready("camera absent: no device")
            rt.status("camera absent: no device", degraded=True)
            rt._publish_health()  # a heartbeat
            states = []
            while len(states) < 4:
                msg = (await health.get(5)).msg
                assert isinstance(msg, Health)
                states.append(msg.state)
            assert states[0] == "starting"
            assert states[-1] == "degraded"
    finally:
        await rt.stack.aclose()
        await broker.close()


STUCK_THREAD_DAEMON = """
import asyncio, os, signal, sys, threading
from appliance.config import AppConfig
from appliance.runtime import run_daemon

async def main(rt):
    # A driver call that never returns (an I2C transfer, a camera start), on a worker thread.
    asyncio.get_running_loop().run_in_executor(None, threading.Event().wait)
    rt.ready("up")
    asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)

sys.exit(run_daemon("unit", main, AppConfig()))
"""


def test_a_stuck_worker_thread_does_not_hold_the_daemon_after_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncio.run and the interpreter wait for executor threads at exit: one stuck in a driver
    call would keep a stopped daemon alive until systemd's SIGKILL (forever without systemd)."""
    import subprocess
    import sys

    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "INVOCATION_ID", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    # Generous: the daemon gives its threads a couple of seconds; the stuck one never ends.
    done = subprocess.run(
        [sys.executable, "-c", STUCK_THREAD_DAEMON], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "still running" in done.stderr


LISTEN_FDS_DAEMON = """
import ctypes, json, os, socket, subprocess, sys
from appliance.runtime import listen_fds

fds = listen_fds()
sock = socket.socket(fileno=fds[0]) if fds else None
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
names = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
child = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
print(json.dumps({
    "fds": fds,
    "listening": bool(sock and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)),
    "port": sock.getsockname()[1] if sock else None,
    "os_environ": [n for n in names if n in os.environ],
    "c_environ": [n for n in names if libc.getenv(n.encode())],
    "child": [n for n in names if any(line.startswith(n + "=") for line in child.splitlines())],
}))
"""


def test_listen_fds_takes_the_passed_socket_and_hides_it_from_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sd_listen_fds protocol as systemd (and the demo) speak it: a listening socket on
    fd 3, LISTEN_FDS=1, LISTEN_PID the daemon's own pid. listen_fds() returns [3] and unsets
    LISTEN_* in the C environment and in os.environ, so nothing the daemon starts inherits it."""
    import json
    import subprocess
    import sys

    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        fd = sock.fileno()
        done = subprocess.run(
            ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', sys.executable, "-c", LISTEN_FDS_DAEMON],
            env={**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "test"},
            pass_fds=(fd, 3),  # close_fds runs after preexec_fn: keep the dup2 target
            preexec_fn=lambda: os.dup2(fd, 3),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert seen["fds"] == [3]
        assert seen["listening"] and seen["port"] == sock.getsockname()[1]
        assert seen["os_environ"] == [] and seen["c_environ"] == [] and seen["child"] == []
