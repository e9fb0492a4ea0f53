"""Durable screening events: every result and fever alert, numbered, in <state_dir>/events.db.

Pure and synchronous (sqlite3 only, no asyncio): the screening daemon writes through it, and
`appliance events export` reads through it while the daemon runs.

Schema (version 1, in ``PRAGMA user_version``)::

    events(seq INTEGER, topic TEXT, wall_ts REAL, result TEXT, reason TEXT, threshold_c REAL,
           payload BLOB, PRIMARY KEY (seq, topic)) WITHOUT ROWID
    meta(key TEXT PRIMARY KEY, value)        last_seq, boot_id, clean, created,
                                             clock_boot_id, clock_offset, clock_first_seq

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

Wall-clock steps. A Raspberry Pi has no real-time clock: it boots on the time of its last
shutdown (fake-hwclock) or 1970, and the clock steps forward, often by weeks, when NTP first
syncs, minutes later or much later without a network. Events stamped before that carry a
stale ``wall_ts``: the retention purge would delete minutes-old fever results as months old,
and the setup page, the export and the replay would show the wrong date. As in the systemd
journal, a wall time is trusted together with its boot and a clock that is never stepped:
within one boot, wall time minus CLOCK_BOOTTIME is constant (NTP's slewing speeds up or slows
down both alike) and changes only when the clock is stepped. The meta keys ``clock_boot_id``,
``clock_offset`` (that difference when this boot's events were stamped) and
``clock_first_seq`` (this boot's first seq: every row at or above it was stamped in this
boot) survive a daemon restart within the boot. Before every append and purge (and whenever
the daemon checks, ``check_clock``), a difference that moved by more than
``CLOCK_STEP_TOLERANCE_S`` means a step: in one transaction with that append or purge, this
boot's rows get the step added to their ``wall_ts`` and to the ``wall_ts`` in their payload
(re-encoded, so the replay and the export agree), and the new offset is recorded; it is
logged once. A result decided before the step and written after it (it waited for the
database) is corrected from its own ``Draft.boottime``. Earlier boots' rows cannot be
corrected (nothing links their stamps to this boot's clock) and keep theirs; so do the rows
of a file from before these keys (they count as an earlier boot's).

For the same reason the retention purge trusts the current clock with earlier boots' rows only
once it is synchronized. A clock wrongly *ahead* at boot (a bad RTC module, a fake-hwclock file
saved from a wrong time, a wrong manual set) would otherwise make all of them look old and
delete them for good; a later NTP step corrects only this boot's. So ``purge`` is told whether
the kernel says the clock is synchronized (``appliance.clocksync``). This boot's rows (seq at
or above ``clock_first_seq``) are always purged against the current clock: they are stamped by
it and corrected with it. Earlier boots' rows are too when it is synchronized; otherwise (not
synchronized, or unknown) against ``min(now, the newest earlier-boot row's wall_ts)`` minus the
retention, in the same transaction: an unsynchronized clock never deletes more of them than a
purge at the end of the previous boot would have. Once the clock is synchronized, the next
purge catches up.

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
import dataclasses
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
# A smaller change of wall minus boot time is not corrected: a leap second (1 s), the small
# steps timesyncd makes above 0.4 s, a preemption between reading the two clocks. It is a
# retention and display matter, where seconds do not count; a first NTP sync after a boot
# without a real-time clock is minutes to decades.
CLOCK_STEP_TOLERANCE_S = 2.0
# CLOCK_BOOTTIME: never stepped, and counts a suspend, as the wall clock does (so their
# difference holds across one); where it is missing (not Linux), the monotonic clock.
_BOOTTIME_CLOCK: Final = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
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
    # CLOCK_BOOTTIME read with wall_ts (the store's ``boottime`` clock): if the wall clock is
    # stepped before the draft is written, its wall_ts is corrected from this. None: as given.
    boottime: float | None = None

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


def read_boottime() -> float:
    """Seconds since boot, suspend included: the clock events' wall times are checked against."""
    return time.clock_gettime(_BOOTTIME_CLOCK)


@dataclass(frozen=True, slots=True)
class _ClockBase:
    """Wall minus boot time under which this boot's rows (seq >= first_seq) are stamped."""

    offset: float
    first_seq: int


@dataclass(frozen=True, slots=True)
class _Step:
    """A clock step corrected inside a transaction, to take effect once it commits."""

    step: float
    rows: int
    base: _ClockBase


