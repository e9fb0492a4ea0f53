"""The `appliance` command as a user runs it: a real subprocess each time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import __version__


def appliance(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_version() -> None:
    out = appliance("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"appliance {__version__}"


def test_output_into_a_closed_pipe_is_no_traceback() -> None:
    """`appliance doctor | head -1`: the reader leaves before the command is done writing."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "doctor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # nobody reads: the first write gets EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_run_unknown_daemon_is_a_clear_error() -> None:
    out = appliance("run", "toaster")
    assert out.returncode == 2
    assert "no daemon named 'toaster'" in out.stderr


def test_run_with_bad_config_exits_non_zero_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "appliance.toml"
    bad.write_text('[bus]\nmax_frame_bytes = "huge"\n')
    out = appliance("run", "bus", "--config", str(bad))
    assert out.returncode == 1
    assert str(bad) in out.stderr
    assert "bus.max_frame_bytes" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_demo_headless_report(tmp_path: Path) -> None:
    report = tmp_path / "demo.json"
    out = appliance(
        "demo",
        "--headless",
        "--for",
        "4",
        "--report",
        str(report),
        "--workdir",
        str(tmp_path / "work"),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(report.read_text())
    bus = summary["daemons"]["bus"]
    assert bus["ready_s"] is not None and bus["ready_s"] > 0
    assert bus["restarts"] == 0
    assert summary["duration_s"] >= 4
    # Every daemon that runs publishes its health on the bus; the demo counted them. The setup
    # page's daemon is socket-activated: nobody visited it, so it never ran.
    assert summary["daemons"]["setup"]["socket_activated"] is True
    assert summary["daemons"]["setup"]["activations"] == 0
    assert summary["daemons"]["setup"]["ready_s"] is None
    for name, info in summary["daemons"].items():
        if name != "bus" and not info.get("socket_activated"):
            assert info["ready_s"] is not None, f"{name} never became ready"
            assert summary["topics"].get(f"health.{name}", 0) >= 1


@pytest.mark.slow
def test_demo_restarts_a_killed_daemon(tmp_path: Path) -> None:
    import os
    import signal
    import time

    work = tmp_path / "work"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "demo",
            "--headless",
            "--for",
            "8",
            "--workdir",
            str(work),
            "--report",
            str(tmp_path / "r.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sock = work / "run" / "bus.sock"
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists()
        time.sleep(1.0)
        # Find the bus daemon's pid from the demo's own bookkeeping: the broker's socket peer.
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        bus_pids = []
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if b"run" in cmd and b"bus" in cmd and str(work).encode() in environ:
                bus_pids.append(int(pid))
        assert len(bus_pids) == 1
        os.kill(bus_pids[0], signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["daemons"]["bus"]["restarts"] == 1
    assert summary["daemons"]["bus"]["exit_codes"] == [-9]
    assert len(summary["daemons"]["bus"]["ready_s_all"]) == 2


@pytest.mark.slow
def test_bench_bus_quick_reports_every_key() -> None:
    out = appliance("bench", "bus", "--json", "--quick", timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in (
        "throughput_msgs_per_s",
        "rtt_p50_ms",
        "rtt_p99_ms",
        "baseline_throughput_msgs_per_s",
        "baseline_rtt_p50_ms",
        "baseline_rtt_p99_ms",
        "throughput_vs_baseline",
    ):
        assert isinstance(result[key], int | float) and result[key] > 0, key
    assert result["rtt_p50_ms"] <= result["rtt_p99_ms"]
    # Every subscriber received something, and nothing more than was sent.
    assert all(0 < n <= result["messages"] for n in result["received_per_subscriber"])
