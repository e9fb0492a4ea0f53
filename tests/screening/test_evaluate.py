from typing import Any

import pytest

from appliance.screening.evaluate import attribute, mae_by_distance, score_session, summarize, wilson
from appliance.screening.records import ScreeningResult


def person(
    pid: str,
    core: float,
    enter: float,
    dwell: tuple[float, float],
    exit_: float,
    *,
    distance: float = 0.5,
    fault: bool = False,
    concurrent: bool = False,
) -> dict[str, Any]:
    label = "fever" if core >= 38.0 else "borderline" if core >= 37.3 else "normal"
    return {"id": pid, "core_temp": core, "label": label, "enter": enter, "dwell_start": dwell[0],
            "dwell_end": dwell[1], "exit": exit_, "distance": distance, "fault": fault,
            "concurrent": concurrent}  # fmt: skip


def result(kind: str, start: float, end: float, estimate: float | None = None) -> ScreeningResult:
    return ScreeningResult(start, end, kind, estimate, 0.8, 0.5, 22.0)  # type: ignore[arg-type]


SESSION = {
    "faults": [{"kind": "i2c_error", "start": 30.0, "duration": 2.0}],
    "people": [
        person("s/p0", 36.5, 1.0, (3.0, 7.0), 9.0),
        person("s/p1", 38.6, 10.0, (12.0, 16.0), 18.0, distance=0.7),
        person("s/p2", 38.2, 20.0, (22.0, 26.0), 28.0),
        person("s/p3", 36.9, 29.0, (30.5, 34.0), 36.0, fault=True),
        person("s/p4", 37.0, 40.0, (42.0, 46.0), 48.0),
    ],
}


def test_results_go_to_whoever_holds_still_in_front_first_answer_counts() -> None:
    results = [
        result("normal", 1.0, 4.0, 36.7),  # p0
        result("normal", 1.0, 5.0, 36.6),  # p0 again: a repeat
        result("retry", 10.0, 13.0),  # p1 missed by a retry
        result("normal", 29.0, 31.5, 36.8),  # p3, while the sensor had failed
        result("elevated", 38.0, 39.0, 38.1),  # nobody there
    ]
    score = score_session(SESSION, results)
    kinds = {o.person["id"]: o.kind for o in score.outcomes}
    assert kinds == {"s/p0": "normal", "s/p1": "retry", "s/p2": "none", "s/p3": "normal", "s/p4": "none"}
    assert (score.repeat_results, score.spurious_results, score.fault_normal_results) == (1, 1, 1)


def test_the_nearest_of_two_still_people_is_the_one_measured() -> None:
    people = [person("a", 36.5, 0.0, (1.0, 9.0), 10.0, distance=0.7),
              person("b", 38.5, 0.0, (2.0, 9.0), 10.0, distance=0.4)]  # fmt: skip
    assert attribute(people, result("normal", 0.0, 1.5))["id"] == "a"  # type: ignore[index]
    assert attribute(people, result("normal", 0.0, 3.0))["id"] == "b"  # type: ignore[index]
    assert attribute(people, result("normal", 0.0, 11.0)) is None


def test_the_summary_counts_retries_and_silence_as_misses_and_reports_them() -> None:
    results = [
        result("normal", 1.0, 3.5, 36.9),  # p0 normal, error +0.4
        result("elevated", 10.0, 13.0, 38.3),  # p1 caught, error -0.3, 1.0 s after stopping
        result("retry", 20.0, 23.0),  # p2 missed
        result("elevated", 40.0, 43.0, 37.9),  # p4 false alarm
    ]
    s = summarize([score_session(SESSION, results)])
    assert s["people"] == 5 and s["people_scored"] == 4
    assert s["sensitivity"] == 0.5 and s["false_alarm_rate"] == 0.5
    assert s["retry_rate"] == 0.25 and s["no_result_rate"] == 0.0
    assert s["mae_c"] == pytest.approx((0.4 + 0.3 + 0.9) / 3, abs=1e-4)
    assert s["time_to_result_s"] == pytest.approx(1.0)
    assert s["confusion"]["fever"] == {"normal": 0, "elevated": 1, "retry": 1, "none": 0}
    assert s["confusion"]["fault"] == {"normal": 0, "elevated": 0, "retry": 0, "none": 1}
    assert s["fault_normal_results"] == 0
    bands = mae_by_distance([score_session(SESSION, results)], [0.3, 0.6, 0.9])
    assert bands["0.60-0.90"] == {"people": 1, "answered": 1, "mae_c": 0.3}


