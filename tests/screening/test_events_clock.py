"""Wall-clock steps (a Raspberry Pi has no RTC: it boots on a stale clock until NTP steps it).

Rows stamped in this boot before a step are corrected by the step, using the boot id and
CLOCK_BOOTTIME the store is given; rows of earlier boots cannot be and are left alone. The
clocks here are fakes the tests step, on real SQLite files.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import msgspec
import pytest

from appliance.bus.topics import ScreeningResult
from appliance.screening import events
from appliance.screening.events import CLOCK_STEP_TOLERANCE_S, Draft, EventStore

DAY = 86400.0
TRUE_NOW = 1_790_000_000.0  # the real time when NTP syncs, in the tests' world
STALE = TRUE_NOW - 60 * DAY  # the clock fake-hwclock restored: the last shutdown, 60 days ago


class Clocks:
    """A wall clock and CLOCK_BOOTTIME: time passes on both; a step moves the wall clock only."""

    def __init__(self, wall: float, boot: float = 12.0) -> None:
        self.wall_s = wall
        self.boot_s = boot

    def wall(self) -> float:
        return self.wall_s

    def boottime(self) -> float:
        return self.boot_s

    def advance(self, seconds: float) -> None:
        self.wall_s += seconds
        self.boot_s += seconds

    def step(self, seconds: float) -> None:
        self.wall_s += seconds


def draft(clocks: Clocks, result: str = "normal", *, stamped: bool = False) -> Draft:
    """A result decided now; ``stamped``: with its CLOCK_BOOTTIME, as the daemon makes them."""
    return Draft(
        wall_ts=clocks.wall(),
        start=100.0,
        end=101.0,
        result=result,  # type: ignore[arg-type]
        estimate_c=39.0 if result == "elevated" else 36.6,
        confidence=0.8,
        threshold_c=38.0,
        boottime=clocks.boottime() if stamped else None,
    )


def open_store(db: Path, clocks: Clocks, boot: str) -> EventStore:
    return EventStore.open(db, boot_id=boot, now=clocks.wall, boottime=clocks.boottime)


def stamps(db: Path) -> dict[tuple[int, str], tuple[float, float]]:
    """(seq, topic) -> (wall_ts column, wall_ts in the stored payload), read past the store."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT seq, topic, wall_ts, payload FROM events").fetchall()
    finally:
        conn.close()
    decoder = msgspec.msgpack.Decoder(ScreeningResult)
    return {(seq, topic): (wall_ts, decoder.decode(payload).wall_ts) for seq, topic, wall_ts, payload in rows}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "events.db"


def previous_boot(db: Path, ages_days: tuple[int, ...] = (40, 10)) -> None:
    """Results of earlier boots, on a synced clock: by default 40 and 10 days before TRUE_NOW."""
    for age_days in ages_days:
        clocks = Clocks(TRUE_NOW - age_days * DAY)
        with open_store(db, clocks, f"boot-{age_days}") as store:
            store.append(draft(clocks))


def test_a_step_forward_corrects_this_boots_rows_and_the_purge_keeps_them(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    previous_boot(db)  # seqs 1 (40 days old) and 2 (10 days old)
    clocks = Clocks(STALE)
    with open_store(db, clocks, "boot-now") as store:
        for result in ("normal", "elevated", "normal"):  # seqs 3, 4 (+ its alert), 5
            store.append(draft(clocks, result))
            clocks.advance(30.0)
        stale = stamps(db)
        clocks.step(60 * DAY)  # NTP syncs
        with caplog.at_level(logging.INFO, logger=events.__name__):
            # 30-day retention: only the 40-day-old result of the earlier boot is due.
            assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True) == 1
            assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True) == 0
        fixed = stamps(db)
        assert sorted(fixed) == [(2, "screening.result"), (3, "screening.result"), (4, "alert.fever"),
                                 (4, "screening.result"), (5, "screening.result")]  # fmt: skip
        assert fixed[(2, "screening.result")] == stale[(2, "screening.result")]  # an earlier boot's
        for key in [k for k in fixed if k[0] >= 3]:
            assert fixed[key][0] == fixed[key][1] == stale[key][0] + 60 * DAY, key
        # The replay a viewer gets has the corrected times too.
        replay = {(e.seq, e.topic): e.result.wall_ts for e in store.since(0).events}
        assert replay == {k: v[1] for k, v in fixed.items()}
        assert {(e.seq, e.topic): e.wall_ts for e in store.rows()} == {k: v[0] for k, v in fixed.items()}
        # New results carry on under the new offset, and are not shifted again.
        clocks.advance(5.0)
        new = store.append(draft(clocks))
        assert new.result.wall_ts == clocks.wall()
    assert stamps(db)[(new.seq, "screening.result")] == (clocks.wall(), clocks.wall())
    said = [r for r in caplog.records if "stepped" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert said[0].levelno == logging.WARNING
    assert "forward" in said[0].getMessage() and "60 d" in said[0].getMessage()
    assert "4 rows" in said[0].getMessage()


def test_a_restart_in_the_same_boot_after_the_step_still_corrects(db: Path) -> None:
    clocks = Clocks(STALE)
    store = open_store(db, clocks, "boot-now")
    store.append(draft(clocks, "elevated"))
    store._conn.close()  # the daemon is killed (not even a clean close)
    before = stamps(db)
    clocks.advance(600.0)
    clocks.step(60 * DAY)
    with open_store(db, clocks, "boot-now") as store:  # restarted, same boot
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True) == 0
    after = stamps(db)
    assert after == {k: (v[0] + 60 * DAY, v[1] + 60 * DAY) for k, v in before.items()}
    # Reopened again in the same boot: the correction is not applied twice.
    with open_store(db, clocks, "boot-now") as store:
        store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True)
    assert stamps(db) == after


