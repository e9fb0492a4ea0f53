"""bench.measure.cpu_seconds: another process's CPU time, to well under a clock tick."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.bench.measure import cpu_seconds


def proc_stat_cpu_seconds(pid: int) -> float:
    """What the benches read before: utime + stime from /proc/PID/stat, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_our_own_cpu_time_to_the_millisecond() -> None:
    before_ours, before = time.process_time(), cpu_seconds(os.getpid())
    spin(0.013)  # not a whole number of 10 ms ticks
    used, ours = cpu_seconds(os.getpid()) - before, time.process_time() - before_ours
    assert used == pytest.approx(ours, abs=0.001)


def test_a_child_process_whole_and_agreeing_with_proc_stat() -> None:
    # Two threads spinning: the process's time is both of theirs.
    code = (
        "import threading, time, sys\n"
        "def spin():\n"
        "    end = time.thread_time() + 0.15\n"
        "    while time.thread_time() < end: pass\n"
        "t = threading.Thread(target=spin); t.start(); spin(); t.join()\n"
        "print('done', flush=True); sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"done\n"
        precise, ticks = cpu_seconds(child.pid), proc_stat_cpu_seconds(child.pid)
        tick = 1 / os.sysconf("SC_CLK_TCK")
        assert precise >= 0.3  # the finished thread's time is kept
        assert abs(precise - ticks) <= 2 * tick
    finally:
        child.communicate(b"")


def test_a_process_that_is_gone_is_an_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(OSError):
        cpu_seconds(child.pid)
    assert not Path(f"/proc/{child.pid}").exists()
