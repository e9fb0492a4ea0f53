"""The kernel's NTP status (adjtimex(2), read-only), on this machine and with a faked call."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import pytest

from appliance import clocksync


def test_it_answers_on_this_machine_without_raising() -> None:
    # adjtimex with modes 0 needs no privilege; a sandbox that filters it out gets None.
    got = clocksync.wall_clock_synchronized()
    assert got is None or isinstance(got, bool)


NO_FLAG = Path("/nonexistent/timesync/synchronized")


def _fake(state: int, status: int = 0) -> Any:
    def adjtimex(buf: clocksync.Timex) -> int:
        assert buf.modes == 0  # read-only: never sets anything
        buf.status = status
        return state

    return adjtimex


@pytest.mark.parametrize(
    ("state", "status", "expected"),
    [
        (clocksync.TIME_OK, 0, True),
        (clocksync.TIME_ERROR, clocksync.STA_UNSYNC, False),
        (clocksync.TIME_ERROR, 0, False),  # a clock error: not to be trusted either
        (clocksync.TIME_OK, clocksync.STA_UNSYNC, False),
        (1, 0x2001, True),  # TIME_INS (a leap second announced), STA_PLL | STA_INS: synced
        (-1, 0, None),  # the call failed
    ],
)
def test_the_state_and_the_unsync_flag_decide(
    monkeypatch: pytest.MonkeyPatch, state: int, status: int, expected: bool | None
) -> None:
    monkeypatch.setattr(clocksync, "_adjtimex", _fake(state, status))
    monkeypatch.setattr(clocksync.sys, "platform", "linux")
    assert clocksync.wall_clock_synchronized(NO_FLAG) is expected


def test_a_call_that_raises_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(buf: clocksync.Timex) -> int:
        raise OSError("no adjtimex in this libc")

    monkeypatch.setattr(clocksync, "_adjtimex", broken)
    monkeypatch.setattr(clocksync.sys, "platform", "linux")
    assert clocksync.wall_clock_synchronized(NO_FLAG) is None


@pytest.mark.parametrize("state", [-1, clocksync.TIME_ERROR])
def test_timesyncds_flag_file_says_synchronized(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, state: int
) -> None:
    # Under the kiosk's units adjtimex fails with EPERM (ProtectClock=yes), and a kernel status
    # may lag: the file timesyncd touches after a sync in this boot settles it.
    monkeypatch.setattr(clocksync, "_adjtimex", _fake(state, clocksync.STA_UNSYNC))
    monkeypatch.setattr(clocksync.sys, "platform", "linux")
    flag = tmp_path / "synchronized"
    assert clocksync.wall_clock_synchronized(flag) is (None if state == -1 else False)
    flag.touch()
    assert clocksync.wall_clock_synchronized(flag) is True


def test_not_linux_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clocksync, "_adjtimex", _fake(clocksync.TIME_OK))
    monkeypatch.setattr(clocksync.sys, "platform", "darwin")
    assert clocksync.wall_clock_synchronized(NO_FLAG) is None


def test_the_struct_matches_the_kernels_layout() -> None:
    # <sys/timex.h>: unsigned int modes; long offset, freq, maxerror, esterror; int status; ...
    # so status sits after the padding of modes and four longs (40 on 64-bit, 20 on 32-bit).
    long = ctypes.sizeof(ctypes.c_long)
    assert clocksync.Timex.status.offset == max(ctypes.sizeof(ctypes.c_uint), long) + 4 * long  # type: ignore[attr-defined]
    assert ctypes.sizeof(clocksync.Timex) >= 256  # room for the whole kernel struct (208 bytes on 64-bit)