def test_rows_of_an_earlier_boot_are_left_alone_after_a_reboot(db: Path) -> None:
    clocks = Clocks(STALE)
    with open_store(db, clocks, "boot-1") as store:
        store.append(draft(clocks))
    before = stamps(db)
    # Power-off, reboot: boot time starts over and the clock is now right. Nothing links the
    # old boot's stale stamps to this clock, so they stay as they were.
    clocks = Clocks(TRUE_NOW, boot=8.0)
    with open_store(db, clocks, "boot-2") as store:
        clocks.step(3600.0)
        store.append(draft(clocks))
        assert store.purge(clocks.wall() - 90 * DAY, clock_synchronized=True) == 0
    assert stamps(db)[(1, "screening.result")] == before[(1, "screening.result")]


def test_a_step_backwards_corrects_rows_stamped_in_the_future(db: Path) -> None:
    clocks = Clocks(TRUE_NOW + 60 * DAY)  # a clock that was ahead
    with open_store(db, clocks, "boot-now") as store:
        store.append(draft(clocks))
        stamped = clocks.wall()
        clocks.step(-60 * DAY)
        store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True)
        assert [e.result.wall_ts for e in store.since(0).events] == [stamped - 60 * DAY]
        # They age like any other result now: due once older than the retention.
        clocks.advance(31 * DAY)
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True) == 1


def test_a_small_drift_below_the_tolerance_changes_nothing(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clocks = Clocks(TRUE_NOW)
    with open_store(db, clocks, "boot-now") as store:
        store.append(draft(clocks, "elevated"))
        before = stamps(db)
        clocks.step(CLOCK_STEP_TOLERANCE_S * 0.75)
        with caplog.at_level(logging.INFO, logger=events.__name__):
            store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True)
            store.append(draft(clocks))
    assert {k: v for k, v in stamps(db).items() if k[0] == 1} == before
    assert not [r for r in caplog.records if "stepped" in r.getMessage()]


def test_a_result_decided_before_the_step_and_written_after_it_gets_the_corrected_time(db: Path) -> None:
    clocks = Clocks(STALE)
    with open_store(db, clocks, "boot-now") as store:
        waiting = draft(clocks, "elevated", stamped=True)  # events.db was unwritable just then
        clocks.advance(20.0)
        clocks.step(60 * DAY)
        appended = store.append(waiting)
    assert appended.alert is not None
    assert appended.result.wall_ts == appended.alert.wall_ts == STALE + 60 * DAY
    assert set(stamps(db).values()) == {(STALE + 60 * DAY, STALE + 60 * DAY)}


def test_a_correction_that_cannot_be_written_loses_nothing_and_is_done_by_the_next_append(db: Path) -> None:
    clocks = Clocks(STALE)
    with open_store(db, clocks, "boot-now") as store:
        store.append(draft(clocks))
        before = stamps(db)
        clocks.step(60 * DAY)

        def deny_updates(action: int, *_: object) -> int:
            return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_UPDATE else sqlite3.SQLITE_OK

        store._conn.set_authorizer(deny_updates)
        with pytest.raises(sqlite3.DatabaseError):
            store.append(draft(clocks))
        with pytest.raises(sqlite3.DatabaseError):
            store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True)  # never purges on the stale view
        store._conn.set_authorizer(None)
        assert stamps(db) == before  # nothing half-done
        assert store.append(draft(clocks)).seq == 2
    assert stamps(db)[(1, "screening.result")] == (STALE + 60 * DAY, STALE + 60 * DAY)


def write_pre_clock_keys_db(db: Path, *stamps: float) -> None:
    """What the firmware before the clock keys left: no clock keys in meta, one result per
    stamp (seq 1, 2, ...), written in boot "boot-now"."""
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.executescript(events._SCHEMA)
    conn.execute(f"PRAGMA user_version = {events.SCHEMA_VERSION}")
    encoder = msgspec.msgpack.Encoder()
    for seq, ts in enumerate(stamps, 1):
        payload = encoder.encode(ScreeningResult(seq=seq, wall_ts=ts, start=0.0, end=1.0, result="normal",
                                                 estimate_c=36.5, confidence=0.9))  # fmt: skip
        conn.execute("INSERT INTO events VALUES (?, 'screening.result', ?, 'normal', NULL, NULL, ?)",
                     (seq, ts, payload))  # fmt: skip
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("last_seq", len(stamps)), ("boot_id", "boot-now"), ("clean", 1)]
    )
    conn.commit()
    conn.close()


