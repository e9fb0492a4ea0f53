"""Durable screening events: every result and fever alert, numbered, in <state_dir>/events.db.

Pure and synchronous (sqlite3 only, no asyncio): the screening daemon writes through it, and
`appliance events export` reads through it while the daemon runs.

Schema (version 1, in ``PRAGMA user_version``)::

    events(seq INTEGER, topic TEXT, wall_ts REAL, result TEXT, reason TEXT, threshold_c REAL,
           payload BLOB, PRIMARY KEY (seq, topic)) WITHOUT ROWID
    meta(key TEXT PRIMARY KEY, value)        last_seq, boot_id, clean, created

One row per published message, so a row is an ``EventRecord``: a decided result is a
``screening.result`` row; an elevated one also gets an ``alert.fever`` row with the *same*
seq (the alert is the result seen by staff, and consumers match the two by seq). ``payload``
is the msgpack ``ScreeningResult`` exactly as published; ``result``, ``reason`` and
``threshold_c`` are kept as columns for the export. No images are ever stored.

Sequence numbers: strictly increasing and never reused, also across restarts, retention
purges and a damaged file (``meta.last_seq`` is the high-water mark, kept when rows go). They
may have gaps: after a purge, after a power cut (see below), after a damaged file was set
aside. A consumer tracks the last seq it saw and asks ``since(seq)`` for what it missed.

Durability: synchronous=NORMAL for the commit, a checkpoint off the event loop after the
publish. Measured on the 2-core VM (WAL, a result and its alert per transaction, 200-500
commits 5 ms apart; ``appliance.bench.alert_latency.measure_append_cost`` repeats it), lightly
and heavily (load average 6) loaded by other work::

    FULL (one WAL fsync per commit)                  p50 0.32-1.1  p99 1.7-26  max 2.5-67 ms
    NORMAL, SQLite's own checkpoints                 p50 0.09-0.10  p99 0.24-0.30  max 7-12 ms
    NORMAL, flush() in a worker after each commit    p50 0.10-0.12  p99 0.19-0.30  max 0.25-1.9 ms

The frame-to-alert budget is 5 ms at p99 and the commit sits on that path (a result is
written before it is published), so FULL alone can spend the whole budget on one fsync, and
an SD card's fsync is slower than this VM's. NORMAL never corrupts a WAL database and loses
nothing when the process is killed (the commit is in the OS page cache), only on a power cut;
left to itself SQLite would checkpoint (and fsync) on the hot path every thousand pages, which
is the NORMAL row's max. So the daemon calls ``flush()`` in a worker thread a moment after each
publish: a PASSIVE checkpoint, in which SQLite fsyncs the WAL and then the database. A power
cut can then only take the events of the last few tens of milliseconds before it. So that
such a lost seq is never handed out again to a different event (a consumer that saw it would
drop the new one as a duplicate), the file records the boot it was opened in and whether it
was closed cleanly: opened again after a reboot without a clean close, the store skips
``SEQ_SKIP_AFTER_POWER_LOSS`` numbers. A daemon killed without a reboot keeps the page cache,
so it continues without a gap.

A damaged file (not a database, failed integrity check, a schema this firmware does not
know) is never a crash loop: ``open`` logs it loudly, moves it aside as
``events.db.damaged-<UTC time>`` (with its -wal) for a person to look at, and starts a new
file whose seq continues above the old one's if it can still be read, else above the
current wall time in milliseconds (a result is seconds apart, so that exceeds any seq the
old file can hold unless the clock is wrong). A file that cannot be opened at all (permissions,
a full or failing disk) is a StateError and is left alone.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from appliance.bus.topics import EventRecord, EventsPage, FeverAlert, ResultName, ScreeningResult
from appliance.errors import StateError

log = logging.getLogger(__name__)

FILENAME = "events.db"
SCHEMA_VERSION = 1
RESULT_TOPIC: Final = "screening.result"
ALERT_TOPIC: Final = "alert.fever"
Topic = Literal["screening.result", "alert.fever"]
# Seqs skipped after a reboot that followed an unclean close: events of the last moments
# before a power cut may be missing, and their seqs must not be given to new events.
SEQ_SKIP_AFTER_POWER_LOSS = 1000
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
WRITER_BUSY_S = 0.25

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER NOT NULL CHECK (seq >= 1),
    topic TEXT NOT NULL CHECK (topic IN ('{RESULT_TOPIC}', '{ALERT_TOPIC}')),
    wall_ts REAL NOT NULL,
    result TEXT NOT NULL,
    reason TEXT,
    threshold_c REAL,
    payload BLOB NOT NULL,
    PRIMARY KEY (seq, topic)
) WITHOUT ROWID;
CREATE INDEX events_by_time ON events (wall_ts);
"""

