"""`appliance replay`: JSONL and CSV recordings through the core, calibration from a state dir,
malformed input named by its line, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from screening.synth import Clock, Head, empty, visit

from appliance.cli import main
from appliance.screening import calstore
from appliance.screening.replay import replay
from appliance.screening.settings import ScreeningSettings
from appliance.thermal.recording import CSV_HEADER, make_frame, write_recording


def frames_of_two_visits() -> list[tuple[float, float, np.ndarray]]:
    """A normal person, then a feverish one, each after an empty scene (as synth renders them)."""
    rng, clock = np.random.default_rng(5), Clock()
    frames = [
        *empty(clock, 2.0, rng=rng),
        *visit(clock, 3.0, [Head(face_c=34.0, distance_m=0.35)], rng=rng),
        *empty(clock, 2.0, rng=rng),
        *visit(clock, 3.0, [Head(face_c=35.8, distance_m=0.35)], rng=rng),
        *empty(clock, 1.0, rng=rng),
    ]
    return [(round(f.t + 100.0, 3), f.thermistor_c, f.pixels) for f in frames]


@pytest.fixture(scope="module")
def frames() -> list[tuple[float, float, np.ndarray]]:
    return frames_of_two_visits()


@pytest.fixture
def jsonl(tmp_path: Path, frames: list[tuple[float, float, np.ndarray]]) -> Path:
    path = tmp_path / "visit.jsonl"
    write_recording(path, (make_frame(t, th, px) for t, th, px in frames))
    return path


def write_csv(path: Path, frames: list[tuple[float, float, np.ndarray]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_HEADER)
        for t, th, px in frames:
            w.writerow([t, th, *(float(v) for v in np.asarray(px, dtype=np.float32).ravel())])
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["replay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Neither this machine's /etc/appliance nor a developer's environment may leak in.
    for var in ("APPLIANCE_CONFIG", "APPLIANCE_STATE_DIR", "APPLIANCE_RUN_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("appliance.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def test_jsonl_gives_one_line_per_person_then_a_summary(
    capsys: pytest.CaptureFixture[str], jsonl: Path
) -> None:
    code, out, err = run(capsys, str(jsonl), "--json")
    assert code == 0, err
    *people, last = lines(out)
    assert [p["result"] for p in people] == ["normal", "elevated"]
    for p in people:
        assert set(p) >= {"start", "end", "result", "estimate_c", "confidence"}
        assert isinstance(p["estimate_c"], float) and 0.0 <= p["confidence"] <= 1.0  # type: ignore[operator]
    summary = last["summary"]
    assert isinstance(summary, dict)
    assert summary["results"] == {"normal": 1, "elevated": 1, "retry": 0}
    assert summary["frames"] == 110 and summary["duration_s"] == pytest.approx(10.9)
    assert summary["calibration"] == {"offset_c": 0.0, "source": "none", "reference_c": None}
    assert summary["settings"]["distance_max_m"] == 0.55


def test_the_cli_gives_what_the_core_gives(
    capsys: pytest.CaptureFixture[str], jsonl: Path, frames: list[tuple[float, float, np.ndarray]]
) -> None:
    # The config's defaults equal the core's, and the recording starts on a warm sensor.
    settings = ScreeningSettings()
    expected = [r.as_dict() for r in replay(frames, settings, warm_start=True)]
    _, out, _ = run(capsys, str(jsonl), "--json")
    assert lines(out)[:-1] == expected


def test_csv_gives_the_same_results(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    jsonl: Path,
    frames: list[tuple[float, float, np.ndarray]],
) -> None:
    path = write_csv(tmp_path / "visit.csv", frames)
    code, out, err = run(capsys, str(path), "--json")
    assert code == 0, err
    _, from_jsonl, _ = run(capsys, str(jsonl), "--json")
    assert lines(out)[:-1] == lines(from_jsonl)[:-1]


def test_the_table_is_for_people(capsys: pytest.CaptureFixture[str], jsonl: Path) -> None:
    code, out, _ = run(capsys, str(jsonl))
    assert code == 0
    assert "normal" in out and "elevated" in out and "°C" in out
    assert out.strip().splitlines()[-1].startswith("2 screened: 1 normal, 1 elevated, 0 retry")


def test_a_malformed_line_is_named_and_exits_2(capsys: pytest.CaptureFixture[str], jsonl: Path) -> None:
    text = jsonl.read_text().splitlines()
    text[41] = text[41].replace('"pixels"', '"pixles"')
    jsonl.write_text("\n".join(text) + "\n")
    code, out, err = run(capsys, str(jsonl), "--json")
    assert code == 2
    assert f"{jsonl}:42:" in err and "pixels" in err
    assert "summary" not in out


def test_a_malformed_csv_cell_is_named_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, frames: list[tuple[float, float, np.ndarray]]
) -> None:
    path = write_csv(tmp_path / "bad.csv", frames[:20])
    rows = path.read_text().splitlines()
    cells = rows[5].split(",")
    cells[3] = "warm"
    rows[5] = ",".join(cells)
    path.write_text("\n".join(rows) + "\n")
    code, _, err = run(capsys, str(path))
    assert code == 2
    assert f"{path}:6:" in err and "'warm'" in err


def test_a_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such file" in err


def test_the_calibration_in_the_state_dir_applies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, jsonl: Path
) -> None:
    state = tmp_path / "state"
    calstore.save(
        state, offset_c=0.5, reference_c=36.8, measured_c=36.3, frames=50, spread_c=0.1, source="cli"
    )
    _, plain, _ = run(capsys, str(jsonl), "--json")
    code, shifted, err = run(capsys, str(jsonl), "--json", "--state-dir", str(state))
    assert code == 0, err
    before, after = lines(plain), lines(shifted)
    assert after[0]["estimate_c"] == pytest.approx(before[0]["estimate_c"] + 0.5, abs=0.011)  # type: ignore[operator]
    calibration = after[-1]["summary"]["calibration"]  # type: ignore[index]
    assert calibration == {"offset_c": 0.5, "source": str(state / "calibration.json"), "reference_c": 36.8}


def test_the_config_state_dir_applies_only_when_a_config_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    calstore.save(
        state, offset_c=-0.4, reference_c=36.8, measured_c=37.2, frames=50, spread_c=0.1, source="cli"
    )
    config = tmp_path / "appliance.toml"
    config.write_text(f'[paths]\nstate_dir = "{state}"\n')
    _, out, _ = run(capsys, str(jsonl), "--json", "--config", str(config))
    assert lines(out)[-1]["summary"]["calibration"]["offset_c"] == -0.4  # type: ignore[index]
    monkeypatch.setenv("APPLIANCE_STATE_DIR", str(state))
    _, out, _ = run(capsys, str(jsonl), "--json")
    assert lines(out)[-1]["summary"]["calibration"]["offset_c"] == -0.4  # type: ignore[index]


def test_an_unreadable_calibration_is_an_error_not_offset_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, jsonl: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "calibration.json").write_text("{not json")
    code, out, err = run(capsys, str(jsonl), "--json", "--state-dir", str(state))
    assert code == 2 and out == ""
    assert "calibration.json" in err and "not valid JSON" in err
