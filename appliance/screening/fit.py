"""Fit the estimator's coefficients on the scenario suite's training split.

    python -m appliance.screening.fit [--people 600] [--json]

Only the "train" split is read (appliance/sim/suite.py keeps its seeds disjoint from "test",
which only the benchmark reads). Every train recording is run through the screening machine
with the model switched to a neutral form and the plausibility and confidence gates opened, so
that every window the machine would measure is kept whatever the current coefficients say;
each window is attributed to the person in front (evaluate.attribute), and people whose dwell
overlaps a sensor fault are left out. That gives one (contrast, thermistor, distance, core)
sample per measured person.

The model (estimator.py) is fitted as it is used, with a robust loss (Huber, through
iteratively reweighted least squares) because a few windows are spoilt by what the suite puts
in them (a hot cup under a chin, a neighbour's shoulder). ``model_full_cover_m`` is found by a
grid search, the linear coefficients by least squares at each grid point.

``model_ambient`` is held at 1.0 rather than fitted: skin sits between core and room, so the
core is the room plus a multiple of the skin's contrast, degree for degree. Left free, least
squares trades it against the gain (the contrast carries the room temperature too, and its
errors attenuate the gain), which pulls every estimate toward the training mean: feverish
people would read low. For the same reason ``model_intercept_c`` and ``model_distance_c_per_m``
are held at 0: a free constant is the same trade in another form (and whatever constant is
left, the site calibration carries), and the gain already carries the distance.

Which windows the machine measures depends a little on the coefficients (the confidence
weighs the gain's distance term), so collecting and fitting alternate until the coefficients
settle (``ROUNDS`` at most, from the current defaults).

Pure functions plus a main() that reads and prints; the printed values go into settings.py
by hand, with the command line that produced them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.screening import corpus, evaluate
from appliance.screening.settings import ScreeningSettings

Array = npt.NDArray[np.float64]

ROUNDS = 4
KNEE_GRID_M = tuple(round(0.30 + 0.01 * i, 2) for i in range(41))  # 0.30 .. 0.70
_HUBER_K = 1.345  # 95 % efficiency at the normal distribution


@dataclass(frozen=True, slots=True)
class Sample:
    contrast_c: float
    thermistor_c: float
    distance_m: float
    core_c: float
    person: str
    true_distance_m: float


@dataclass(frozen=True, slots=True)
class Fit:
    model_intercept_c: float
    model_hot: float
    model_hot_per_m: float
    model_full_cover_m: float
    model_ambient: float
    model_distance_c_per_m: float
    model_sd_c: float
    model_sd_per_m: float
    samples: int
    mae_c: float
    bias_c: float

    def coefficients(self) -> dict[str, float]:
        return {
            "model_intercept_c": self.model_intercept_c,
            "model_ambient": self.model_ambient,
            "model_hot": self.model_hot,
            "model_hot_per_m": self.model_hot_per_m,
            "model_full_cover_m": self.model_full_cover_m,
            "model_distance_c_per_m": self.model_distance_c_per_m,
            "model_sd_c": self.model_sd_c,
            "model_sd_per_m": self.model_sd_per_m,
        }


def collection_settings(settings: ScreeningSettings) -> ScreeningSettings:
    """The machine as in service, but never rejecting a window for what the model says."""
    return dataclasses.replace(
        settings,
        min_plausible_c=-1000.0,
        max_plausible_c=settings.object_equivalent_c - 0.01,
        min_confidence=0.0,
        refer_margin_sd=0.0,
        normal_margin_sd=0.0,
        calibration_offset_c=0.0,
    )


def samples_of(session: dict[str, Any], windows: Sequence[tuple[Any, Any]]) -> list[Sample]:
    """One sample per person: the first window attributed to them (what the kiosk answers on)."""
    out: list[Sample] = []
    seen: set[str] = set()
    for result, window in windows:
        person = evaluate.attribute(session["people"], result)
        if person is None or person["fault"] or person["id"] in seen or window is None:
            continue
        if window.contrast_c is None or window.ambient_c is None or window.distance is None:
            continue
        seen.add(person["id"])
        out.append(
            Sample(
                contrast_c=window.contrast_c,
                thermistor_c=window.ambient_c,
                distance_m=window.distance.metres,
                core_c=float(person["core_temp"]),
                person=str(person["id"]),
                true_distance_m=float(person["distance"]),
            )
        )
    return out


def _huber(design: Array, target: Array, iterations: int = 30) -> tuple[Array, Array]:
    """Coefficients and residuals of a Huber regression (IRLS, scale from the MAD)."""
    weights = np.ones(len(target))
    coef: Array = np.zeros(design.shape[1])
    for _ in range(iterations):
        w = np.sqrt(weights)
        coef = np.asarray(np.linalg.lstsq(design * w[:, None], target * w, rcond=None)[0], dtype=np.float64)
        residual = target - design @ coef
        scale = max(1.4826 * float(np.median(np.abs(residual))), 1e-6)
        u = np.abs(residual) / (_HUBER_K * scale)
        weights = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
    return coef, target - design @ coef


def _spread(abs_error: Array, beyond: Array) -> tuple[float, float]:
    """sd(beyond) = sd0 + sd1 * beyond, by least squares on a robust sd per band of beyond.

    The error is scaled by 1.4826 * median |e| per band (a robust sd), so a few spoilt windows
    do not set the uncertainty; bands are quintiles of the faces beyond the knee.
    """
    near = abs_error[beyond <= 0]
    far = beyond > 0
    xs, ys = [0.0], [1.4826 * float(np.median(near)) if near.size else 0.25]
    if far.sum() >= 10:
        edges = np.quantile(beyond[far], np.linspace(0, 1, 6))
        for lo, hi in itertools.pairwise(edges):
            band = far & (beyond >= lo) & (beyond <= hi)
            if band.sum() >= 3:
                xs.append(float(np.median(beyond[band])))
                ys.append(1.4826 * float(np.median(abs_error[band])))
    x, y = np.array(xs), np.array(ys)
    # The line starts at the near-face value (where most faces are); only its slope is fitted.
    slope = float(np.sum(x * (y - y[0])) / np.sum(x * x)) if len(x) > 1 else 0.0
    return round(float(max(y[0], 0.05)), 4), round(max(slope, 0.0), 4)


def fit(samples: Sequence[Sample], settings: ScreeningSettings) -> Fit:
    """The coefficients of the estimator's model for these samples (see the module doc)."""
    if len(samples) < 20:
        raise ValueError(f"need at least 20 samples to fit, got {len(samples)}")
    c = np.array([x.contrast_c for x in samples])
    room = np.array([x.thermistor_c for x in samples]) - settings.thermistor_rise_c
    d = np.array([x.distance_m for x in samples])
    core = np.array([x.core_c for x in samples])
    ambient = 1.0
    target = core - ambient * room
    best: tuple[float, float, Array, Array] | None = None
    for knee in KNEE_GRID_M:
        design = np.column_stack([c, c * np.maximum(0.0, d - knee)])
        coef, residual = _huber(design, target)
        if coef[0] <= 0 or coef[1] < 0:
            continue  # a hotter face must read hotter, a farther one no cooler
        loss = float(np.mean(np.abs(residual)))
        if best is None or loss < best[0]:
            best = (loss, knee, coef, residual)
    if best is None:
        raise ValueError("no monotone fit: the samples do not look like faces")
    loss, knee, coef, residual = best
    sd0, sd1 = _spread(np.abs(residual), np.maximum(0.0, d - knee))
    return Fit(
        model_intercept_c=0.0,
        model_hot=round(float(coef[0]), 4),
        model_hot_per_m=round(float(coef[1]), 4),
        model_full_cover_m=knee,
        model_ambient=ambient,
        model_distance_c_per_m=0.0,
        model_sd_c=float(sd0),
        model_sd_per_m=sd1,
        samples=len(samples),
        mae_c=round(loss, 4),
        bias_c=round(float(np.mean(-residual)), 4),
    )


