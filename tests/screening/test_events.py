"""The durable event store, on real SQLite files: seq, paging, retention, damage, concurrency."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from appliance.errors import StateError
from appliance.screening import events
from appliance.screening.events import SEQ_SKIP_AFTER_POWER_LOSS, Draft, EventStore

BOOT = "boot-a"


def draft(result: str = "normal", estimate: float | None = 36.6, *, wall: float | None = None) -> Draft:
    return Draft(
        wall_ts=time.time() if wall is None else wall,
        start=100.0,
        end=101.0,
        result=result,  # type: ignore[arg-type]
        estimate_c=estimate,
        confidence=0.8,
        distance_m=0.45,
        ambient_c=24.0,
        reason="unstable" if result == "retry" else None,
        threshold_c=38.0,
    )


def open_store(path: Path, **kwargs: object) -> EventStore:
    kwargs.setdefault("boot_id", BOOT)
    return EventStore.open(path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "events.db"


def test_seq_is_monotonic_and_continues_after_reopen(db: Path) -> None:
    with open_store(db) as store:
        seqs = [store.append(draft()).seq for _ in range(3)]
        assert seqs == [1, 2, 3]
    with open_store(db) as store:
        assert store.last_seq == 3
        assert store.append(draft()).seq == 4
    assert [r[0] for r in sqlite3.connect(db).execute("PRAGMA journal_mode")] == ["wal"]
    with open_store(db, synchronous="FULL") as store:  # only to measure the alternative
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)
    with open_store(db) as store:
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == events.SCHEMA_VERSION


def test_elevated_result_gets_an_alert_with_the_same_seq(db: Path) -> None:
    with open_store(db) as store:
        normal = store.append(draft("normal"))
        hot = store.append(draft("elevated", 38.9))
        retry = store.append(draft("retry", None))
        assert normal.alert is None and retry.alert is None
        assert hot.alert is not None
        assert hot.alert.seq == hot.result.seq == hot.seq == 2
        assert hot.alert.estimate_c == 38.9 and hot.alert.threshold_c == 38.0
        page = store.since(0)
    assert [(e.seq, e.topic, e.result.result) for e in page.events] == [
        (1, "screening.result", "normal"),
        (2, "screening.result", "elevated"),
        (2, "alert.fever", "elevated"),
        (3, "screening.result", "retry"),
    ]
    assert page.last_seq == 3
    assert page.events[3].result.estimate_c is None


def test_out_of_range_numbers_are_cleaned_before_they_reach_the_bus(db: Path) -> None:
    odd = Draft(
        wall_ts=1.0, start=0.0, end=1.0, result="normal", estimate_c=float("nan"),
        confidence=1.0000001, distance_m=float("inf"), ambient_c=None,
    )  # fmt: skip
    with open_store(db) as store:
        result = store.append(odd).result
    assert result.confidence == 1.0
    assert result.estimate_c is None and result.distance_m is None


def test_events_since_pages_without_splitting_a_result_from_its_alert(db: Path) -> None:
    with open_store(db) as store:
        for i in range(7):
            store.append(draft("elevated" if i % 2 else "normal", 38.5 if i % 2 else 36.5))
        got: list[tuple[int, str]] = []
        seq = 0
        pages = 0
        while True:
            page = store.since(seq, limit=2)
            pages += 1
            assert page.last_seq == 7
            if not page.events:
                break
            assert len({e.seq for e in page.events}) <= 2
            got += [(e.seq, e.topic) for e in page.events]
            seq = page.events[-1].seq
        assert pages == 5  # 2 + 2 + 2 + 1 seqs, then an empty page
        assert [s for s, t in got if t == "screening.result"] == list(range(1, 8))
        assert [s for s, t in got if t == "alert.fever"] == [2, 4, 6]
        assert len(got) == len(set(got))
        assert store.since(7).events == []
        assert [e.seq for e in store.since(5, limit=1000).events] == [6, 6, 7]


def test_retention_purges_old_events_and_seq_never_goes_back(db: Path) -> None:
    day = 86400.0
    now = time.time()
    with open_store(db) as store:
        store.append(draft(wall=now - 40 * day))
        store.append(draft("elevated", 39.0, wall=now - 31 * day))
        store.append(draft(wall=now - 1 * day))
        # All of one boot: purged against the clock whether or not it is known to be synchronized.
        assert store.purge(now - 30 * day, clock_synchronized=None) == 3  # one result, one result + its alert
        assert [e.seq for e in store.since(0).events] == [3]
        assert store.purge(now, clock_synchronized=None) == 1
        assert store.count() == 0
        assert store.last_seq == 3
        assert store.append(draft()).seq == 4
    with open_store(db) as store:
        store.purge(time.time() + 1, clock_synchronized=None)
    with open_store(db) as store:
        # Every row gone, yet a reopened store still knows where seq stood.
        assert store.count() == 0 and store.last_seq == 4
        assert store.append(draft()).seq == 5


def test_garbage_file_is_moved_aside_and_a_fresh_store_starts_above_the_wall_clock(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database\n" * 500)
    before = int(time.time() * 1000)
    with open_store(db) as store:
        assert store.recovered is not None and "moved to events.db.damaged-" in store.recovered
        seq = store.append(draft()).seq
    assert seq > before
    aside = [p for p in db.parent.iterdir() if p.name.startswith("events.db.damaged-")]
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
    with open_store(db) as store:
        assert store.recovered is None
        assert store.append(draft()).seq == seq + 1


def test_damaged_pages_are_found_and_seq_continues_above_the_old_last_seq(db: Path) -> None:
    with open_store(db) as store:
        for _ in range(300):
            store.append(draft("elevated", 39.0))
        last = store.last_seq
    size = db.stat().st_size
    page = 4096
    assert size > 6 * page
    with open(db, "r+b") as fh:  # scribble over the middle of the events table
        fh.seek(size // 2 // page * page)
        fh.write(b"\xa5" * page)
    with open_store(db) as store:
        assert store.recovered is not None and "integrity check failed" in store.recovered
        assert store.append(draft()).seq == last + 1
        assert store.count() == 1


@pytest.mark.parametrize("kind", ["foreign", "newer"])
def test_a_file_this_firmware_cannot_read_is_set_aside_intact(db: Path, kind: str) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    if kind == "foreign":
        conn.execute("CREATE TABLE photos (id INTEGER)")
    else:
        conn.executescript(events._SCHEMA)
        conn.execute("INSERT INTO meta VALUES ('last_seq', 41)")
        conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    floor = int(time.time() * 1000)
    with open_store(db) as store:
        assert store.recovered is not None
        seq = store.append(draft()).seq
    # The newer file's last seq is readable; the foreign one has none, so the wall clock rules.
    assert seq == 42 if kind == "newer" else seq > floor
    (aside,) = [p for p in db.parent.iterdir() if ".damaged-" in p.name and not p.name.endswith("-wal")]
    assert sqlite3.connect(aside).execute("PRAGMA user_version").fetchone()[0] == (
        2 if kind == "newer" else 0
    )


def test_unopenable_location_is_a_clear_error_and_nothing_is_moved(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(StateError, match="cannot create"):
        EventStore.open(blocker / "events.db")
    assert blocker.read_text().startswith("a file")
    db = tmp_path / "dir-as-db"
    db.mkdir()
    with pytest.raises(StateError, match="cannot open"):
        EventStore.open(db)
    assert db.is_dir() and not list(tmp_path.glob("dir-as-db.damaged-*"))


def test_read_only_open_refuses_missing_and_damaged_files_without_touching_them(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no events database"):
        EventStore.open_readonly(tmp_path / "events.db")
    assert not (tmp_path / "events.db").exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 5000)
    with pytest.raises(StateError):
        EventStore.open_readonly(junk)
    assert junk.read_bytes() == b"x" * 5000
    db = tmp_path / "events.db"
    with open_store(db) as store:
        store.append(draft())
    with EventStore.open_readonly(db) as ro, pytest.raises(StateError, match="read-only"):
        ro.append(draft())


def test_a_reboot_without_a_clean_close_skips_seqs_and_a_crash_does_not(db: Path) -> None:
    store = open_store(db)
    store.append(draft())
    store.append(draft())
    # A crash: the process dies with the file open. Same boot, so the page cache kept it all.
    store._conn.close()
    store = open_store(db)
    assert store.append(draft()).seq == 3
    store._conn.close()
    # Power cut: not closed, and now it is another boot: what was published just before may
    # be missing, so seqs jump rather than be handed out twice.
    store = open_store(db, boot_id="boot-b")
    assert store.append(draft()).seq == 4 + SEQ_SKIP_AFTER_POWER_LOSS
    store.close()
    # A clean close then a reboot: no jump.
    with open_store(db, boot_id="boot-c") as store:
        assert store.append(draft()).seq == 5 + SEQ_SKIP_AFTER_POWER_LOSS


def test_flush_puts_committed_events_into_the_database_file_itself(db: Path) -> None:
    def in_main_file() -> int:
        # immutable=1 reads the database file alone, ignoring the WAL: what a power cut
        # would leave if the WAL had not been synced.
        uri = f"file:{db}?immutable=1"
        conn = sqlite3.connect(uri, uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        finally:
            conn.close()

    with open_store(db) as store:
        store.flush()
        base = in_main_file()
        store.append(draft("elevated", 39.0))
        assert in_main_file() == base  # committed, but only in the WAL so far
        store.flush()
        assert in_main_file() == base + 2
        assert store.append(draft()).seq == 2  # the store keeps working after a flush


def test_an_unreadable_row_is_skipped_not_fatal(db: Path) -> None:
    with open_store(db) as store:
        for _ in range(3):
            store.append(draft())
        store._conn.execute("UPDATE events SET payload = x'c1c1' WHERE seq = 2")
        assert [e.seq for e in store.since(0).events] == [1, 3]
        assert [e.seq for e in store.rows()] == [1, 3]


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from appliance.screening.events import Draft, EventStore
    db, stop, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = EventStore.open(db, boot_id="w")
    print("ready", flush=True)
    n = 0
    while not os.path.exists(stop):  # a result every few ms, until told to stop
        result = "elevated" if n % 3 == 0 else "normal"
        store.append(Draft(wall_ts=time.time(), start=0.0, end=1.0, result=result,
                           estimate_c=39.0 if result == "elevated" else 36.5,
                           confidence=0.9, threshold_c=38.0))
        n += 1
        if n % 10 == 0:
            store.flush()
        time.sleep(pause)
    store.close()
    print(n, flush=True)
    """
)