def test_wilson_intervals() -> None:
    assert wilson(0, 0) is None
    low, high = wilson(57, 60)  # type: ignore[misc]
    assert low < 57 / 60 < high and high < 1.0
    assert wilson(0, 100)[0] == 0.0  # type: ignore[index]


def test_noncompliant_people_are_scored_on_their_own() -> None:
    session = {
        "faults": [],
        "people": [
            person("s/p0", 38.5, 1.0, (3.0, 7.0), 9.0),
            {**person("s/p1", 38.7, 10.0, (12.0, 16.0), 18.0, distance=0.75),
             "compliant": False, "prompted": True},
            {**person("s/p2", 36.6, 20.0, (22.0, 26.0), 28.0), "compliant": False, "prompted": False},
        ],
    }  # fmt: skip
    results = [
        result("elevated", 1.0, 4.0, 38.4),
        result("normal", 10.0, 13.0, 37.6),  # a fever called normal at 0.75 m: wrong
        result("normal", 20.0, 23.0, 36.9),
    ]
    s = summarize([score_session(session, results)])
    assert s["people"] == 1 and s["sensitivity"] == 1.0  # the headline is the compliant people
    assert s["noncompliant_people"] == 2 and s["noncompliant_prompted"] == 1
    assert s["noncompliant_wrong_normal"] == 1 and s["noncompliant_answered_rate"] == 1.0
    assert s["confusion_noncompliant"]["fever"]["normal"] == 1
    everyone = summarize([score_session(session, results)], everyone=True)
    assert everyone["people"] == 3 and everyone["sensitivity"] == 0.5 and everyone["noncompliant_people"] == 0


def test_someone_out_of_view_is_not_measured_and_time_counts_from_settling() -> None:
    # a steps from 0.7 m to 0.4 m at 4-5 s; b waits out of view (1.8 m, 1.4 m aside) meanwhile.
    a = {
        **person("a", 38.5, 0.0, (5.0, 9.0), 10.0, distance=0.4),
        "arrive": 1.0,
        "track": [
            [0.0, 2.5, 0.0],
            [1.0, 0.7, 0.0],
            [4.0, 0.7, 0.0],
            [5.0, 0.4, 0.0],
            [9.0, 0.4, 0.0],
            [10.0, 2.5, 0.0],
        ],
    }
    b = {**person("b", 36.5, 0.5, (14.0, 18.0), 19.0, distance=0.45), "arrive": 1.5,
         "track": [[0.5, 2.5, 0.3], [1.5, 0.45, 0.3], [2.0, 0.45, 0.3], [3.0, 1.8, 1.4], [12.0, 1.8, 1.4],
                   [14.0, 0.45, 0.0], [18.0, 0.45, 0.0], [19.0, 2.5, 0.0]]}  # fmt: skip
    assert attribute([a, b], result("elevated", 0.0, 6.0))["id"] == "a"  # type: ignore[index]
    assert attribute([a, b], result("normal", 0.0, 1.8))["id"] == "b"  # type: ignore[index]  # both in view: nearest
    assert attribute([a, b], result("normal", 0.0, 15.0))["id"] == "b"  # type: ignore[index]
    score = score_session({"faults": [], "people": [a, b]}, [result("elevated", 4.0, 6.0, 38.6)])
    assert score.outcomes[0].measured_distance == pytest.approx(0.4)
    s = summarize([score])
    assert s["time_to_result_s"] == pytest.approx(1.0) and s[
        "time_to_result_from_arrival_s"
    ] == pytest.approx(5.0)
    by_start = mae_by_distance([score], [0.3, 0.6, 0.9], start=True)
    assert by_start["0.30-0.60"]["answered"] == 1  # without start_distance: where they held still
