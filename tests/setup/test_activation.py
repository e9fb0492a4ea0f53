"""Socket activation: the setup daemon serves on a listening socket systemd (or the demo
supervisor) hands it as fd 3, and exits after setup.idle_exit_s without a request or a live
page; the next connection starts it again.

The idle clock is injected (a FakeClock moved by hand) and checked every IDLE_CHECK_S of real
time, so no test waits the idle period out; a test that expects no exit waits for the checks
to have run (IdleExit.checked), not for a time to pass."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from bus.helpers import BrokerProcess, NotifySocket, daemon_env  # tests/bus, a sibling package

from appliance.errors import StateError
from appliance.runtime import listen_fds
from appliance.setup import activation
from appliance.setup.daemon import SetupServer

from .conftest import Rig, Web, csrf_of, first_use, free_port, running

IDLE_CHECK_S = 0.01
IDLE = "idle_exit_s = 60"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def listening(kind: int = socket.SOCK_STREAM, *, listen: bool = True) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if listen:
        sock.listen()
    try:
        yield sock
    finally:
        sock.close()


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def idle_of(server: SetupServer) -> activation.IdleExit:
    assert server.idle is not None, "no idle exit"
    return server.idle


async def checks_pass(idle: activation.IdleExit, count: int = 3) -> None:
    """Wait until the idle check has run `count` more times."""
    async with asyncio.timeout(5):
        for _ in range(count):
            idle.checked.clear()
            await idle.checked.wait()


async def until(idle: activation.IdleExit, cond: Callable[[], bool]) -> None:
    """Wait, check by check, until cond holds."""
    async with asyncio.timeout(5):
        while not cond():
            idle.checked.clear()
            await idle.checked.wait()


async def stopped(rig: Rig) -> None:
    async with asyncio.timeout(5):
        await rig.rt.stopping.wait()


@dataclass
class Activated:
    """The daemon serving on an inherited socket, with an idle exit after 60 s of `clock`."""

    rig: Rig
    clock: FakeClock
    port: int  # the inherited socket's


@pytest.fixture
async def activated(run_dir: Path) -> AsyncIterator[Activated]:
    clock = FakeClock()
    with listening() as sock:
        async with running(
            run_dir, extra=IDLE, fds=[os.dup(sock.fileno())], clock=clock, idle_check_s=IDLE_CHECK_S
        ) as rig:
            yield Activated(rig, clock, port_of(sock))


# --- serving on the inherited socket -------------------------------------------------------------


async def test_serves_on_the_inherited_socket_and_reports_its_address(run_dir: Path) -> None:
    with listening() as sock:
        port = port_of(sock)
        async with running(run_dir, port=port, fds=[os.dup(sock.fileno())]) as rig:
            assert rig.url == f"http://127.0.0.1:{port}"
            assert rig.server.activated
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/login", allow_redirects=False) as r,
            ):
                assert r.status == 303 and r.headers["Location"] == "/first-use"


async def test_a_socket_on_another_port_than_setup_port_is_used_with_a_warning(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configured = free_port()
    with listening() as sock, caplog.at_level(logging.WARNING):
        port = port_of(sock)
        async with running(run_dir, port=configured, fds=[os.dup(sock.fileno())]) as rig:
            assert rig.url == f"http://127.0.0.1:{port}"
            async with (
                aiohttp.ClientSession() as http,
                http.get(rig.url + "/login", allow_redirects=False) as r,
            ):
                assert r.status == 303
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        str(port) in w and str(configured) in w and "systemctl edit appliance-setup.socket" in w
        for w in warnings
    ), warnings


async def test_no_warning_when_the_socket_is_on_setup_port(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with listening() as sock, caplog.at_level(logging.WARNING):
        async with running(run_dir, port=port_of(sock), fds=[os.dup(sock.fileno())]):
            pass
    assert not [r for r in caplog.records if "appliance-setup.socket" in r.getMessage()]


async def test_without_an_inherited_socket_it_binds_setup_port_itself(run_dir: Path) -> None:
    port = free_port()
    async with running(run_dir, port=port, fds=[]) as rig:
        assert rig.url == f"http://127.0.0.1:{port}" and not rig.server.activated
        assert rig.server.idle is None
        async with aiohttp.ClientSession() as http, http.get(rig.url + "/login", allow_redirects=False) as r:
            assert r.status == 303


async def test_two_inherited_sockets_are_refused(run_dir: Path) -> None:
    with listening() as a, listening() as b, pytest.raises(StateError, match=r"2 sockets.*exactly one"):
        async with running(run_dir, fds=[os.dup(a.fileno()), os.dup(b.fileno())]):
            pass


@pytest.mark.parametrize(
    ("kind", "listen", "problem"),
    [
        (socket.SOCK_STREAM, False, "not listening"),
        (socket.SOCK_DGRAM, False, "not a TCP stream socket"),
    ],
)
async def test_an_inherited_socket_that_is_not_a_listening_tcp_socket_is_refused(
    run_dir: Path, kind: int, listen: bool, problem: str
) -> None:
    with listening(kind, listen=listen) as sock, pytest.raises(StateError, match=problem):
        async with running(run_dir, fds=[os.dup(sock.fileno())]):
            pass


async def test_an_inherited_unix_socket_or_file_is_refused(run_dir: Path) -> None:
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(run_dir / "x.sock"))
    unix.listen()
    with unix, pytest.raises(StateError, match="not a TCP stream socket"):
        async with running(run_dir, fds=[os.dup(unix.fileno())]):
            pass
    fd = os.open(run_dir, os.O_RDONLY)  # a directory: an fd, but no socket
    with pytest.raises(StateError, match="not a socket"):
        async with running(run_dir, fds=[fd]):
            pass


def test_listen_fds_reads_the_protocol_and_unsets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert listen_fds() == [3, 4]
    assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))  # meant for another process
    assert listen_fds() == []


# --- idle exit -------------------------------------------------------------------------------------


async def test_exits_cleanly_after_the_idle_period(
    activated: Activated, caplog: pytest.LogCaptureFixture
) -> None:
    rig, clock = activated.rig, activated.clock
    with caplog.at_level(logging.INFO):
        async with (
            aiohttp.ClientSession() as http,
            http.get(rig.url + "/nope", allow_redirects=False) as r,
        ):
            assert r.status in (303, 404)  # a refused request counts as activity too
        clock.now += 59
        await checks_pass(idle_of(rig.server))
        assert not rig.rt.stopping.is_set()
        clock.now += 2
        await stopped(rig)
        assert rig.rt.exit_code == 0
        assert rig.rt._status == "idle for 60 s: exiting; the socket starts it again"
    assert any(r.getMessage() == "idle for 60 s: exiting; the socket starts it again" for r in caplog.records)


async def test_a_request_restarts_the_idle_period(activated: Activated) -> None:
    rig, clock = activated.rig, activated.clock
    clock.now += 50
    async with (
        aiohttp.ClientSession() as http,
        http.get(rig.url + "/login", allow_redirects=False) as r,
    ):
        assert r.status == 303
    clock.now += 50  # 100 s since the start, 50 since the request
    await checks_pass(idle_of(rig.server))
    assert not rig.rt.stopping.is_set()
    clock.now += 11
    await stopped(rig)


async def test_no_idle_exit_while_a_live_page_is_open(activated: Activated) -> None:
    rig, clock = activated.rig, activated.clock
    web = Web(rig.url)
    try:
        await first_use(rig, web)
        ws = await web.session.ws_connect(rig.url + "/ws", headers={"Origin": rig.url})
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "status"
        clock.now += 3600
        await checks_pass(idle_of(rig.server))
        assert not rig.rt.stopping.is_set()
        await ws.close()
        await until(idle_of(rig.server), lambda: not rig.server.ctx.sockets)
        clock.now += 61  # the closing counts as the end of a request
        await stopped(rig)
    finally:
        await web.close()


async def test_no_idle_exit_while_a_request_is_in_flight(activated: Activated) -> None:
    rig, clock = activated.rig, activated.clock
    # A login whose body never comes: the request stays in flight, reading it.
    _, writer = await asyncio.open_connection("127.0.0.1", activated.port)
    writer.write(
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\ncsrf="
    )
    await writer.drain()
    await until(idle_of(rig.server), lambda: rig.server.ctx.activity.in_flight > 0)
    clock.now += 3600
    await checks_pass(idle_of(rig.server))
    assert not rig.rt.stopping.is_set()
    writer.close()
    await writer.wait_closed()
    await until(idle_of(rig.server), lambda: rig.server.ctx.activity.in_flight == 0)
    clock.now += 61
    await stopped(rig)


async def test_no_idle_exit_while_a_setup_code_is_on_the_screen(activated: Activated) -> None:
    """The code lives only in this process: exiting would leave the screen showing a code
    that no longer works."""
    rig, clock = activated.rig, activated.clock
    rig.server.ctx.codes.clock = clock
    rig.server.ctx.codes.issue()
    clock.now += 120
    await checks_pass(idle_of(rig.server))
    assert not rig.rt.stopping.is_set()
    clock.now += 600  # the code has expired
    await stopped(rig)


async def test_no_idle_exit_while_login_failures_are_being_counted(activated: Activated) -> None:
    """The rate limit's counts live only in this process: exiting would give a guesser a fresh
    allowance each idle period."""
    rig, clock = activated.rig, activated.clock
    limiter = rig.server.ctx.limiter
    limiter.clock = clock
    limiter.failed("10.0.0.9")
    clock.now += 120
    await checks_pass(idle_of(rig.server))
    assert not rig.rt.stopping.is_set()
    clock.now += limiter.window_s
    await stopped(rig)


async def test_a_login_outlives_the_idle_exit(run_dir: Path) -> None:
    """Sessions and known devices are written at the idle exit and read back by the next
    start (same boot): the technician who paused is still logged in, with the same cookie."""
    clock = FakeClock()
    with listening() as sock:
        start = {"extra": IDLE, "clock": clock, "idle_check_s": IDLE_CHECK_S}
        web: Web | None = None
        try:
            async with running(run_dir, fds=[os.dup(sock.fileno())], **start) as rig:
                web = Web(rig.url)
                await first_use(rig, web)
                status, html, _ = await web.get("/status")
                assert status == 200
                cookies = {c.key: c.value for c in web.session.cookie_jar}
                clock.now += 61
                await stopped(rig)
                assert rig.rt.exit_code == 0
            store = rig.state_dir / "setup-sessions.json"
            text = store.read_text()
            assert cookies["appliance_setup"] not in text and cookies["appliance_device"] not in text
            async with running(run_dir, fds=[os.dup(sock.fileno())], **start) as again:
                assert again.url == rig.url
                assert not store.exists(), "read once, then deleted"
                status, html_again, _ = await web.get("/status")
                assert status == 200, "still logged in"
                assert csrf_of(html_again) == csrf_of(html), "the same session"
                assert again.server.ctx.devices.key(cookies["appliance_device"]) is not None
        finally:
            if web is not None:
                await web.close()


async def test_no_idle_exit_when_it_bound_its_own_port(run_dir: Path) -> None:
    clock = FakeClock()
    async with running(run_dir, extra=IDLE, fds=[], clock=clock, idle_check_s=IDLE_CHECK_S) as rig:
        # Nothing watches: a daemon that bound its own port would leave nobody listening.
        assert rig.server.idle is None and not rig.server.activated
        assert not any("idle" in t.get_name() for t in rig.rt._tasks)


async def test_idle_exit_0_means_never(run_dir: Path) -> None:
    with listening() as sock:
        async with running(
            run_dir, extra="idle_exit_s = 0", fds=[os.dup(sock.fileno())], idle_check_s=IDLE_CHECK_S
        ) as rig:
            assert rig.server.activated and rig.server.idle is None


# --- the real process, through the real protocol ------------------------------------------------


async def test_socket_activated_process_serves_then_exits_idle(run_dir: Path) -> None:
    """`appliance run setup` with a listening socket on fd 3, LISTEN_FDS=1 and LISTEN_PID its
    own PID, as systemd starts it: it answers on that socket, and after idle_exit_s (10, the
    least) exits with status 0 saying so; the socket, still open here, keeps taking
    connections for the next start."""
    with listening() as sock:
        port = port_of(sock)
        (run_dir / "appliance.toml").write_text(
            f'[bus]\nallowed_groups = []\n\n[setup]\nhost = "127.0.0.1"\nport = {port}\nidle_exit_s = 10\n'
        )
        broker = BrokerProcess(run_dir)
        await broker.start()
        notify = NotifySocket(run_dir / "notify-setup.sock")
        env = daemon_env(run_dir, notify, LISTEN_FDS="1")
        fd = sock.fileno()
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            'LISTEN_PID=$$ exec "$0" "$@"',
            sys.executable,
            "-m",
            "appliance",
            "run",
            "setup",
            env=env,
            pass_fds=(fd, 3),  # close_fds runs after preexec_fn: keep the dup2 target
            preexec_fn=lambda: os.dup2(fd, 3),
        )
        try:
            ready = await notify.expect("READY=1", timeout=30)
            assert f"STATUS=listening on http://127.0.0.1:{port} (socket-activated)" in ready
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/login", allow_redirects=False) as r,
            ):
                assert r.status == 303 and r.headers["Location"] == "/first-use"
            await notify.expect("STATUS=idle for 10 s: exiting; the socket starts it again", timeout=30)
            async with asyncio.timeout(15):
                code = await proc.wait()
            assert code == 0
            # The socket is still ours: a browser's next connection waits in its queue.
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            notify.close()
            await broker.stop()
            broker.notify.close()
