"""Who may use the setup page: the password, the first-use code, sessions, rate limits.

- The password is stored as a scrypt hash (N=2^15, r=8, p=1: 32 MiB and about 0.1 s on an
  x86 core, several times that on a Pi, which is the point) in <state_dir>/setup-password.json,
  mode 0600, written atomically. A file that cannot be read is an error, never "no password":
  a damaged file must not reopen first use to whoever stands at the kiosk.
- First use: a one-time 6-digit code, made when the technician asks for it on the page and
  shown on the kiosk's own screen (bus topic setup.code). Knowing it proves physical presence.
  It expires after CODE_TTL_S and dies after CODE_ATTEMPTS wrong tries.
- Every expiry and age here (the code, sessions, rate limits) runs on time.monotonic(): a Pi
  has no real-time clock and its wall clock jumps when NTP syncs. Wall time is only what is
  shown (the code's expiry on the screen) or stored (the password's set_at).
- Sessions: a random token in an HttpOnly, SameSite=Strict cookie; the server keeps only its
  SHA-256. Each session carries its own CSRF token. Logging in makes a new session (no
  fixation); changing the password ends every session. Authenticated sessions and known devices
  outlive the daemon's idle exit within one boot (sessionstore.py: hashes only, via to_dict and
  load_dict here).
- Failed logins and code tries are rate-limited per client and overall. A client is its
  address, an IPv6 one its /64 (appliance.clientkey): an IPv6 host owns the whole /64 and could try
  from a fresh address each time. The overall cap bounds guessing from many addresses, and so
  lets anyone lock the page for its window; a browser that has logged in here before (a known
  device: a random token in a long-lived cookie, KnownDevices) is not refused by it, only by
  its own per-client limit. Guessing stays bounded: a known device had to know the password.

Nothing here logs a password, a code or a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.atomic import atomic_write
from appliance.errors import StateError

PASSWORD_FILE = "setup-password.json"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD = 10
MAX_PASSWORD = 256

CODE_DIGITS = 6
CODE_TTL_S = 600.0
CODE_ATTEMPTS = 5

SESSION_IDLE_S = 30 * 60.0
SESSION_MAX_S = 12 * 3600.0
MAX_SESSIONS = 256

DEVICE_TTL_S = 90 * 86400.0
MAX_DEVICES = 64

Clock = Callable[[], float]


# --- the password -----------------------------------------------------------------------------


def password_problem(password: str, confirm: str) -> str | None:
    """Why this new password is refused, or None."""
    if password != confirm:
        return "the two passwords differ"
    if len(password) < MIN_PASSWORD:
        return f"use at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"use at most {MAX_PASSWORD} characters"
    if len(set(password)) < 5:
        return "use at least 5 different characters"
    return None


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32)


def hash_password(password: str) -> dict[str, object]:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return {
        "version": 1,
        "scheme": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": base64.b64encode(salt).decode(),
        "hash": base64.b64encode(digest).decode(),
        "set_at": time.time(),
    }


def verify_password(record: dict[str, object], password: str) -> bool:
    try:
        salt = base64.b64decode(str(record["salt"]), validate=True)
        expected = base64.b64decode(str(record["hash"]), validate=True)
        n, r, p = int(str(record["n"])), int(str(record["r"])), int(str(record["p"]))
    except (KeyError, ValueError) as exc:
        raise StateError(f"setup password record is damaged: {exc}") from None
    if record.get("scheme") != "scrypt" or not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise StateError("setup password record is damaged: unknown scheme or parameters")
    if len(password) > MAX_PASSWORD:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


class PasswordStore:
    """The hash on disk. Blocking (scrypt, file I/O): call from a worker thread."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / PASSWORD_FILE

    def is_set(self) -> bool:
        """Whether a password exists; StateError if the file is there but unreadable."""
        return self._load() is not None

    def _load(self) -> dict[str, object] | None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"{self.path}: cannot read the setup password: {exc}") from None
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            raise StateError(f"{self.path}: the setup password file is damaged (not JSON)") from None
        if not isinstance(record, dict) or record.get("version") != 1:
            raise StateError(f"{self.path}: the setup password file is damaged (no version 1 record)")
        return record

    def set(self, password: str) -> None:
        atomic_write(self.path, json.dumps(hash_password(password)) + "\n", mode=0o600)

    def check(self, password: str) -> bool:
        record = self._load()
        return record is not None and verify_password(record, password)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def fingerprint(self) -> str | None:
        """A digest of the stored hash and salt, None without a password; StateError if the file
        is unreadable. Saved sessions carry it (sessionstore.py), so sessions logged in under
        another password, one set or reset while the daemon was stopped, are not brought back."""
        record = self._load()
        if record is None:
            return None
        return hashlib.sha256(json.dumps([record.get("salt"), record.get("hash")]).encode()).hexdigest()


# --- the first-use code -------------------------------------------------------------------------


