"""The stored site calibration: a damaged file is a clear ConfigError, never a crash or a NaN."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from appliance.errors import ConfigError
from appliance.screening import calstore


def good_record(**changes: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "offset_c": -0.4,
        "reference_c": 36.8,
        "measured_c": 37.2,
        "frames": 50,
        "spread_c": 0.08,
        "source": "bus",
        "wall_ts": 1.7e9,
    }
    rec.update(changes)
    return rec


def write(state: Path, text: str) -> None:
    (state / calstore.FILENAME).write_text(text, encoding="utf-8")


def test_a_good_file_loads(tmp_path: Path) -> None:
    write(tmp_path, json.dumps({"version": 1, "current": good_record(), "history": [good_record()]}))
    current, history = calstore.load(tmp_path)
    assert current is not None and current.offset_c == -0.4 and len(history) == 1


@pytest.mark.parametrize(
    "field, raw",
    [
        ("offset_c", "NaN"),
        ("offset_c", '"nan"'),
        ("measured_c", "NaN"),
        ("reference_c", "-Infinity"),
        ("spread_c", "NaN"),
        ("wall_ts", "Infinity"),
    ],
)
def test_a_non_finite_number_is_a_config_error_not_a_nan_offset(tmp_path: Path, field: str, raw: str) -> None:
    # Python's json reads NaN and Infinity; a NaN offset would pass |offset| <= 5 and turn
    # every estimate into NaN: a kiosk answering "retry" forever with nothing saying why.
    text = json.dumps({"version": 1, "current": good_record(**{field: "@@"})}).replace('"@@"', raw)
    write(tmp_path, text)
    with pytest.raises(ConfigError, match=field):
        calstore.load(tmp_path)


@pytest.mark.parametrize(
    "doc",
    [
        json.dumps({"version": 1, "current": good_record(frames="@@")}).replace('"@@"', "1e999"),
        '{"version": 1, "current": null, "history": 5}',
        '{"version": 1, "current": null, "history": {"offset_c": 0.1}}',
        '{"version": 1, "current": null, "history": [5]}',
        '{"version": 1, "current": [1, 2]}',
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=["frames-overflow", "history-int", "history-dict", "history-item", "current-list", "deep"],
)
def test_a_damaged_file_is_a_config_error_not_a_crash(tmp_path: Path, doc: str) -> None:
    write(tmp_path, doc)
    with pytest.raises(ConfigError):
        calstore.load(tmp_path)
    with pytest.raises(ConfigError):
        calstore.offset(tmp_path)


def test_save_refuses_a_non_finite_calibration(tmp_path: Path) -> None:
    for bad in (
        {"offset_c": math.nan},
        {"measured_c": math.nan},
        {"reference_c": math.inf},
        {"spread_c": math.nan},
    ):
        values: dict[str, Any] = {"offset_c": 0.2, "reference_c": 36.8, "measured_c": 36.6, "spread_c": 0.1}
        values.update(bad)
        with pytest.raises(ValueError, match="finite"):
            calstore.save(tmp_path, frames=50, source="bus", **values)
    assert not calstore.path_in(tmp_path).exists()