def collect(people: int, settings: ScreeningSettings) -> list[Sample]:
    suite = corpus.ensure_suite("train", people)
    truth = corpus.load_truth(suite)
    if truth["split"] != "train":
        raise RuntimeError(f"{suite} is not the training split")
    collecting = collection_settings(settings)
    samples: list[Sample] = []
    for session in truth["sessions"]:
        windows: list[tuple[Any, Any]] = []
        corpus.run_session(suite / session["recording"], collecting, windows=windows)
        samples.extend(samples_of(session, windows))
    return samples


def fit_rounds(people: int, settings: ScreeningSettings, log: Any = None) -> tuple[Fit, ScreeningSettings]:
    """Collect with the current coefficients, fit, repeat until they settle."""
    current = settings
    result: Fit | None = None
    for round_ in range(1, ROUNDS + 1):
        result = fit(collect(people, current), current)
        updated = dataclasses.replace(
            current,
            model_intercept_c=result.model_intercept_c,
            model_ambient=result.model_ambient,
            model_hot=result.model_hot,
            model_hot_per_m=result.model_hot_per_m,
            model_full_cover_m=result.model_full_cover_m,
            model_distance_c_per_m=result.model_distance_c_per_m,
            model_sd_c=result.model_sd_c,
            model_sd_per_m=result.model_sd_per_m,
        )
        change = max(abs(getattr(updated, k) - getattr(current, k)) for k in result.coefficients())
        if log is not None:
            log(f"round {round_}: {result.coefficients()} (largest change {change:.4f})")
        current = updated
        if change < 0.005:
            break
    assert result is not None
    return result, current


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=600, help="train-split people (at least)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("appliance.thermal").setLevel(logging.ERROR)  # the suite's faults are on purpose
    result, _ = fit_rounds(args.people, ScreeningSettings(), log=lambda line: print(line, file=sys.stderr))
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    else:
        print(
            f"# python -m appliance.screening.fit --people {args.people}: split train, {result.samples} "
            f"measured people, robust MAE {result.mae_c} degC before site calibration"
        )
        for key, value in result.coefficients().items():
            print(f"{key}: float = {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