_encoder = msgspec.msgpack.Encoder()
_result_decoder = msgspec.msgpack.Decoder(ScreeningResult)
# Primary result codes (an extended code carries the primary one in its low byte).
_DAMAGED_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def path_in(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / FILENAME


def is_busy(exc: BaseException) -> bool:
    """Whether an sqlite3 error is another connection holding the lock (worth a quick retry)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def is_damage(exc: BaseException) -> bool:
    """Whether an sqlite3 error says the file is damaged (as opposed to unreachable or full)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None and (code & 0xFF) in _DAMAGED_CODES


class Damaged(StateError):
    """The file is not a usable events database (raised inside open; also by a read-only open)."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A decided result before it has its seq."""

    wall_ts: float
    start: float
    end: float
    result: ResultName
    estimate_c: float | None
    confidence: float
    distance_m: float | None = None
    ambient_c: float | None = None
    reason: str | None = None
    # The fever threshold in force; an elevated result with an estimate raises alert.fever.
    threshold_c: float | None = None

    @property
    def alert(self) -> bool:
        return self.result == "elevated" and self.estimate_c is not None and self.threshold_c is not None


@dataclass(frozen=True, slots=True)
class Appended:
    """What one append made durable, ready to publish."""

    seq: int
    result: ScreeningResult
    alert: FeverAlert | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row, for the export."""

    seq: int
    topic: Topic
    wall_ts: float
    result: ScreeningResult
    reason: str | None
    threshold_c: float | None


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def to_messages(draft: Draft, seq: int) -> tuple[ScreeningResult, FeverAlert | None]:
    # Clamped and cleaned here because the broker validates every message: a confidence a
    # rounding error above 1 would get the daemon's connection closed.
    confidence = min(1.0, max(0.0, draft.confidence)) if math.isfinite(draft.confidence) else 0.0
    estimate = _finite(draft.estimate_c)
    result = ScreeningResult(
        seq=seq,
        wall_ts=draft.wall_ts,
        start=draft.start,
        end=draft.end,
        result=draft.result,
        estimate_c=estimate,
        confidence=confidence,
        distance_m=_finite(draft.distance_m),
        ambient_c=_finite(draft.ambient_c),
    )
    alert = None
    if draft.alert and estimate is not None and draft.threshold_c is not None:
        alert = FeverAlert(
            seq=seq,
            wall_ts=draft.wall_ts,
            estimate_c=estimate,
            confidence=confidence,
            threshold_c=draft.threshold_c,
        )
    return result, alert


def current_boot_id() -> str | None:
    try:
        return BOOT_ID_FILE.read_text().strip() or None
    except OSError:
        return None


class EventStore:
    """The events database. Use ``open`` (the writer, one per device) or ``open_readonly``.

    Not thread-safe except ``flush``, which uses its own connection and may run in a worker
    thread while the owning thread appends.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        # Set when open() had to set a damaged file aside: where it went and why (for health).
        self.recovered: str | None = None
        self._flush_conn: sqlite3.Connection | None = None
        self._flush_lock = threading.Lock()
        self._closed = False
        self._synchronous = "NORMAL"

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        seq_floor: int = 0,
        boot_id: str | Callable[[], str | None] | None = current_boot_id,
        now: Callable[[], float] = time.time,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> EventStore:
        """Open (creating if needed) for writing.

        ``seq_floor``: the last seq the caller already handed out (a daemon reopening after
        damage at run time knows it); the next seq is above it whatever the file says.
        ``synchronous``: NORMAL, as explained above; FULL only to measure the alternative.
        """
        file = Path(path)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {file.parent}: {exc.strerror}") from None
        boot = boot_id() if callable(boot_id) else boot_id
        recovered = None
        try:
            conn = _open_writer(file)
        except Damaged as exc:
            known = salvage_last_seq(file)
            aside = _set_aside(file, now())
            floor = known if known is not None else int(now() * 1000)
            recovered = (
                f"{file} was unusable ({exc}); moved to {aside.name}; new file, seq continues "
                f"above {max(floor, seq_floor)}"
                + ("" if known is not None else " (the old last seq was unreadable: wall-clock floor)")
            )
            log.error("EVENTS DATABASE DAMAGED: %s", recovered)
            conn = _open_writer(file)
            seq_floor = max(seq_floor, floor)
        store = cls(conn, file, readonly=False)
        store.recovered = recovered
        store._synchronous = synchronous
        try:
            store._start_session(seq_floor, boot)
        except sqlite3.Error as exc:
            conn.close()
            raise StateError(f"{file}: cannot write: {exc}") from None
        return store

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> EventStore:
        """Read-only, safe while the daemon writes (WAL readers never block the writer)."""
        file = Path(path)
        if not file.exists():
            raise StateError(f"no events database at {file}")
        uri = f"file:{urllib.parse.quote(str(file.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
        except sqlite3.Error as exc:
            raise StateError(f"{file}: cannot open: {exc}") from None
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise Damaged(f"{file}: schema version {version}, this firmware reads {SCHEMA_VERSION}")
            conn.execute("SELECT 1 FROM events LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            conn.close()
            kind = Damaged if is_damage(exc) else StateError
            raise kind(f"{file}: cannot read: {exc}") from None
        except StateError:
            conn.close()
            raise
        return cls(conn, file, readonly=True)

    def _start_session(self, seq_floor: int, boot: str | None) -> None:
        meta = self._meta()
        last = max(int(meta.get("last_seq", 0)), self._max_row_seq(), seq_floor)
        if meta.get("clean") == 0 and (boot is None or meta.get("boot_id") != boot):
            log.warning(
                "%s was not closed cleanly before a reboot (power cut?): events published in the "
                "moments before it may be missing; seq jumps from %d to %d so none is reused",
                self.path,
                last,
                last + SEQ_SKIP_AFTER_POWER_LOSS,
            )
            last += SEQ_SKIP_AFTER_POWER_LOSS
        # This one commit is synchronous=FULL: the "not closed cleanly" mark must be on disk
        # before any event can depend on it.
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            self._set_meta("last_seq", last)
            self._set_meta("boot_id", boot or "")
            self._set_meta("clean", 0)
            if "created" not in meta:
                self._set_meta("created", time.time())
        self._conn.execute(f"PRAGMA synchronous={self._synchronous}")

    # --- writing ------------------------------------------------------------------------------

    def append(self, draft: Draft) -> Appended:
        """Give the draft its seq and commit it (and its alert row); raises sqlite3.Error."""
        self._writable()
        with self._transaction():
            # The high-water mark is read inside the write transaction, so even a second
            # writer by mistake could not hand out the same seq twice.
            seq = int(self._get_meta("last_seq") or 0) + 1
            result, alert = to_messages(draft, seq)
            payload = _encoder.encode(result)
            rows: list[tuple[object, ...]] = [
                (seq, RESULT_TOPIC, draft.wall_ts, draft.result, draft.reason, None, payload)
            ]
            if alert is not None:
                rows.append(
                    (seq, ALERT_TOPIC, draft.wall_ts, draft.result, draft.reason, alert.threshold_c, payload)
                )
            self._conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._set_meta("last_seq", seq)
        return Appended(seq, result, alert)

    def purge(self, older_than_wall_ts: float) -> int:
        """Delete events older than the given wall time; the seq high-water mark stays."""
        self._writable()
        with self._transaction():
            cur = self._conn.execute("DELETE FROM events WHERE wall_ts < ?", (older_than_wall_ts,))
        return int(cur.rowcount)

    def flush(self) -> None:
        """Make every committed event durable against a power cut: a checkpoint, in which SQLite
        fsyncs the WAL and then the database. Blocking (milliseconds on an SD card): call it
        off the event loop. Thread-safe: it has its own connection."""
        if self.readonly:
            return
        with self._flush_lock:
            if self._closed:
                return
            if self._flush_conn is None:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0, check_same_thread=False)
                conn.execute("PRAGMA synchronous=NORMAL")
                self._flush_conn = conn
            conn = self._flush_conn
            # PASSIVE: never waits for, and never blocks, the writer's next append.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            # A fully checkpointed WAL is restarted by the next write, and restarting fsyncs
            # the new WAL header (measured: append p99 0.4 -> 5.4 ms). Do that write here, off
            # the event loop, so the next append finds a WAL in use and writes without a sync.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('flushed_wall_ts', ?)", (time.time(),))
                # A COMMIT that fails may leave the transaction open, and with it the write
                # lock the writer's every append would then wait for in vain.
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close; the writer records a clean close (no seq skip on the next open)."""
        with self._flush_lock:
            if self._closed:
                return
            self._closed = True
            if self._flush_conn is not None:
                self._flush_conn.close()
                self._flush_conn = None
        try:
            if not self.readonly:
                self._conn.execute("PRAGMA synchronous=FULL")
                with self._transaction():
                    self._set_meta("clean", 1)
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("%s: could not record a clean close: %s", self.path, exc)
        finally:
            self._conn.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest seq ever handed out (also after its row was purged)."""
        return max(int(self._get_meta("last_seq") or 0), self._max_row_seq())

    def since(self, seq: int, limit: int = 1000) -> EventsPage:
        """Events with a seq above ``seq``, oldest first, for at most ``limit`` seqs (a page
        never splits a result from its alert, so it holds up to 2 * limit records).
        ``last_seq`` is the store's high-water mark: more pages follow while the page's last
        seq is below it."""
        records: list[EventRecord] = []
        # A page whose rows are all unreadable would come back empty, which a consumer takes
        # for the end: the events after it would never be fetched. Go on to the next page then.
        while not records:
            top = self._conn.execute(
                "SELECT max(seq) FROM (SELECT DISTINCT seq FROM events WHERE seq > ? ORDER BY seq LIMIT ?)",
                (seq, limit),
            ).fetchone()[0]
            if top is None:
                break
            cur = self._conn.execute(
                # topic DESC: screening.result before alert.fever, as they are published.
                "SELECT seq, topic, payload FROM events WHERE seq > ? AND seq <= ? ORDER BY seq, topic DESC",
                (seq, top),
            )
            for row_seq, topic, payload in cur:
                result = self._decode(row_seq, payload)
                if result is not None:
                    records.append(EventRecord(seq=row_seq, topic=topic, result=result))
            seq = top
        return EventsPage(events=records, last_seq=self.last_seq)

    def rows(self, since: int = 0) -> Iterator[StoredEvent]:
        """Every event above ``since``, oldest first (the export)."""
        try:
            cur = self._conn.execute(
                "SELECT seq, topic, wall_ts, reason, threshold_c, payload FROM events WHERE seq > ? "
                "ORDER BY seq, topic DESC",
                (since,),
            )
            for seq, topic, wall_ts, reason, threshold, payload in cur:
                result = self._decode(seq, payload)
                if result is not None:
                    yield StoredEvent(seq, topic, wall_ts, result, reason, threshold)
        except sqlite3.Error as exc:
            # Damage past the pages opening reads (a failing SD card) shows only part way in.
            kind = Damaged if is_damage(exc) else StateError
            raise kind(f"{self.path}: cannot read: {exc}") from None

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    # --- helpers ------------------------------------------------------------------------------

    def _decode(self, seq: int, payload: bytes) -> ScreeningResult | None:
        try:
            result: ScreeningResult = _result_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # One bad row must not hide every other event from a consumer or an export.
            log.error("%s: event %d is unreadable (%s); skipped", self.path, seq, exc)
            return None
        return result

    def _writable(self) -> None:
        if self.readonly:
            raise StateError(f"{self.path} is open read-only")
        if self._closed:
            raise StateError(f"{self.path} is closed")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so a reader (the export) can never turn
        # this transaction into a busy-retry halfway through.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            # Inside the try: a COMMIT that fails busy (a reader's lock without WAL) leaves
            # the transaction open in SQLite, holding the write lock and showing its rows to
            # since(); every later BEGIN would then fail. Roll it back: the caller retries.
            self._conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise

    def _meta(self) -> dict[str, Any]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def _get_meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: object) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _max_row_seq(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


def _open_writer(file: Path) -> sqlite3.Connection:
    """Connect, check and (on a new file) create the schema. Damaged on a file that is not a
    usable version-1 events database; StateError when it cannot be opened at all."""
    try:
        # The writer waits at most WRITER_BUSY_S for a lock, because it runs on the daemon's
        # event loop: only the flush's short transaction (milliseconds, right after a result,
        # while the next one is seconds away) or a second writer (a mistake) can hold one.
        conn = sqlite3.connect(file, isolation_level=None, timeout=WRITER_BUSY_S)
    except sqlite3.Error as exc:
        raise StateError(f"{file}: cannot open: {exc}") from None
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            log.warning("%s: journal mode %s, not WAL (a filesystem without shared memory?)", file, mode)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if tables:
                raise Damaged(f"not an events database (tables {', '.join(sorted(tables))})")
            conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version != SCHEMA_VERSION:
            # A newer firmware's file after a rollback: set aside intact rather than misread.
            raise Damaged(f"schema version {version}, this firmware knows {SCHEMA_VERSION}")
        # quick_check reads every page once: tens of milliseconds for a month of events, once
        # per start, and it finds a damaged file before the first result depends on it.
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise Damaged("integrity check failed: " + "; ".join(problems))
        conn.execute("PRAGMA synchronous=NORMAL")
    except Damaged:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        if is_damage(exc):
            raise Damaged(str(exc)) from None
        raise StateError(f"{file}: cannot use: {exc}") from None
    return conn


def salvage_last_seq(file: Path) -> int | None:
    """The highest seq a damaged file still shows, or None if it shows none."""
    best: int | None = None
    uri = f"file:{urllib.parse.quote(str(file.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        for query in ("SELECT value FROM meta WHERE key = 'last_seq'", "SELECT max(seq) FROM events"):
            try:
                row = conn.execute(query).fetchone()
            except sqlite3.Error:
                continue
            if row is not None and row[0] is not None:
                with contextlib.suppress(TypeError, ValueError):
                    best = max(best or 0, int(row[0]))
    finally:
        conn.close()
    return best


def _set_aside(file: Path, wall: float) -> Path:
    stamp = datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = file.with_name(f"{file.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = file.with_name(f"{file.name}.damaged-{stamp}-{n}")
    try:
        # The WAL goes with its database (it may hold the newest events); the -shm is only an
        # index and is rebuilt.
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{file}-wal", f"{aside}-wal")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{file}-shm")
        os.replace(file, aside)
        dir_fd = os.open(file.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StateError(f"{file} is damaged and cannot be moved aside: {exc.strerror}") from None
    return aside
