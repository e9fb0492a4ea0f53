"""Small measurement helpers the benchmark suites share."""

from __future__ import annotations

import time

_CPUCLOCK_SCHED = 2  # <linux/posix-timers.h>: a CPU clock counting the scheduler's runtime


def cpu_seconds(pid: int) -> float:
    """The CPU time of a whole process so far (user and system, every thread, the finished ones
    included), in seconds, to the nanosecond: the kernel's process CPU clock, the one
    clock_getcpuclockid(3) names (its id is the process's, as glibc makes it). OSError once the
    process is gone.

    Why not /proc/PID/stat: its utime and stime come in clock ticks (10 ms). The publisher runs
    at about 2 % of a core, so a 15 s window holds 300 ms of its CPU, and the rounding at each
    end alone moved a window's figure by up to 4 % (the video bench's 4:1 ratio by up to 0.07)."""
    return time.clock_gettime_ns(((~pid) << 3) | _CPUCLOCK_SCHED) / 1e9


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values by the nearest rank below: no interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
