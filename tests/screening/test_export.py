"""`appliance events export --csv`: through the real CLI, on real events.db files."""

from __future__ import annotations

import csv
import datetime
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.screening.events import Draft, EventStore
from appliance.screening.export import HEADER

from .test_events import Writer, check_snapshot

WALL = datetime.datetime(2025, 3, 1, 8, 30, 15, 250000, tzinfo=datetime.UTC).timestamp()


def fill(state: Path) -> None:
    with EventStore.open(state / "events.db", boot_id="x") as store:
        store.append(Draft(WALL, 10.0, 11.0, "normal", 36.64, 0.81234, 0.4567, 24.125, threshold_c=38.0))
        store.append(Draft(WALL + 60, 20.0, 21.0, "elevated", 38.91, 0.7, 0.4, 24.0, threshold_c=38.0))
        store.append(Draft(WALL + 120, 30.0, 31.0, "retry", None, 0.1, None, None, reason="unstable"))


def parse(text: str) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == HEADER
    return [dict(zip(HEADER, r, strict=True)) for r in rows[1:]]


def test_csv_to_a_file_has_a_header_and_one_row_per_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(tmp_path)
    out = tmp_path / "export" / "events.csv"
    assert main(["events", "export", "--csv", "--out", str(out), "--state-dir", str(tmp_path)]) == 0
    assert "exported 4 events (seq 1..3)" in capsys.readouterr().err
    rows = parse(out.read_text())
    assert [(r["seq"], r["topic"], r["result"]) for r in rows] == [
        ("1", "screening.result", "normal"),
        ("2", "screening.result", "elevated"),
        ("2", "alert.fever", "elevated"),
        ("3", "screening.result", "retry"),
    ]
    first = rows[0]
    assert first["wall_time_utc"] == "2025-03-01T08:30:15.250Z"
    assert (first["estimate_c"], first["confidence"], first["distance_m"], first["ambient_c"]) == (
        "36.64", "0.812", "0.457", "24.12",
    )  # fmt: skip
    assert rows[2]["threshold_c"] == "38.00" and rows[1]["threshold_c"] == ""
    assert rows[3]["estimate_c"] == "" and rows[3]["reason"] == "unstable"
    assert out.stat().st_mode & 0o077 == 0, "health readings must not be world-readable"
    assert [p.name for p in out.parent.iterdir()] == ["events.csv"]  # no temporary file left


def test_csv_on_stdout_from_a_seq_with_the_state_dir_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    fill(state)
    config = tmp_path / "appliance.toml"
    config.write_text(f'[paths]\nstate_dir = "{state}"\n')
    assert main(["events", "export", "--csv", "--since", "1", "--config", str(config)]) == 0
    rows = parse(capsys.readouterr().out)
    assert [r["seq"] for r in rows] == ["2", "2", "3"]
    assert main(["events", "export", "--csv", "--since", "3", "--state-dir", str(state)]) == 0
    assert parse(capsys.readouterr().out) == []


def test_a_missing_database_is_a_clear_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["events", "export", "--csv", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no events database" in err and str(tmp_path) in err
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_database_is_reported_and_left_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "events.db"
    db.write_bytes(b"\x00garbage" * 1000)
    out = tmp_path / "out.csv"
    assert main(["events", "export", "--csv", "--out", str(out), "--state-dir", str(tmp_path)]) == 1
    assert "events.db" in capsys.readouterr().err
    assert db.read_bytes() == b"\x00garbage" * 1000
    assert not out.exists()


def test_a_bad_config_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text("[paths]\nstate_dri = 1\n")
    assert main(["events", "export", "--csv", "--config", str(config)]) == 1
    assert "state_dri" in capsys.readouterr().err


def test_export_runs_while_the_daemon_writes(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with EventStore.open(db, boot_id="x"):
        pass
    writer = Writer(db, pause=0.005)
    cmd = [sys.executable, "-m", "appliance", "events", "export", "--csv", "--state-dir", str(tmp_path)]
    counts = []
    try:
        deadline = time.monotonic() + 60
        while len(set(counts)) < 3 and time.monotonic() < deadline:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ).stdout
            rows = parse(out)
            results = [int(r["seq"]) for r in rows if r["topic"] == "screening.result"]
            check_snapshot(results, [int(r["seq"]) for r in rows if r["topic"] == "alert.fever"])
            counts.append(len(results))
        n = writer.stop()  # it wrote on, undisturbed, all along
    finally:
        writer.kill()
    assert len(set(counts)) >= 3 and counts == sorted(counts), counts
    final = parse(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert len([r for r in final if r["topic"] == "screening.result"]) == n