def _span(seconds: float) -> str:
    s = abs(seconds)
    if s >= 86400.0:
        return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"
    if s >= 3600.0:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{s:.1f} s"


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
        self._wall: Callable[[], float] = time.time
        self._boottime: Callable[[], float] = read_boottime
        # The writer's view of this boot's clock (None on a reader, which corrects nothing).
        self._clock: _ClockBase | None = None
        # Earlier boots' rows the last purge kept because the clock was not known to be
        # synchronized (rows it would have deleted against the current clock).
        self.purge_spared = 0

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
        boottime: Callable[[], float] = read_boottime,
    ) -> EventStore:
        """Open (creating if needed) for writing.

        ``seq_floor``: the last seq the caller already handed out (a daemon reopening after
        damage at run time knows it); the next seq is above it whatever the file says.
        ``boot_id``, ``now`` (the wall clock) and ``boottime`` (CLOCK_BOOTTIME): what clock
        steps are detected with (see above); the caller's own, so that drafts agree.
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
        store._wall = now
        store._boottime = boottime
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
        stored = self._stored_clock(meta, boot)
        # This one commit is synchronous=FULL: the "not closed cleanly" mark must be on disk
        # before any event can depend on it.
        self._conn.execute("PRAGMA synchronous=FULL")
        step = None
        with self._transaction():
            self._set_meta("last_seq", last)
            self._set_meta("boot_id", boot or "")
            self._set_meta("clean", 0)
            if "created" not in meta:
                self._set_meta("created", time.time())
            if stored is not None:
                # Restarted within the boot: its rows may predate a step made since.
                self._clock = stored
                step = self._settle_clock()
            else:
                # A new boot (or one that cannot be told apart: no boot id), or a file from
                # before these keys: every row so far counts as an earlier boot's.
                self._clock = _ClockBase(self._offset_now(), last + 1)
                self._set_meta("clock_boot_id", boot or "")
                self._set_meta("clock_offset", self._clock.offset)
                self._set_meta("clock_first_seq", self._clock.first_seq)
        self._settled(step)
        self._conn.execute(f"PRAGMA synchronous={self._synchronous}")

    def _stored_clock(self, meta: dict[str, Any], boot: str | None) -> _ClockBase | None:
        """This boot's clock base from meta, or None if meta holds another boot's (or none)."""
        if not boot or meta.get("clock_boot_id") != boot:
            return None
        try:
            base = _ClockBase(float(meta["clock_offset"]), int(meta["clock_first_seq"]))
        except (KeyError, TypeError, ValueError):
            base = None
        if base is None or not math.isfinite(base.offset):
            log.warning(
                "%s: this boot's clock offset in meta is unreadable (%r, %r); its events so far "
                "will not be corrected for a clock step",
                self.path,
                meta.get("clock_offset"),
                meta.get("clock_first_seq"),
            )
            return None
        return base

    # --- the wall clock -----------------------------------------------------------------------

    def check_clock(self) -> int:
        """Correct this boot's events if the wall clock was stepped since they were stamped
        (append and purge do it too); how many rows were corrected. Two clock reads when it
        was not. Raises sqlite3.Error (nothing is changed then; the next call tries again)."""
        self._writable()
        if self._stepped() is None:
            return 0
        with self._transaction():
            step = self._settle_clock()
        self._settled(step)
        return 0 if step is None else step.rows

    def _offset_now(self) -> float:
        return self._wall() - self._boottime()

    def _stepped(self) -> float | None:
        """The current wall minus boot time if it moved beyond the tolerance, else None."""
        if self._clock is None:
            return None
        offset = self._offset_now()
        moved = offset - self._clock.offset
        # A NaN from a broken clock is not a step: correcting by it would destroy every stamp.
        return offset if math.isfinite(moved) and abs(moved) > CLOCK_STEP_TOLERANCE_S else None

    def _settle_clock(self) -> _Step | None:
        """Inside a write transaction: correct this boot's rows for a step. The new base takes
        effect in ``_settled``, after the commit, so a rollback leaves it to be done again."""
        offset = self._stepped()
        if offset is None or self._clock is None:
            return None
        step = offset - self._clock.offset
        updates: list[tuple[float, bytes, int, str]] = []
        rows = self._conn.execute(
            "SELECT seq, topic, wall_ts, payload FROM events WHERE seq >= ?", (self._clock.first_seq,)
        ).fetchall()
        for seq, topic, wall_ts, payload in rows:
            corrected = float(wall_ts) + step
            try:
                result = _result_decoder.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                # Unreadable either way (skipped on reading); its column is still corrected,
                # so the purge judges the row's age right.
                new_payload = bytes(payload)
            else:
                new_payload = _encoder.encode(msgspec.structs.replace(result, wall_ts=corrected))
            updates.append((corrected, new_payload, seq, topic))
        self._conn.executemany(
            "UPDATE events SET wall_ts = ?, payload = ? WHERE seq = ? AND topic = ?", updates
        )
        self._set_meta("clock_offset", offset)
        return _Step(step, len(updates), _ClockBase(offset, self._clock.first_seq))

    def _settled(self, step: _Step | None) -> None:
        """After the commit of a transaction that corrected a step: take it on, say so once."""
        if step is None:
            return
        self._clock = step.base
        direction = "forward" if step.step > 0 else "back"
        if step.rows:
            log.warning(
                "%s: the wall clock was stepped %s by %s (%.0f s) after this boot's first events "
                "were stamped (NTP syncing after a boot without a real-time clock?): corrected the "
                "time of %d rows of this boot (seq %d on); earlier boots' events keep theirs",
                self.path,
                direction,
                _span(step.step),
                step.step,
                step.rows,
                step.base.first_seq,
            )
        else:
            log.info(
                "%s: the wall clock was stepped %s by %s (%.0f s); no event of this boot to correct",
                self.path,
                direction,
                _span(step.step),
                step.step,
            )

    # --- writing ------------------------------------------------------------------------------

    def append(self, draft: Draft) -> Appended:
        """Give the draft its seq and commit it (and its alert row); raises sqlite3.Error."""
        self._writable()
        with self._transaction():
            # First the rows already there, so that this one, stamped under the new offset,
            # is not taken for one of them by a later correction.
            step = self._settle_clock()
            base = step.base if step is not None else self._clock
            if (
                base is not None
                and draft.boottime is not None
                and abs(draft.wall_ts - draft.boottime - base.offset) > CLOCK_STEP_TOLERANCE_S
            ):
                # Decided before a step (it waited for the database): its time on today's clock.
                draft = dataclasses.replace(draft, wall_ts=draft.boottime + base.offset)
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
        self._settled(step)
        return Appended(seq, result, alert)

    def purge(self, older_than_wall_ts: float, *, clock_synchronized: bool | None) -> int:
        """Delete events older than the given wall time (now minus the retention); how many
        rows went. The seq high-water mark stays.

        ``clock_synchronized`` (``clocksync.wall_clock_synchronized``): unless True, earlier
        boots' rows are judged against the end of the last boot rather than now (see above);
        ``purge_spared`` then says how many rows that kept."""
        self._writable()
        with self._transaction():
            # Never on a stale view: this boot's rows stamped before a clock step would look
            # as old as the step is long.
            step = self._settle_clock()
            base = step.base if step is not None else self._clock
            # Without a base (not the case for a writer), every row counts as an earlier boot's.
            first = base.first_seq if base is not None else self._max_row_seq() + 1
            earlier = older_than_wall_ts
            spared = 0
            if clock_synchronized is not True:
                newest = self._conn.execute(
                    "SELECT max(wall_ts) FROM events WHERE seq < ?", (first,)
                ).fetchone()[0]
                if newest is not None:
                    # min(now, newest) - retention, the retention being now - older_than_wall_ts.
                    held = float(newest) - (self._wall() - older_than_wall_ts)
                    # A NaN from a broken clock: delete none of them.
                    earlier = min(earlier, held) if math.isfinite(held) else -math.inf
                    spared = int(
                        self._conn.execute(
                            "SELECT count(*) FROM events WHERE seq < ? AND wall_ts >= ? AND wall_ts < ?",
                            (first, earlier, older_than_wall_ts),
                        ).fetchone()[0]
                    )
            # Two statements, so that each can use the index on wall_ts.
            deleted = self._conn.execute(
                "DELETE FROM events WHERE wall_ts < ? AND seq >= ?", (older_than_wall_ts, first)
            ).rowcount
            deleted += self._conn.execute(
                "DELETE FROM events WHERE wall_ts < ? AND seq < ?", (earlier, first)
            ).rowcount
        self._settled(step)
        self.purge_spared = spared
        return int(deleted)

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
