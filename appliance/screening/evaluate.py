"""Scoring the screening core against the scenario suite's ground truth. Pure: no I/O.

The suite (appliance/sim/suite.py) says who stood where and when, how warm they were and when
the sensor failed; `appliance bench screening` and `python -m appliance.screening.fit` run the
recordings through the core and hand the results here.

Attribution. A result belongs to somebody present when it was decided (enter <= end < exit):
preferably someone holding still at that moment, and among several the nearest one, because
the core measures the person with the largest blob. A person's outcome is their first result;
later ones count as ``repeat_results`` (a second answer on one visit). A result with nobody
present is ``spurious``. A person without any result has the outcome "none".

Definitions (every rate is over people, not results):
- The accuracy rows leave out people whose dwell window overlaps a scheduled fault: the suite
  expects "no reading" from them, and they are scored on their own ("fault" row).
- sensitivity: people with core >= 38.0 whose outcome is "elevated". "retry" and "none" are
  misses: a feverish person sent away without an answer was not caught.
- false_alarm_rate: people with core <= 37.2 whose outcome is "elevated". Their "retry" and
  "none" are not false alarms, which is why retry_rate and no_result_rate are reported too:
  a kiosk that answers nobody would otherwise look perfect.
- mae_c: mean |estimate - core| over people with a "normal" or "elevated" outcome.
- fault_normal_results: "normal" results whose visit (from its start to the decision) overlaps
  a fault window: a fault the core saw coming and still answered through.
  fault_people_normal: "normal" outcomes of people whose dwell overlaps a fault, however the
  times fall (a fault may begin after they were answered on clean frames).
- time_to_result: decision time minus dwell_start (when the person stopped) over conclusive
  outcomes. The suite's people slow down smoothly, so the core may finish just before
  dwell_start and a value can be negative.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.screening.records import ScreeningResult

FEVER_C = 38.0
NORMAL_MAX_C = 37.2
OUTCOMES = ("normal", "elevated", "retry", "none")
ROWS = ("normal", "borderline", "fever", "fault")

Person = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    person: Person
    result: ScreeningResult | None

    @property
    def kind(self) -> str:
        return "none" if self.result is None else self.result.result

    @property
    def row(self) -> str:
        return "fault" if self.person["fault"] else str(self.person["label"])

    @property
    def error_c(self) -> float | None:
        if self.result is None or self.result.estimate_c is None or self.kind == "retry":
            return None
        return self.result.estimate_c - float(self.person["core_temp"])


@dataclass(slots=True)
class SessionScore:
    outcomes: list[Outcome] = field(default_factory=list)
    repeat_results: int = 0
    spurious_results: int = 0
    fault_normal_results: int = 0
    results: int = 0


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 < b1 and b0 < a1


def attribute(people: Sequence[Person], result: ScreeningResult) -> Person | None:
    t = result.end_t
    present = [p for p in people if p["enter"] <= t < p["exit"]]
    if not present:
        return None
    still = [p for p in present if p["dwell_start"] <= t < p["dwell_end"]]
    return min(still or present, key=lambda p: float(p["distance"]))


def score_session(session: Mapping[str, Any], results: Sequence[ScreeningResult]) -> SessionScore:
    """One suite session: its ground truth (an entry of ground_truth.json) and the core's results."""
    people: Sequence[Person] = session["people"]
    faults = [(float(f["start"]), float(f["start"]) + float(f["duration"])) for f in session["faults"]]
    first: dict[str, ScreeningResult] = {}
    score = SessionScore(results=len(results))
    for result in results:
        if result.result == "normal" and any(_overlaps(result.start_t, result.end_t, *f) for f in faults):
            score.fault_normal_results += 1
        person = attribute(people, result)
        if person is None:
            score.spurious_results += 1
        elif person["id"] in first:
            score.repeat_results += 1
        else:
            first[person["id"]] = result
    score.outcomes = [Outcome(p, first.get(p["id"])) for p in people]
    return score


def _rate(hits: int, n: int) -> float | None:
    return None if n == 0 else hits / n