@dataclass
class SetupCodes:
    """One code at a time; None until asked for.

    It expires by `clock` (monotonic): a Pi has no real-time clock, and the wall clock jumps,
    often by months, when NTP first syncs after boot. The expiry it gives out is wall time
    (`wall`), for the kiosk's screen, worked out afresh from the monotonic time left each time
    it is asked for, so that once republished it follows a jump."""

    clock: Clock = time.monotonic
    wall: Clock = time.time
    code: str | None = None
    expires_at: float = 0.0  # on `clock`
    wrong: int = 0

    def seconds_left(self) -> float:
        """Until the live code expires; 0.0 when there is none."""
        if self.code is None:
            return 0.0
        return max(0.0, self.expires_at - self.clock())

    def current(self) -> tuple[str, float] | None:
        """The live code and when it expires in wall time, or None."""
        left = self.seconds_left()
        if self.code is None or left <= 0:
            return None
        return self.code, self.wall() + left

    def issue(self) -> tuple[str, float]:
        """The live code, or a new one if there is none (asking twice does not change it)."""
        live = self.current()
        if live is not None:
            return live
        self.code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        self.expires_at = self.clock() + CODE_TTL_S
        self.wrong = 0
        return self.code, self.wall() + CODE_TTL_S

    def clock_offset(self) -> float:
        """Wall minus monotonic time: it changes when the wall clock is set (NTP, by hand)."""
        return self.wall() - self.clock()

    def check(self, attempt: str) -> bool:
        """True once for the right live code, which is then used up."""
        live = self.current()
        if live is None:
            return False
        if hmac.compare_digest(attempt.strip().encode(), live[0].encode()):
            self.clear()
            return True
        self.wrong += 1
        if self.wrong >= CODE_ATTEMPTS:
            self.clear()  # guessing is over: ask for a new code at the kiosk
        return False

    def clear(self) -> None:
        self.code = None
        self.expires_at = 0.0
        self.wrong = 0


# --- rate limiting ------------------------------------------------------------------------------


@dataclass
class RateLimiter:
    """At most `per_client` failures per client and `overall` failures in total per window.
    A client over its limit waits until its oldest failure leaves the window.

    A known client (a known device, see KnownDevices) is held to its own limit but not refused
    by the overall one, so failures from elsewhere cannot lock it out; its failures still count
    toward the overall cap for everyone else."""

    per_client: int = 5
    overall: int = 30
    window_s: float = 300.0
    clock: Clock = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _all: deque[float] = field(default_factory=deque)

    def _trim(self, q: deque[float], now: float) -> None:
        while q and q[0] <= now - self.window_s:
            q.popleft()

    def retry_after(self, client: str, *, known: bool = False) -> float:
        """Seconds until this client may try again; 0 when it may now."""
        now = self.clock()
        self._trim(self._all, now)
        q = self._failures.get(client)
        waits = [0.0]
        if q is not None:
            self._trim(q, now)
            if len(q) >= self.per_client:
                waits.append(q[0] + self.window_s - now)
        if not known and len(self._all) >= self.overall:
            waits.append(self._all[0] + self.window_s - now)
        return max(waits)

    def failed(self, client: str) -> None:
        now = self.clock()
        self._failures.setdefault(client, deque()).append(now)
        self._all.append(now)
        if len(self._failures) > 4096:  # bound memory against address churn
            for key in [k for k, q in self._failures.items() if not q or q[-1] <= now - self.window_s]:
                del self._failures[key]

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def counting(self) -> bool:
        """Whether a failure is still in the window: forgetting the counts now (the daemon's
        idle exit) would give a guesser a fresh allowance."""
        self._trim(self._all, self.clock())
        return bool(self._all)


# --- plain data for sessionstore.py ----------------------------------------------------------------


