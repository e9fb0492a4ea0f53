"""bench system's figures from /proc samples (the soak itself is tests/test_soak.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from appliance.bench import SUITES
from appliance.bench.system import Sample, daemon_pids, sample_process, soak_figures


def proc(rss: float, fds: int = 10, nonfile: int = 4) -> dict[str, float]:
    return {
        "rss_mb": rss,
        "pss_mb": rss / 2,
        "uss_mb": rss / 3,
        "fds": fds,
        "nonfile_fds": nonfile,
        "threads": 2,
        "cpu_s": 1.0,
    }


def test_growth_per_daemon_and_total_and_a_restart_is_no_figure() -> None:
    samples = [
        Sample(
            float(t),
            {"bus": 1, "camera": 2, "room": 3},
            {"bus": proc(40), "camera": proc(b), "room": proc(50)},
        )
        for t, b in enumerate([100, 100, 100, 101, 102, 104, 104, 104])
    ]
    samples[-1].procs["bus"] = proc(40, fds=12, nonfile=5)
    samples[4].pids["room"] = 9  # restarted in between
    fig = soak_figures(samples, ["bus", "camera", "room"])
    assert fig["soak_rss_growth_pct_per_daemon"] == {"bus": 0.0, "camera": 4.0, "room": None}
    assert fig["soak_fd_growth_per_daemon"] == {"bus": 2, "camera": 0, "room": None}
    assert fig["soak_nonfile_fd_growth_per_daemon"] == {"bus": 1, "camera": 0, "room": None}
    assert fig["soak_rss_growth_pct"] == round(4 / 140 * 100, 2)  # the room is not the kiosk's
    assert fig["soak_fd_growth"] == 2


def test_children_found_by_parent_and_daemon_name() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; time.sleep(30)", "-m", "appliance", "run", "thermal"]
    )
    try:
        # Right after fork the child still has our command line, then execs the interpreter and
        # loads it: wait for both before looking.
        deadline = time.monotonic() + 20
        pids = daemon_pids(os.getpid())
        while pids.get("thermal") != child.pid and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = daemon_pids(os.getpid())
        assert pids.get("thermal") == child.pid
        got = sample_process(child.pid)
        while got is not None and got["rss_mb"] <= 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            got = sample_process(child.pid)
        assert got is not None and got["rss_mb"] > 1 and got["threads"] >= 1
        assert got["fds"] >= 3 and got["nonfile_fds"] >= 0
    finally:
        child.kill()
        child.wait()
    assert sample_process(child.pid) is None


def test_registered() -> None:
    assert SUITES["system"] == "appliance.bench.system:bench_system"
