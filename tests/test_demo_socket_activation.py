"""The demo's setup page is socket-activated, as appliance-setup.socket does it on a kiosk: the
supervisor holds the listening socket, starts the setup daemon on the first connection (the
socket as fd 3, LISTEN_FDS=1, LISTEN_PID its own pid), and after its idle exit (status 0) waits
for the next connection. The setup daemon here is a stand-in (FAKE_SETUP) that checks what it
was given, answers one connection and exits like the real one does when idle."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.demo import supervisor as sup_mod
from appliance.demo.supervisor import Child, Supervisor

# Checks the sd_listen_fds protocol, accepts one connection from the inherited socket, answers
# "ok" (or what was wrong) and exits 0. With a file named by argv[1] present, the first start
# removes it and crashes (exit 1) before accepting: the connection stays queued.
FAKE_SETUP = r"""
import os, socket, sys
crash = sys.argv[1]
if os.path.exists(crash):
    os.unlink(crash)
    sys.exit(1)
wrong = []
if os.environ.get("LISTEN_PID") != str(os.getpid()):
    wrong.append(f"LISTEN_PID={os.environ.get('LISTEN_PID')} pid={os.getpid()}")
if os.environ.get("LISTEN_FDS") != "1":
    wrong.append(f"LISTEN_FDS={os.environ.get('LISTEN_FDS')}")
if os.environ.get("LISTEN_FDNAMES") != "setup":
    wrong.append(f"LISTEN_FDNAMES={os.environ.get('LISTEN_FDNAMES')}")
listener = socket.socket(fileno=3)
if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
    wrong.append("fd 3 is not listening")
notify = os.environ.get("NOTIFY_SOCKET")
if notify:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
        n.sendto(b"READY=1", notify)
conn, _ = listener.accept()
with conn:
    conn.sendall(("ok" if not wrong else "wrong: " + "; ".join(wrong)).encode() + b"\n")
sys.exit(0)
"""


@pytest.fixture
async def setup_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Supervisor]:
    """A demo of the setup page alone, its daemon the stand-in, started and stopped."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("APPLIANCE_DEMO_SETUP_PORT", str(port))
    monkeypatch.setattr(sup_mod, "RESTART_DELAY_S", 0.0)
    crash = tmp_path / "crash-first"

    def argv(self: Supervisor, child: Child) -> list[str]:
        return [sys.executable, "-c", FAKE_SETUP, str(crash)]

    monkeypatch.setattr(Supervisor, "argv", argv)
    sup = Supervisor(tmp_path / "work", ["setup"], headless=True)
    sup.prepare()
    try:
        await sup.start()
        yield sup
    finally:
        await sup.stop()


async def visit(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(20):
            return (await reader.readline()).decode().strip()
    finally:
        writer.close()


async def exited(child: Child) -> None:
    """Until the child's current process has ended and the supervisor has seen it."""
    async with asyncio.timeout(20):
        while child.proc is None or child.proc.returncode is None:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.02)


async def test_setup_starts_on_the_first_connection_not_before(setup_demo: Supervisor) -> None:
    child = setup_demo.children["setup"]
    assert child.proc is None and child.activations == 0  # nobody visited: nothing runs
    assert setup_demo.report()["daemons"]["setup"]["ready_s"] is None
    assert await visit(setup_demo.setup_port) == "ok"  # the protocol as the daemon checks it
    assert child.activations == 1 and child.proc is not None
    await exited(child)
    report = setup_demo.report()["daemons"]["setup"]
    assert report["socket_activated"] is True and report["activations"] == 1
    assert report["ready_s"] is not None and report["restarts"] == 0


async def test_after_its_idle_exit_the_next_connection_starts_it_again(setup_demo: Supervisor) -> None:
    child = setup_demo.children["setup"]
    assert await visit(setup_demo.setup_port) == "ok"
    await exited(child)
    first = child.proc
    assert await visit(setup_demo.setup_port) == "ok"
    assert child.proc is not first
    await exited(child)
    report = setup_demo.report()["daemons"]["setup"]
    assert report["activations"] == 2
    assert report["restarts"] == 0 and report["exit_codes"] == []  # an idle exit is no crash
    assert len(report["ready_s_all"]) == 2


async def test_a_crashed_setup_is_restarted_and_the_queued_visit_answered(
    setup_demo: Supervisor, tmp_path: Path
) -> None:
    (tmp_path / "crash-first").write_text("")
    child = setup_demo.children["setup"]
    # The first process exits 1 without accepting; the socket is still held, so the connection
    # waits in its backlog for the restarted daemon.
    assert await visit(setup_demo.setup_port) == "ok"
    await exited(child)
    report = setup_demo.report()["daemons"]["setup"]
    assert report["restarts"] == 1 and report["exit_codes"] == [1]
    assert report["activations"] == 1


async def test_the_socket_is_closed_when_the_demo_stops(setup_demo: Supervisor) -> None:
    await setup_demo.stop()
    with pytest.raises(ConnectionRefusedError):
        await visit(setup_demo.setup_port)


async def test_other_daemons_report_no_socket_activation(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "work", ["bus", "setup"], headless=True)
    daemons = sup.report()["daemons"]
    assert "socket_activated" not in daemons["bus"]
    assert daemons["setup"]["socket_activated"] is True and daemons["setup"]["activations"] == 0
    assert "starts on the first visit" in "\n".join(sup.urls())


def test_a_setup_port_it_cannot_listen_on_is_said_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        monkeypatch.setattr(sup_mod, "setup_port", lambda: port)  # free when asked, taken since
        sup = Supervisor(tmp_path / "work", ["setup"], headless=True)
        with pytest.raises(sup_mod.DemoStartError, match=str(port)):
            sup.prepare()