def _entries(data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    """data[name] as a list of objects; ValueError otherwise (a damaged file)."""
    entries = data.get(name)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{name!r} is not a list of objects")
    return entries


def _digest(value: object) -> str:
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise ValueError("a hash is not 64 lowercase hex digits")
    return value


def _stamp(value: object, now: float) -> float:
    """A monotonic stamp of this boot: a finite number not after now. A later one cannot come
    from this boot's clock, so the file is not what it says it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("a time stamp is not a number")
    if value > now:
        raise ValueError("a time stamp is in the future")
    return float(value)


class KnownDevices:
    """Browsers that logged in here: a random token in a long-lived HttpOnly cookie, the
    server keeping only its SHA-256. Only for the rate limit (RateLimiter's `known`): the
    token lets no one in. In memory, kept over the idle exit within one boot (to_dict,
    load_dict, sessionstore.py); a reboot forgets them."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._issued: OrderedDict[str, float] = OrderedDict()  # hash -> when issued

    @staticmethod
    def _hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def issue(self) -> str:
        token = secrets.token_urlsafe(32)
        self._issued[self._hash(token)] = self.clock()
        while len(self._issued) > MAX_DEVICES:
            self._issued.popitem(last=False)  # the oldest goes
        return token

    def key(self, token: str | None) -> str | None:
        """The rate-limit key of this known device, or None for an unknown or expired token."""
        if not token or len(token) > 128:
            return None
        digest = self._hash(token)
        issued = self._issued.get(digest)
        if issued is None:
            return None
        if self.clock() - issued > DEVICE_TTL_S:
            del self._issued[digest]
            return None
        return f"device:{digest[:16]}"

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """The unexpired devices as plain data, oldest first: hashes, never a token."""
        now = self.clock()
        return {
            "devices": [
                {"hash": digest, "issued": issued}
                for digest, issued in self._issued.items()
                if now - issued <= DEVICE_TTL_S
            ]
        }

    def load_dict(self, data: Mapping[str, Any]) -> int:
        """Add the devices of to_dict's data that have not expired by now; how many. ValueError
        for damaged data, before anything is added. The stamps must be on this clock (the same
        boot's monotonic clock: sessionstore.py checks the boot)."""
        now = self.clock()
        loaded = [(_digest(e.get("hash")), _stamp(e.get("issued"), now)) for e in _entries(data, "devices")]
        added = 0
        for digest, issued in loaded:
            if now - issued <= DEVICE_TTL_S:
                self._issued[digest] = issued
                added += 1
        while len(self._issued) > MAX_DEVICES:
            self._issued.popitem(last=False)
        return added

    def forget_all(self) -> None:
        """A new password: a browser known under the old one (perhaps the reason for the change)
        is not spared the overall cap any more."""
        self._issued.clear()


# --- sessions -----------------------------------------------------------------------------------


@dataclass
class Session:
    csrf: str
    created: float
    seen: float
    authenticated: bool = False


class Sessions:
    """Server-side sessions keyed by the SHA-256 of the cookie's token. The authenticated ones
    are kept over the idle exit within one boot (to_dict, load_dict, sessionstore.py)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._by_hash: OrderedDict[str, Session] = OrderedDict()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def new(self, *, authenticated: bool = False) -> tuple[str, Session]:
        now = self.clock()
        token = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), created=now, seen=now, authenticated=authenticated)
        self._by_hash[self._key(token)] = session
        while len(self._by_hash) > MAX_SESSIONS:
            # Unauthenticated sessions go first: a flood of visitors cannot log anyone out.
            victim = next((k for k, s in self._by_hash.items() if not s.authenticated), None)
            if victim is None:
                victim = next(iter(self._by_hash))
            del self._by_hash[victim]
        return token, session

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session for this cookie token. touch=False looks without counting it as
        activity: a page's WebSocket checking its session must not keep it from idling out."""
        if not token or len(token) > 128:
            return None
        key = self._key(token)
        session = self._by_hash.get(key)
        if session is None:
            return None
        now = self.clock()
        if _expired(session, now):
            del self._by_hash[key]
            return None
        if touch:
            session.seen = now
            self._by_hash.move_to_end(key)
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._by_hash.pop(self._key(token), None)

    def drop_all(self) -> None:
        self._by_hash.clear()

    def __len__(self) -> int:
        return len(self._by_hash)

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """The live authenticated sessions as plain data, least recently used first: the hash,
        never the token. A visitor's unauthenticated session is not worth keeping: its next
        request makes a new one."""
        now = self.clock()
        return {
            "sessions": [
                {"hash": key, "csrf": s.csrf, "created": s.created, "seen": s.seen}
                for key, s in self._by_hash.items()
                if s.authenticated and not _expired(s, now)
            ]
        }

    def load_dict(self, data: Mapping[str, Any]) -> int:
        """Add to_dict's sessions, authenticated, that have not expired by now (the rules of
        get); how many. ValueError for damaged data, before anything is added. The stamps must
        be on this clock (the same boot's monotonic clock: sessionstore.py checks the boot)."""
        now = self.clock()
        loaded: list[tuple[str, Session]] = []
        for e in _entries(data, "sessions"):
            csrf = e.get("csrf")
            if not isinstance(csrf, str) or not 16 <= len(csrf) <= 128:
                raise ValueError("a session's CSRF token is not a token")
            created, seen = _stamp(e.get("created"), now), _stamp(e.get("seen"), now)
            if seen < created:
                raise ValueError("a session was seen before it was made")
            loaded.append((_digest(e.get("hash")), Session(csrf, created, seen, authenticated=True)))
        added = 0
        for key, session in loaded:
            if not _expired(session, now):
                self._by_hash[key] = session
                added += 1
        while len(self._by_hash) > MAX_SESSIONS:
            del self._by_hash[next(iter(self._by_hash))]
        return added


def _expired(session: Session, now: float) -> bool:
    return now - session.seen > SESSION_IDLE_S or now - session.created > SESSION_MAX_S


def csrf_ok(session: Session | None, token: str | None) -> bool:
    # As bytes: compare_digest raises TypeError on a str with non-ASCII characters (csrf=é).
    return (
        session is not None
        and bool(token)
        and hmac.compare_digest(session.csrf.encode(), str(token).encode("utf-8", "surrogateescape"))
    )