def test_a_database_from_before_this_change_opens_and_purges_as_before(db: Path) -> None:
    # What the previous firmware left: no clock keys in meta, stamped in this very boot.
    write_pre_clock_keys_db(db, STALE - 40 * DAY, STALE)
    clocks = Clocks(STALE)
    with open_store(db, clocks, "boot-now") as store:
        clocks.step(60 * DAY)
        # Old rows count as an earlier boot's: purged by their stamps, as before.
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True) == 2
        assert store.append(draft(clocks)).seq == 3
    with open_store(db, clocks, "boot-now") as store:
        assert store.last_seq == 3 and store.count() == 1


# --- a clock wrongly ahead at boot, before NTP (if ever) syncs ----------------------------------
# Earlier boots' rows cannot be corrected later, so a purge must not trust an unsynchronized
# clock with them: it deletes no more of them than a purge at the end of the last boot would.

AHEAD = TRUE_NOW + 365 * DAY  # a bad RTC module, a fake-hwclock file saved from a wrong time


def seqs(db: Path) -> list[int]:
    return sorted({seq for seq, _ in stamps(db)})


@pytest.mark.parametrize("synchronized", [False, None])
def test_a_clock_a_year_ahead_and_not_synchronized_spares_earlier_boots_rows(
    db: Path, synchronized: bool | None
) -> None:
    previous_boot(db, (45, 10))  # seqs 1 and 2; the last boot ended 10 days before TRUE_NOW
    clocks = Clocks(AHEAD)
    with open_store(db, clocks, "boot-now") as store:
        store.append(draft(clocks))  # seq 3
        # Against the wrong now, both would go. Against the last boot's end, only the row that
        # was already beyond the retention then.
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=synchronized) == 1
        assert store.purge_spared == 1
        assert seqs(db) == [2, 3]
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=synchronized) == 0
        assert store.purge_spared == 1
        assert store.last_seq == 3


def test_the_same_clock_synchronized_purges_earlier_boots_rows_against_it(db: Path) -> None:
    previous_boot(db, (45, 10))
    clocks = Clocks(AHEAD)
    with open_store(db, clocks, "boot-now") as store:
        store.append(draft(clocks))
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=False) == 1
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=True) == 1
        assert store.purge_spared == 0
        assert seqs(db) == [3]
        assert store.last_seq == 3  # the high-water mark stays
    with open_store(db, clocks, "boot-next") as store:
        assert store.append(draft(clocks)).seq == 4


@pytest.mark.parametrize("synchronized", [True, False, None])
def test_this_boots_rows_beyond_the_retention_are_purged_either_way(
    db: Path, synchronized: bool | None
) -> None:
    previous_boot(db, (10,))  # seq 1
    clocks = Clocks(AHEAD)
    with open_store(db, clocks, "boot-now") as store:
        store.append(draft(clocks, "elevated"))  # seq 2 and its alert
        clocks.advance(31 * DAY)  # the device stays up a month on its wrong clock
        store.append(draft(clocks))  # seq 3
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=synchronized) == (
            3 if synchronized else 2
        )
    assert seqs(db) == ([3] if synchronized else [1, 3])


@pytest.mark.parametrize("synchronized", [True, False, None])
def test_a_file_with_no_earlier_boots_rows_purges_as_before(db: Path, synchronized: bool | None) -> None:
    clocks = Clocks(AHEAD)
    with open_store(db, clocks, "boot-now") as store:
        store.append(draft(clocks, "elevated"))
        clocks.advance(31 * DAY)
        store.append(draft(clocks))
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=synchronized) == 2
        assert store.purge_spared == 0
        assert seqs(db) == [2]


def test_a_clock_behind_the_earlier_boots_purges_as_before_even_unsynchronized(db: Path) -> None:
    previous_boot(db, (45, 10))
    clocks = Clocks(STALE)  # 1970 or a stale fake-hwclock: nothing looks old, nothing goes
    with open_store(db, clocks, "boot-now") as store:
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=False) == 0
        assert store.purge_spared == 0
    assert seqs(db) == [1, 2]


def test_rows_from_before_the_clock_keys_count_as_an_earlier_boots_when_unsynchronized(db: Path) -> None:
    write_pre_clock_keys_db(db, TRUE_NOW - 45 * DAY, TRUE_NOW - 10 * DAY)
    clocks = Clocks(AHEAD)
    with open_store(db, clocks, "boot-now") as store:
        assert store.purge(clocks.wall() - 30 * DAY, clock_synchronized=None) == 1
        assert store.purge_spared == 1
    assert seqs(db) == [2]