class Writer:
    """Another process appending results (every third one elevated) until stopped."""

    def __init__(self, db: Path, pause: float = 0.002) -> None:
        self.stop_file = db.with_name("stop-writer")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(self.stop_file), str(pause)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        """Stop it; how many results it wrote."""
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, "the writer failed"
        return int(out.strip())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def check_snapshot(results: list[int], alerts: list[int]) -> None:
    # Whole transactions only: a prefix of the results, each elevated one with its alert.
    assert results == list(range(1, len(results) + 1))
    assert alerts == [s for s in results if (s - 1) % 3 == 0]


def test_a_reader_sees_consistent_snapshots_while_another_process_writes(db: Path) -> None:
    with open_store(db):
        pass
    writer = Writer(db)
    try:
        sizes: list[int] = []
        deadline = time.monotonic() + 60
        while len(set(sizes)) < 5 and time.monotonic() < deadline:
            with EventStore.open_readonly(db) as ro:
                rows = list(ro.rows())
            check_snapshot(
                [e.seq for e in rows if e.topic == "screening.result"],
                [e.seq for e in rows if e.topic == "alert.fever"],
            )
            sizes.append(len([e for e in rows if e.topic == "screening.result"]))
        n = writer.stop()
    finally:
        writer.kill()
    assert len(set(sizes)) >= 5 and sizes == sorted(sizes), sizes
    with EventStore.open_readonly(db) as ro:
        assert ro.last_seq == n and ro.count() == n + len(range(0, n, 3))