def wilson(hits: int, n: int, z: float = 1.96) -> list[float] | None:
    """95 % Wilson interval of a proportion: with 60 fever cases one miss is 1.7 points."""
    if n == 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def summarize(scores: Sequence[SessionScore]) -> dict[str, Any]:
    outcomes = [o for s in scores for o in s.outcomes]
    confusion = {row: dict.fromkeys(OUTCOMES, 0) for row in ROWS}
    for o in outcomes:
        confusion[o.row][o.kind] += 1
    clean = [o for o in outcomes if not o.person["fault"]]
    fever = [o for o in clean if o.person["core_temp"] >= FEVER_C]
    normal = [o for o in clean if o.person["core_temp"] <= NORMAL_MAX_C]
    caught = sum(o.kind == "elevated" for o in fever)
    alarms = sum(o.kind == "elevated" for o in normal)
    errors = np.array([e for o in clean if (e := o.error_c) is not None])
    conclusive = [o for o in clean if o.kind in ("normal", "elevated")]
    latency = np.array([o.result.end_t - o.person["dwell_start"] for o in conclusive if o.result])
    concurrent = [o for o in clean if o.person.get("concurrent")]
    fever_alone = [o for o in fever if not o.person.get("concurrent")]
    normal_alone = [o for o in normal if not o.person.get("concurrent")]

    def pct(values: np.ndarray, q: float) -> float | None:
        return None if values.size == 0 else round(float(np.percentile(values, q)), 3)

    return {
        "people": len(outcomes),
        "people_scored": len(clean),
        "fever_people": len(fever),
        "normal_people": len(normal),
        "sensitivity": _rate(caught, len(fever)),
        "sensitivity_ci95": wilson(caught, len(fever)),
        "false_alarm_rate": _rate(alarms, len(normal)),
        "false_alarm_ci95": wilson(alarms, len(normal)),
        # The same over people who stood alone (the suite's pairs ignore "one at a time").
        "sensitivity_alone": _rate(sum(o.kind == "elevated" for o in fever_alone), len(fever_alone)),
        "false_alarm_rate_alone": _rate(sum(o.kind == "elevated" for o in normal_alone), len(normal_alone)),
        "retry_rate": _rate(sum(o.kind == "retry" for o in clean), len(clean)),
        "no_result_rate": _rate(sum(o.kind == "none" for o in clean), len(clean)),
        "answered_rate": _rate(len(conclusive), len(clean)),
        "answered_rate_concurrent": _rate(
            sum(o.kind in ("normal", "elevated") for o in concurrent), len(concurrent)
        ),
        "mae_c": None if errors.size == 0 else round(float(np.mean(np.abs(errors))), 4),
        "bias_c": None if errors.size == 0 else round(float(np.mean(errors)), 4),
        "error_p95_c": pct(np.abs(errors), 95),
        "mae_people": int(errors.size),
        "fault_normal_results": sum(s.fault_normal_results for s in scores),
        "fault_people_normal": confusion["fault"]["normal"],
        "time_to_result_s": pct(latency, 50),
        "time_to_result_p95_s": pct(latency, 95),
        "time_to_result_max_s": None if latency.size == 0 else round(float(latency.max()), 3),
        "results": sum(s.results for s in scores),
        "repeat_results": sum(s.repeat_results for s in scores),
        "spurious_results": sum(s.spurious_results for s in scores),
        "confusion": confusion,
    }


def mae_by_distance(scores: Sequence[SessionScore], edges: Sequence[float]) -> dict[str, Any]:
    """MAE and count per band of true distance: where the error comes from."""
    out: dict[str, Any] = {}
    clean = [o for s in scores for o in s.outcomes if not o.person["fault"]]
    for lo, hi in itertools.pairwise(edges):
        band = [o for o in clean if lo <= o.person["distance"] < hi]
        errors = [abs(e) for o in band if (e := o.error_c) is not None]
        out[f"{lo:.2f}-{hi:.2f}"] = {
            "people": len(band),
            "answered": len(errors),
            "mae_c": round(float(np.mean(errors)), 3) if errors else None,
        }
    return out
