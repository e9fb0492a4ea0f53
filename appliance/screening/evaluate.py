"""Scoring the screening core against the scenario suite's ground truth. Pure: no I/O.

The suite (appliance/sim/suite.py) says who stood where and when, how warm they were and when
the sensor failed; `appliance bench screening` and `python -m appliance.screening.fit` run the
recordings through the core and hand the results here.

Attribution. A result belongs to somebody present when it was decided (enter <= end < exit)
and in the sensor's view (when the truth has a person's ``track``: the second of a pair who
waits out of view is present but cannot have been measured): preferably someone dwelling at
that moment (``arrive`` <= end < ``dwell_end``), and among several the nearest one at that
moment, because the core measures the person with the largest blob. A person's outcome is their first result;
later ones count as ``repeat_results`` (a second answer on one visit). A result with nobody
present is ``spurious``. A person without any result has the outcome "none".

Prompt compliance. The suite's people follow the kiosk's prompts ("please come closer", "one
person at a time") after a reaction delay, except a seeded ~12 % who ignore them (suite.py).
The headline figures (sensitivity, false alarms, MAE, time to result, confusion) are over the
compliant people: a compliant person who gets no answer counts as a miss in sensitivity, as
before. The non-compliant are scored on their own (``noncompliant_*``): they may get no
answer or a "retry", but a "normal" for one of them with core >= 38.0 is a wrong normal
(``noncompliant_wrong_normal``). ``summarize(..., everyone=True)`` scores all people together
(the old view, for the suite's "fixed" behaviour where nobody follows prompts). Truth without
a ``compliant`` key counts as compliant.

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
- time_to_result: decision time minus dwell_start over conclusive outcomes. dwell_start is when
  the person stood still where they are measured: after any step closer the kiosk asked for.
  The suite's people slow down smoothly, so the core may finish just before dwell_start and a
  value can be negative (so can one of a person the core answered before they stepped closer).
  time_to_result_from_arrival: the same from ``arrive``, when they first stopped (reaction
  time and steps included): what the person waited in all.
- measured distance: a person's true distance when their result was decided (from the track),
  else where they held still; mae_by_distance bands by it.
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

# The sensor's view for the in-view test: 60 degrees, and a head half as wide as 0.16 m.
_HALF_FOV_TAN = math.tan(math.radians(30.0))
_HEAD_HALF_WIDTH_M = 0.08


def pose_at(person: Person, t: float) -> tuple[float, float]:
    """(distance, lateral) of a person at time t from their track; their distance without one."""
    track = person.get("track")
    if not track:
        return float(person["distance"]), float(person.get("lateral", 0.0))
    if t <= track[0][0]:
        return float(track[0][1]), float(track[0][2])
    for (t0, d0, x0), (t1, d1, x1) in itertools.pairwise(track):
        if t0 <= t <= t1:
            k = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
            return d0 + (d1 - d0) * k, x0 + (x1 - x0) * k
    return float(track[-1][1]), float(track[-1][2])


def in_view(person: Person, t: float) -> bool:
    distance, lateral = pose_at(person, t)
    return abs(lateral) - _HEAD_HALF_WIDTH_M < distance * _HALF_FOV_TAN


def compliant(person: Person) -> bool:
    return bool(person.get("compliant", True))


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

    @property
    def measured_distance(self) -> float:
        """True distance when the result was decided; where they held still without one."""
        if self.result is None:
            return float(self.person["distance"])
        return pose_at(self.person, self.result.end_t)[0]


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
    present = [p for p in present if in_view(p, t)] or present
    still = [p for p in present if p.get("arrive", p["dwell_start"]) <= t < p["dwell_end"]]
    return min(still or present, key=lambda p: pose_at(p, t)[0])


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


def summarize(scores: Sequence[SessionScore], *, everyone: bool = False) -> dict[str, Any]:
    """The figures over the compliant people (all of them with everyone=True), and the
    non-compliant ones' own rows."""
    every = [o for s in scores for o in s.outcomes]
    outcomes = every if everyone else [o for o in every if compliant(o.person)]
    noncompliant = [] if everyone else [o for o in every if not compliant(o.person)]
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
    waited = np.array(
        [o.result.end_t - o.person.get("arrive", o.person["dwell_start"]) for o in conclusive if o.result]
    )
    concurrent = [o for o in clean if o.person.get("concurrent")]
    fever_alone = [o for o in fever if not o.person.get("concurrent")]
    normal_alone = [o for o in normal if not o.person.get("concurrent")]

    def pct(values: np.ndarray, q: float) -> float | None:
        return None if values.size == 0 else round(float(np.percentile(values, q)), 3)

    return {
        "population": "everyone" if everyone else "compliant",
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
        "time_to_result_from_arrival_s": pct(waited, 50),
        "time_to_result_from_arrival_p95_s": pct(waited, 95),
        "results": sum(s.results for s in scores),
        "repeat_results": sum(s.repeat_results for s in scores),
        "spurious_results": sum(s.spurious_results for s in scores),
        "confusion": confusion,
        **_noncompliant(noncompliant),
    }


def _noncompliant(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """People who ignored the prompts: no answer or retry is fine, a wrong "normal" is not."""
    confusion = {row: dict.fromkeys(OUTCOMES, 0) for row in ROWS}
    for o in outcomes:
        confusion[o.row][o.kind] += 1
    clean = [o for o in outcomes if not o.person["fault"]]
    prompted = [o for o in clean if o.person.get("prompted")]
    fever = [o for o in clean if o.person["core_temp"] >= FEVER_C]
    errors = [abs(e) for o in clean if (e := o.error_c) is not None]
    answered = [o for o in clean if o.kind in ("normal", "elevated")]
    return {
        "noncompliant_people": len(outcomes),
        "noncompliant_prompted": len(prompted),
        "noncompliant_fever_people": len(fever),
        "noncompliant_wrong_normal": sum(o.kind == "normal" for o in fever),
        "noncompliant_answered_rate": _rate(len(answered), len(clean)),
        "noncompliant_prompted_answered_rate": _rate(
            sum(o.kind in ("normal", "elevated") for o in prompted), len(prompted)
        ),
        "noncompliant_mae_c": round(float(np.mean(errors)), 4) if errors else None,
        "confusion_noncompliant": confusion,
    }


def mae_by_distance(
    scores: Sequence[SessionScore], edges: Sequence[float], *, start: bool = False, everyone: bool = False
) -> dict[str, Any]:
    """MAE and count per band of true distance when measured (start=True: where the person first
    stopped), over the compliant people (everyone=True: all): where the error comes from."""
    out: dict[str, Any] = {}
    clean = [
        o for s in scores for o in s.outcomes if not o.person["fault"] and (everyone or compliant(o.person))
    ]

    def where(o: Outcome) -> float:
        return float(o.person.get("start_distance", o.person["distance"])) if start else o.measured_distance

    for lo, hi in itertools.pairwise(edges):
        band = [o for o in clean if lo <= where(o) < hi]
        errors = [abs(e) for o in band if (e := o.error_c) is not None]
        out[f"{lo:.2f}-{hi:.2f}"] = {
            "people": len(band),
            "answered": len(errors),
            "mae_c": round(float(np.mean(errors)), 3) if errors else None,
        }
    return out
