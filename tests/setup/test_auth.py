"""The pure access parts: password policy and hash, the first-use code, limits, sessions."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from appliance.clientkey import client_key
from appliance.errors import StateError
from appliance.setup import auth
from appliance.setup.auth import PasswordStore, RateLimiter, Sessions, SetupCodes, csrf_ok, password_problem


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_password_policy() -> None:
    assert password_problem("abcdefghij", "abcdefghik") == "the two passwords differ"
    assert "at least 10" in (password_problem("short", "short") or "")
    assert "5 different" in (password_problem("aaaaabbbbb", "aaaaabbbbb") or "")
    assert password_problem("x" * 300, "x" * 300) is not None
    assert password_problem("kiosk-door-7", "kiosk-door-7") is None


def test_password_is_stored_hashed_0600_and_checked(tmp_path: Path) -> None:
    store = PasswordStore(tmp_path)
    assert not store.is_set()
    store.set("kiosk-door-7")
    assert store.is_set()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    text = store.path.read_text()
    assert "kiosk-door-7" not in text
    record = json.loads(text)
    assert record["scheme"] == "scrypt" and record["n"] >= 2**15
    assert store.check("kiosk-door-7")
    assert not store.check("kiosk-door-8")
    assert not store.check("")
    # Two hashes of one password differ (salted).
    other = PasswordStore(tmp_path / "b")
    other.set("kiosk-door-7")
    assert json.loads(other.path.read_text())["hash"] != record["hash"]


def test_a_damaged_password_file_locks_rather_than_reopens_first_use(tmp_path: Path) -> None:
    store = PasswordStore(tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(StateError, match="damaged"):
        store.is_set()
    store.path.write_text(
        json.dumps({"version": 1, "scheme": "md5", "salt": "", "hash": "", "n": 1, "r": 1, "p": 1})
    )
    with pytest.raises(StateError, match="damaged"):
        store.check("anything at all")


def test_setup_code_is_six_digits_single_use_and_expires() -> None:
    clock = Clock()
    wall = Clock(1.7e9)
    codes = SetupCodes(clock=clock, wall=wall)
    assert codes.current() is None and not codes.check("000000")
    code, expires = codes.issue()
    # The expiry it gives (for the kiosk's screen) is wall time; it expires by the monotonic clock.
    assert len(code) == 6 and code.isdigit() and expires == wall.t + auth.CODE_TTL_S
    assert codes.seconds_left() == auth.CODE_TTL_S
    assert codes.issue() == (code, expires), "asking again shows the same code"
    assert codes.check(f" {code} ")
    assert codes.current() is None and not codes.check(code), "used up"
    code, _ = codes.issue()
    clock.t += auth.CODE_TTL_S
    assert not codes.check(code), "expired"


def test_setup_code_expiry_ignores_wall_clock_jumps() -> None:
    """A Pi has no RTC: NTP's first sync moves the wall clock, often by months. A code shown
    just before must neither die at once nor live on; the expiry it reports follows the clock."""
    clock, wall = Clock(), Clock(1.0e9)  # booted with the clock of the last shutdown
    codes = SetupCodes(clock=clock, wall=wall)
    code, expires = codes.issue()
    clock.t += 10
    wall.t += 10 + 90 * 86400.0  # NTP syncs: three months later
    live = codes.current()
    assert live is not None and live[0] == code, "still valid after the clock jumped forward"
    assert live[1] == pytest.approx(wall.t + auth.CODE_TTL_S - 10), "the screen's expiry follows"
    wall.t -= 365 * 86400.0  # and back a year
    clock.t += auth.CODE_TTL_S - 10
    assert codes.current() is None and not codes.check(code), "expired after CODE_TTL_S all the same"
    assert expires == 1.0e9 + auth.CODE_TTL_S


def test_setup_code_dies_after_wrong_tries() -> None:
    codes = SetupCodes(clock=Clock())
    code, _ = codes.issue()
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(auth.CODE_ATTEMPTS):
        assert not codes.check(wrong)
    assert codes.current() is None
    assert not codes.check(code)


def test_rate_limiter_per_client_and_overall() -> None:
    clock = Clock()
    limiter = RateLimiter(per_client=3, overall=5, window_s=60.0, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("a") == 0
        limiter.failed("a")
    assert limiter.retry_after("a") == pytest.approx(60.0)
    assert limiter.retry_after("b") == 0
    limiter.failed("b")
    limiter.failed("c")
    # Five failures overall: everyone waits, even a new client (a distributed guess).
    assert limiter.retry_after("d") > 0
    clock.t += 61
    assert limiter.retry_after("a") == 0 and limiter.retry_after("d") == 0
    limiter.failed("a")
    limiter.succeeded("a")
    assert limiter.retry_after("a") == 0


def test_sessions_expire_and_floods_evict_anonymous_first() -> None:
    clock = Clock()
    sessions = Sessions(clock=clock)
    token, session = sessions.new(authenticated=True)
    assert sessions.get(token) is session
    assert sessions.get("nope") is None and sessions.get(None) is None
    clock.t += auth.SESSION_IDLE_S - 1
    assert sessions.get(token) is session  # seen: the idle clock restarts
    clock.t += auth.SESSION_IDLE_S + 1
    assert sessions.get(token) is None
    token, _ = sessions.new(authenticated=True)
    for _ in range(auth.MAX_SESSIONS + 10):
        sessions.new()
    assert len(sessions) == auth.MAX_SESSIONS
    assert sessions.get(token) is not None, "a visitor flood must not log the technician out"
    for _ in range(int(auth.SESSION_MAX_S // (auth.SESSION_IDLE_S - 10)) + 1):
        clock.t += auth.SESSION_IDLE_S - 10
        sessions.get(token)
    assert sessions.get(token) is None, "absolute lifetime"


def test_csrf_check() -> None:
    _, session = Sessions().new()
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, session.csrf + "x")
    assert not csrf_ok(session, None) and not csrf_ok(session, "")
    assert not csrf_ok(None, session.csrf)


def test_csrf_check_with_a_non_ascii_token_is_a_refusal_not_an_error() -> None:
    # hmac.compare_digest refuses str with non-ASCII characters (TypeError): a form field
    # csrf=é must be a plain "wrong token", not a 500.
    _, session = Sessions().new()
    assert not csrf_ok(session, "é")
    assert not csrf_ok(session, session.csrf[:-1] + "é")


def test_client_key_groups_an_ipv6_clients_64_and_unmaps_ipv4() -> None:
    """An IPv6 client owns its /64 and can pick any address in it: one key for the /64."""
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb:cccc:dddd:2")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7", "an IPv4 client on a dual-stack socket"
    assert client_key("fe80::1%eth0") == client_key("fe80::2%eth0") == "fe80::/64"
    assert client_key(None) == client_key("") == "unknown"
    assert client_key("not an address") == "not an address"


def test_a_known_device_is_not_locked_out_by_the_overall_cap() -> None:
    """Many addresses failing fill the overall cap: everyone new waits, but a browser that
    logged in here before (its device cookie) still gets its own per-client tries."""
    clock = Clock()
    limiter = RateLimiter(per_client=3, overall=5, window_s=60.0, clock=clock)
    devices = auth.KnownDevices(clock=clock)
    token = devices.issue()
    device = devices.key(token)
    assert device is not None and device.startswith("device:")
    assert devices.key("forged") is None and devices.key(None) is None
    for i in range(5):
        limiter.failed(f"198.51.100.{i}")
    assert limiter.retry_after("203.0.113.9") > 0, "the overall cap holds for unknown clients"
    assert limiter.retry_after(device, known=True) == 0
    for _ in range(3):
        limiter.failed(device)
    assert limiter.retry_after(device, known=True) == pytest.approx(60.0), "its own limit still holds"
    # Known devices expire, and there are only so many of them.
    clock.t += auth.DEVICE_TTL_S + 1
    assert devices.key(token) is None
    many = [devices.issue() for _ in range(auth.MAX_DEVICES + 1)]
    assert devices.key(many[0]) is None and devices.key(many[-1]) is not None
    devices.forget_all()  # a new password
    assert devices.key(many[-1]) is None
