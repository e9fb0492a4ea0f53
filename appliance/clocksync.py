"""Whether the kernel considers the wall clock synchronized (by NTP), for decisions that must
not trust a wall clock nothing has confirmed: a Raspberry Pi has no real-time clock, and may
boot on a time that is wrong by anything, also ahead.

The source is the kernel's NTP status, read with adjtimex(2) with ``modes`` = 0 (read-only, no
privilege needed, also in a container): the same as timedatectl's "System clock synchronized".
systemd-timesyncd, chrony (with ``rtcsync``) and ntpd clear ``STA_UNSYNC`` when they have
synced the clock; the kernel sets it again when nothing has disciplined the clock for hours
(its maximum error passed 16 s). adjtimex returns the clock state, ``TIME_ERROR`` when the
clock is unsynchronized (or has a clock error). Both are checked, so a clock is synchronized
only if neither says otherwise. (chrony without ``rtcsync`` leaves ``STA_UNSYNC`` set while it
is synced, to keep the kernel from writing the RTC: such a clock reads as unsynchronized,
which is the safe side here.)

The kiosk's units are hardened with ProtectClock=yes and a system-call filter without @clock,
so there adjtimex fails with EPERM (SystemCallErrorNumber=EPERM). The other source is the flag
file systemd-timesyncd (Raspberry Pi OS's NTP client) touches after each successful sync,
/run/systemd/timesync/synchronized: /run is emptied at boot, so the file says the clock was
confirmed in this boot (what systemd-time-wait-sync.service waits for). It is readable inside
those units. Either source saying synchronized is enough.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

TIME_OK: Final = 0
TIME_ERROR: Final = 5
STA_UNSYNC: Final = 0x0040
TIMESYNC_FLAG: Final = Path("/run/systemd/timesync/synchronized")


class Timex(ctypes.Structure):
    """struct timex of <sys/timex.h>: its first fields, declared so that ctypes lays them out
    as the C compiler does (``status`` at 40 on 64-bit Linux, 20 on 32-bit), then room for the
    rest (208 bytes in all on 64-bit), which the kernel fills in and nothing here reads."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_char * 256),
    )


@functools.cache
def _libc_adjtimex() -> Callable[..., int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.adjtimex  # AttributeError where libc has none
    fn.argtypes = (ctypes.POINTER(Timex),)
    fn.restype = ctypes.c_int
    return fn


def _adjtimex(buf: Timex) -> int:
    """adjtimex(2) on ``buf``, as libc's: the clock state, or -1 (errno) on failure."""
    return int(_libc_adjtimex()(ctypes.byref(buf)))


def wall_clock_synchronized(flag: Path = TIMESYNC_FLAG) -> bool | None:
    """True when timesyncd's flag file exists or the kernel says the wall clock is
    synchronized, False when the kernel says it is not, None when it cannot tell (not Linux,
    no adjtimex, the call failing or filtered). Never raises."""
    if sys.platform != "linux":
        return None
    try:
        if flag.exists():
            return True
    except OSError:
        pass  # unreadable /run/systemd: the kernel's word then
    buf = Timex()  # zeroed: modes = 0 reads and changes nothing
    try:
        state = _adjtimex(buf)
    except (OSError, AttributeError, TypeError, ValueError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR and not buf.status & STA_UNSYNC
