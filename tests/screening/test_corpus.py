import json
from pathlib import Path

import pytest

from appliance.screening import corpus, evaluate
from appliance.screening.settings import ScreeningSettings


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.ensure_suite("train", 4, tmp_path_factory.mktemp("cache"))


def test_the_suite_is_built_once_under_its_version(suite: Path) -> None:
    assert suite.parent.name == f"suite-{corpus.suite_version()}" and suite.name == "train-4"
    stamp = (suite / "ground_truth.json").stat().st_mtime_ns
    assert corpus.ensure_suite("train", 4, suite.parent.parent) == suite
    assert (suite / "ground_truth.json").stat().st_mtime_ns == stamp
    assert not [p for p in suite.parent.iterdir() if p.name.startswith(".")]  # no build left over


def test_every_site_has_a_calibration_recording_of_a_reference_person(suite: Path) -> None:
    truth = corpus.load_truth(suite)
    for session in truth["sessions"]:
        cal = session["calibration"]
        assert (suite / cal["recording"]).is_file()
        assert cal["reference_c"] == round(cal["core_c"], 1)
        assert 36.3 <= cal["core_c"] <= 37.1
        # The same sensor as the session: the offset comes from the session's seed.
        assert cal["sensor_offset_c"] == pytest.approx(session["sensor_offset_c"], abs=1e-4)
        # Nothing of the screened people goes into it.
        assert cal["core_c"] not in {p["core_temp"] for p in session["people"]}


def test_calibration_plans_are_deterministic() -> None:
    session = {"seed": 900_001, "scenario": {"ambient": {"temperature": 21.0, "gradient": 0.4}}}
    assert corpus.calibration_scenario(session) == corpus.calibration_scenario(
        json.loads(json.dumps(session))
    )


def test_a_suite_is_scored_site_by_site(suite: Path) -> None:
    scores, calibrations = corpus.score_suite(suite, ScreeningSettings())
    truth = corpus.load_truth(suite)
    assert len(scores) == len(calibrations) == len(truth["sessions"])
    summary = evaluate.summarize(scores)
    assert summary["people"] + summary["noncompliant_people"] == truth["people"] >= 4
    assert evaluate.summarize(scores, everyone=True)["people"] == truth["people"]
    assert all(abs(c.offset_c) < 1.5 for c in calibrations)


def test_the_fixed_behaviour_is_cached_beside_the_compliant_one(suite: Path) -> None:
    fixed = corpus.ensure_suite("train", 4, suite.parent.parent, behaviour="fixed")
    assert fixed.parent == suite.parent and fixed.name == "train-4-fixed"
    truth = corpus.load_truth(fixed)
    assert truth["behaviour"] == "fixed"
    assert {p["behaviour"] for s in truth["sessions"] for p in s["people"]} == {"fixed"}
    with pytest.raises(ValueError):
        corpus.ensure_suite("train", 4, suite.parent.parent, behaviour="obedient")
