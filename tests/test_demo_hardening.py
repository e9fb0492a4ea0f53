"""The demo supervisor's ways out: a start that fails or is interrupted, ports that are taken,
a work directory it cannot write, and no daemon left running after any of them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_fakes import FakeDaemon, demo_signals, fake_daemons

from appliance.demo import supervisor as sup_mod
from appliance.demo.supervisor import Supervisor

__all__ = ["demo_signals", "fake_daemons"]  # the shared fixtures (demo_fakes), used by name


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_the_report_is_written_when_the_start_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_daemons: list[FakeDaemon], demo_signals: None
) -> None:
    """`--report FILE.json` is what a bench or CI reads: a demo whose start failed (or that was
    interrupted) must still leave one, saying what ran, not leave nothing or an old run's."""
    report = tmp_path / "report.json"
    report.write_text('{"old": true}')

    async def pair_external(self: Supervisor) -> None:
        raise RuntimeError("the room service answered nonsense")

    monkeypatch.setattr(Supervisor, "pair_external", pair_external)
    with pytest.raises(RuntimeError):
        async with asyncio.timeout(5):
            await sup_mod._demo(tmp_path / "work", True, None, str(report), "http://127.0.0.1:9", None)
    summary = json.loads(report.read_text())
    assert "bus" in summary["daemons"] and summary["room"]["kiosk_paired"] is False
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")]  # noqa: ASYNC240 - a test, after the run
    assert leftovers == []


@pytest.mark.parametrize("variable", ["APPLIANCE_DEMO_ROOM_PORT", "APPLIANCE_DEMO_SETUP_PORT"])
async def test_an_asked_for_port_that_is_taken_is_said_plainly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_daemons: list[FakeDaemon],
    demo_signals: None,
    listener: int,
    variable: str,
) -> None:
    """The room or setup port asked for is held by another program: the daemon would crash-loop
    all run (and the kiosk's pairing time out against someone else's server). One line saying
    which port and which variable, before anything starts."""
    monkeypatch.setenv(variable, str(listener))
    async with asyncio.timeout(5):
        code = await sup_mod._demo(tmp_path / "work", True, None, None, None, None)
    assert code == 1
    err = capsys.readouterr().err
    assert str(listener) in err and variable in err and "Traceback" not in err
    assert fake_daemons == []


async def test_a_port_variable_that_is_no_number_is_said_plainly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_daemons: list[FakeDaemon],
    demo_signals: None,
) -> None:
    monkeypatch.setenv("APPLIANCE_DEMO_ROOM_PORT", "eighty")
    async with asyncio.timeout(5):
        code = await sup_mod._demo(tmp_path / "work", True, None, None, None, None)
    assert code == 1
    assert "APPLIANCE_DEMO_ROOM_PORT" in capsys.readouterr().err
    assert fake_daemons == []


async def test_a_work_dir_it_cannot_write_is_said_plainly(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fake_daemons: list[FakeDaemon],
    demo_signals: None,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    async with asyncio.timeout(5):
        code = await sup_mod._demo(blocker / "work", True, None, None, "http://127.0.0.1:9", None)
    assert code == 1
    err = capsys.readouterr().err
    assert str(blocker / "work") in err and "Traceback" not in err
    assert fake_daemons == []


def _demo_processes(workdir: Path) -> set[int]:
    """Every running process started for this demo's work dir (each daemon has it in its
    environment as APPLIANCE_CONFIG), whatever its parent or session."""
    marker = f"APPLIANCE_CONFIG={workdir / 'appliance.toml'}".encode()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in env and state != "Z":
            found.add(int(entry))
    return found


@pytest.mark.parametrize("when", ["starting", "running"])
async def test_no_daemon_outlives_a_sigterm_to_the_demo(tmp_path: Path, when: str) -> None:
    """The real demo, real daemons: SIGTERM to the supervisor while its children are still
    starting, or once all run. Afterwards no process of the demo runs on (children lead
    sessions of their own: nothing but the supervisor ends them), and the report is there."""
    workdir = tmp_path / "work"
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "demo",
        "--headless",
        "--workdir",
        str(workdir),
        "--report",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout is not None
    wanted = "bus ready" if when == "starting" else "Ctrl-C stops everything"
    seen: set[int] = set()
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "the demo ended on its own"
                if wanted in line:
                    break
        seen = _demo_processes(workdir)
        assert seen, "no daemon found running"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    left = _demo_processes(workdir)
    for pid in left:  # a failing test leaves nothing running either
        os.kill(pid, signal.SIGKILL)
    assert left == set(), f"outlived the demo: {sorted(left)} (of {sorted(seen)})"
    assert proc.returncode == 0
    assert json.loads(report.read_text())["daemons"]["bus"]["ready_s"] is not None
