"""`appliance bench screening --quick`: every key there, every figure in a sane range.

No timing is asserted (the machine is shared); the frame-to-alert part, which starts a broker
and the screening daemon, is replaced here by stand-ins so that its merging and its failure
path are what is tested, not its figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance.bench import alert_latency, run_bench
from appliance.bench import screening as screening_bench
from appliance.bench.screening import TARGETS, bench_screening
from appliance.screening import corpus, evaluate

KEYS = {
    "frame_cost_p50_ms",
    "griddata_cost_p50_ms",
    "speedup_vs_griddata",
    "frame_to_alert_p99_ms",
    "time_to_result_s",
    "sensitivity",
    "false_alarm_rate",
    "mae_c",
    "fault_normal_results",
    "confusion",
    "retry_rate",
    "no_result_rate",
    "targets",
    "noncompliant_wrong_normal",
    "noncompliant_answered_rate",
    "confusion_noncompliant",
    "time_to_result_from_arrival_s",
    "mae_by_start_distance",
    "fixed_behaviour",
    "comfortable_window",
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def result(cache: Path) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APPLIANCE_CACHE_DIR", str(cache))
        mp.setattr(
            alert_latency,
            "measure_frame_to_alert",
            lambda quick: {"frame_to_alert_p99_ms": 1.5, "frame_to_alert_p50_ms": 0.8, "stand_in": quick},
        )
        return bench_screening(quick=True)


def test_every_key_is_there(result: dict[str, Any]) -> None:
    assert set(result) >= KEYS
    assert set(result["targets"]) == set(TARGETS)
    assert json.loads(json.dumps(result)) == result  # plain JSON all the way down


def test_the_alert_latency_part_is_merged_as_it_comes(result: dict[str, Any]) -> None:
    assert result["stand_in"] is True  # quick was passed through
    assert result["frame_to_alert_p99_ms"] == 1.5
    assert result["targets"]["frame_to_alert_p99_ms"] == {"target": "<= 5", "value": 1.5, "pass": True}


def test_the_figures_are_in_sane_ranges(result: dict[str, Any]) -> None:
    assert result["quick"] is True
    assert result["suite"]["people"] >= 40 and result["suite"]["split"] == "test"
    assert 0 < result["frame_cost_p50_ms"] < 50 and 0 < result["griddata_cost_p50_ms"] < 500
    assert result["speedup_vs_griddata"] == pytest.approx(
        result["griddata_cost_p50_ms"] / result["frame_cost_p50_ms"], rel=0.01
    )
    for rate in ("sensitivity", "false_alarm_rate", "retry_rate", "no_result_rate", "answered_rate"):
        assert 0.0 <= result[rate] <= 1.0, rate
    assert 0.0 <= result["mae_c"] < 5.0
    assert -1.0 < result["time_to_result_s"] < 10.0
    assert result["fault_normal_results"] >= 0
    confusion = result["confusion"]
    assert set(confusion) == set(evaluate.ROWS)
    assert sum(sum(row.values()) for row in confusion.values()) == result["people"]
    # The headline is the compliant people; the others are counted on their own.
    noncompliant = result["confusion_noncompliant"]
    assert sum(sum(row.values()) for row in noncompliant.values()) == result["noncompliant_people"]
    assert result["people"] + result["noncompliant_people"] == result["suite"]["people"]
    assert result["noncompliant_wrong_normal"] >= 0
    # The old view: the same seeds, nobody following prompts, everyone scored.
    fixed = result["fixed_behaviour"]
    assert fixed["people"] >= 40 and 0.0 <= fixed["sensitivity"] <= 1.0
    assert result["comfortable_window"]["distance_max_m"] == 0.55
    assert result["calibration"]["sites"] == result["suite"]["sessions"]


def test_the_suite_is_cached_by_version(result: dict[str, Any], cache: Path) -> None:
    assert Path(result["suite"]["path"]).parent == cache / f"suite-{corpus.suite_version()}"
    assert (Path(result["suite"]["path"]) / "calibration.json").is_file()


def test_a_failing_alert_latency_part_is_an_error_entry_not_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(quick: bool) -> dict[str, Any]:
        raise RuntimeError("the screening daemon did not start")

    monkeypatch.setattr(alert_latency, "measure_frame_to_alert", broken)
    part = screening_bench.alert_latency(quick=True)
    assert part["frame_to_alert_p99_ms"] is None
    assert "did not start" in part["frame_to_alert_error"]
    judged = screening_bench._judge(part)
    assert judged["frame_to_alert_p99_ms"]["pass"] is None


def test_the_command_prints_one_json_object(
    monkeypatch: pytest.MonkeyPatch, result: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(screening_bench, "bench_screening", lambda quick: dict(result))
    assert run_bench("screening", as_json=True, quick=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sensitivity"] == result["sensitivity"] and "machine" in out
