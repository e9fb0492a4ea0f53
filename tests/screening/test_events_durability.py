"""Events store failure paths that would wedge or mislead an unattended kiosk (real SQLite)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from appliance.screening.events import Draft, EventStore, is_busy

BOOT = "boot-a"


def draft() -> Draft:
    return Draft(
        wall_ts=time.time(), start=100.0, end=101.0, result="normal", estimate_c=36.6, confidence=0.8
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "events.db"


def walk(store: EventStore, limit: int) -> list[int]:
    """A consumer following the documented contract: an empty page is the end, otherwise more
    pages follow while the page's last seq is below ``last_seq``."""
    seen: list[int] = []
    seq = 0
    for _ in range(100):
        page = store.since(seq, limit)
        if not page.events:
            return seen
        seen.extend(e.seq for e in page.events)
        seq = max(e.seq for e in page.events)
        if seq >= page.last_seq:
            return seen
    raise AssertionError("paging did not terminate")


def test_a_page_of_only_unreadable_rows_does_not_hide_the_events_after_it(db: Path) -> None:
    with EventStore.open(db, boot_id=BOOT) as store:
        for _ in range(4):
            store.append(draft())
        store._conn.execute("UPDATE events SET payload = x'c1c1' WHERE seq = 2")
        # The page for seqs above 1 holds only the unreadable seq 2: an empty page would read
        # as "nothing more", and seqs 3 and 4 would never reach the consumer.
        assert [e.seq for e in store.since(1, limit=1).events] == [3]
        assert walk(store, limit=1) == [1, 3, 4]


def test_a_commit_that_fails_busy_is_rolled_back_and_the_next_append_works(db: Path) -> None:
    with EventStore.open(db, boot_id=BOOT) as store:
        assert store.append(draft()).seq == 1
        # Without WAL (a filesystem without shared memory: open() only warns), a reader's
        # shared lock makes the writer's COMMIT fail busy, and SQLite keeps the transaction.
        store._conn.execute("PRAGMA journal_mode=DELETE").fetchall()
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchall()
        with pytest.raises(sqlite3.OperationalError) as failed:
            store.append(draft())
        assert is_busy(failed.value)
        # Nothing of the failed append is visible: not committed, so never served.
        assert [e.seq for e in store.since(0).events] == [1]
        reader.execute("COMMIT")
        reader.close()
        # The daemon retries the same draft after BUSY_RETRY_S: it must get in, with the seq
        # right after the last committed one.
        assert store.append(draft()).seq == 2
        assert store.append(draft()).seq == 3
    with EventStore.open(db, boot_id=BOOT) as store:
        assert [e.seq for e in store.since(0).events] == [1, 2, 3]


def test_a_failed_flush_commit_does_not_leave_the_writer_locked_out(db: Path) -> None:
    with EventStore.open(db, boot_id=BOOT) as store:
        store.append(draft())
        store.flush()
        flush_conn = store._flush_conn
        assert flush_conn is not None

        def deny_commit(action: int, arg1: str | None, *_: object) -> int:
            if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT":
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK

        flush_conn.set_authorizer(deny_commit)
        with pytest.raises(sqlite3.DatabaseError):
            store.flush()  # the daemon logs this and goes on
        flush_conn.set_authorizer(None)
        # The flush's transaction must not still hold the write lock.
        assert store.append(draft()).seq == 2
        store.flush()
        assert store.append(draft()).seq == 3
