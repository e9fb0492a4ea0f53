"""Body temperature from a window of still frames, with a confidence.

Per frame we keep the head's ``hot_pixels`` hottest pixels (a frame whose face offers fewer
is not used). Over the window they are pooled; the apparent face temperature is the mean of
the pool from its ``percentile`` up to, but not into, the top 1/hot_pixels share. One pixel
is at most that share of the pool, so no single pixel -- the hottest, a defective one, a
glint -- can set the estimate. Averaging a band rather than reading one order statistic
matters here: readings come in 0.25 degC steps, and only an average of several noisy
readings resolves finer than a step.

The apparent temperature becomes a body temperature through a linear model:

    estimate = model_intercept_c + model_hot * hot + model_ambient * ambient
               + model_distance_c_per_m * distance + calibration_offset_c

Skin sits below the core by a share of the skin-to-ambient gradient (hence a negative ambient
term and ``model_hot`` > 1), and pixels read cooler the farther the face (partial coverage
and atmosphere, hence a positive distance term). The thermistor is inside the enclosure, so
"ambient" here is the enclosure's temperature; the fit absorbs the difference.

The confidence is a quality score in 0..1, the product of four factors: window stability,
pixel noise, how much the distance uncertainty moves the estimate, and whether the face
fills at least one pixel. It is not a probability of being right.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from appliance.screening.background import NOISE_FLOOR_C
from appliance.screening.blobs import Blob, find_blobs
from appliance.screening.distance import Distance, estimate_distance
from appliance.screening.records import FrameInput, Pixels
from appliance.screening.settings import ScreeningSettings

# Distance uncertainty is judged by what it does to the estimate, against this many degC.
_DISTANCE_REF_C = 0.2


@dataclass(frozen=True, slots=True)
class FrameMeasure:
    """What one frame contributes to a window."""

    t: float
    hot_c: tuple[float, ...]
    ambient_c: float
    distance: Distance
    width_px: float
    centroid: tuple[float, float]
    noise_c: float
    fault: bool = False


@dataclass(frozen=True, slots=True)
class Confidence:
    stability: float
    noise: float
    distance: float
    coverage: float

    @property
    def total(self) -> float:
        return self.stability * self.noise * self.distance * self.coverage


@dataclass(frozen=True, slots=True)
class WindowEstimate:
    frames: int  # usable frames
    faults: int  # frames flagged faulty or holding impossible values
    estimate_c: float | None
    hot_c: float | None
    ambient_c: float | None
    distance: Distance | None
    std_c: float  # spread of the per-frame hot percentile
    drift_px: float  # farthest the head moved from where the window began
    width_change: float  # (max - min) / median of the face width
    confidence: Confidence
    running_c: tuple[float, ...]  # the estimate as the window filled, one per usable frame

    @property
    def confidence_total(self) -> float:
        return self.confidence.total


def measure(frame: FrameInput, blob: Blob, settings: ScreeningSettings) -> FrameMeasure:
    distance = estimate_distance(
        blob.width_px, settings, noise_c=blob.noise_c, contrast_c=blob.contrast_c, clipped=blob.clipped
    )
    return FrameMeasure(
        t=frame.t,
        hot_c=blob.hot_c,
        ambient_c=frame.thermistor_c,
        distance=distance,
        width_px=blob.width_px,
        centroid=blob.centroid,
        noise_c=blob.noise_c,
        fault=frame.fault,
    )


def hot_statistic(values: Sequence[float], settings: ScreeningSettings) -> float:
    """Mean of the sorted values from the ``percentile`` rank up to the top 1/hot_pixels share.

    Monotone: raising any value never lowers it. With one frame of 4 pixels it is the
    second-hottest pixel; over 9 frames, the mean of about 6 readings around it.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = len(ordered)
    lo = min(int(n * settings.percentile / 100.0), n - 1)
    hi = max(n - math.ceil(n / settings.hot_pixels), lo + 1)
    return float(ordered[lo:hi].mean())


def model_estimate(
    hot_c: float, ambient_c: float, distance_m: float, settings: ScreeningSettings, *, calibrated: bool = True
) -> float:
    estimate = (
        settings.model_intercept_c
        + settings.model_hot * hot_c
        + settings.model_ambient * ambient_c
        + settings.model_distance_c_per_m * distance_m
    )
    return estimate + settings.calibration_offset_c if calibrated else estimate


def estimate_window(
    measures: Sequence[FrameMeasure], settings: ScreeningSettings, *, calibrated: bool = True
) -> WindowEstimate:
    usable = [m for m in measures if _usable(m, settings)]
    faults = sum(1 for m in measures if m.fault or not _plausible(m, settings))
    if not usable:
        return WindowEstimate(
            0, faults, None, None, None, None, math.inf, math.inf, math.inf, Confidence(0, 0, 0, 0), ()
        )

    pool: list[float] = []
    running: list[float] = []
    for i, m in enumerate(usable, start=1):
        pool.extend(m.hot_c)
        seen = usable[:i]
        running.append(
            model_estimate(
                hot_statistic(pool, settings),
                float(np.median([s.ambient_c for s in seen])),
                float(np.median([s.distance.metres for s in seen])),
                settings,
                calibrated=calibrated,
            )
        )
    hot = hot_statistic(pool, settings)
    ambient = float(np.median([m.ambient_c for m in usable]))
    metres = float(np.median([m.distance.metres for m in usable]))
    sd = float(np.median([m.distance.sd_m for m in usable]))
    distance = Distance(metres, sd, any(m.distance.clipped for m in usable))
    per_frame = [hot_statistic(m.hot_c, settings) for m in usable]
    std = float(np.std(per_frame))
    first = usable[0].centroid
    drift = max(math.dist(first, m.centroid) for m in usable)
    widths = [m.width_px for m in usable]
    width_change = (max(widths) - min(widths)) / max(float(np.median(widths)), 1e-6)
    noise = float(np.median([m.noise_c for m in usable]))

    confidence = Confidence(
        stability=max(0.0, 1.0 - (std / settings.max_window_std_c) ** 2),
        noise=min(1.0, settings.noise_ref_c / max(noise, 1e-6)),
        distance=1.0 / (1.0 + (settings.model_distance_c_per_m * sd / _DISTANCE_REF_C) ** 2),
        # A face at least two pixels wide fully covers at least one pixel, wherever it sits.
        coverage=min(1.0, max(0.0, float(np.median(widths)) - 1.0)),
    )
    return WindowEstimate(
        frames=len(usable),
        faults=faults,
        estimate_c=running[-1],
        hot_c=hot,
        ambient_c=ambient,
        distance=distance,
        std_c=std,
        drift_px=drift,
        width_change=width_change,
        confidence=confidence,
        running_c=tuple(running),
    )


def _plausible(m: FrameMeasure, settings: ScreeningSettings) -> bool:
    values = (*m.hot_c, m.ambient_c, m.distance.metres, m.width_px, *m.centroid, m.noise_c)
    if not all(math.isfinite(v) for v in values):
        return False
    return all(settings.pixel_min_c <= v <= settings.pixel_max_c for v in m.hot_c)


def _usable(m: FrameMeasure, settings: ScreeningSettings) -> bool:
    return not m.fault and _plausible(m, settings) and len(m.hot_c) >= settings.hot_pixels


@dataclass(frozen=True, slots=True)
class Calibration:
    offset_c: float  # the value for ``calibration_offset_c``
    frames: int
    spread_c: float  # spread of the per-frame readings; large means redo it
    measured_c: float  # what the kiosk read before the offset (estimate or hot percentile)


def calibration_offset(
    frames: Iterable[FrameInput],
    reference_c: float,
    settings: ScreeningSettings,
    *,
    background: Pixels | None = None,
    noise: Pixels | None = None,
    reference: Literal["body", "surface"] = "body",
) -> Calibration:
    """The site offset that makes the kiosk read ``reference_c`` for the target in ``frames``.

    ``reference="body"``: a person held still in the distance window whose core temperature was
    just taken with a clinical thermometer; offset = reference - estimate. Several people,
    averaged, are better than one.
    ``reference="surface"``: a black-body source of known radiometric temperature; it corrects
    the sensor, so offset = model_hot * (reference - hot percentile). It must be large and
    close enough to fill whole pixels (a 5 cm aperture at 0.3 m fills less than one).

    Without ``background`` each frame's median stands in for it, which only works while the
    target covers less than half the image. The stored offset itself is I/O, kept elsewhere.
    Raises ValueError when there is nothing usable to calibrate on.
    """
    measures: list[FrameMeasure] = []
    for frame in frames:
        px = np.asarray(frame.pixels, dtype=np.float64)
        if frame.fault or px.shape != (8, 8) or not np.all(np.isfinite(px)):
            raise ValueError(f"calibration frame at t={frame.t} is faulty")
        mean = np.full(px.shape, float(np.median(px))) if background is None else background
        sd = np.full(px.shape, NOISE_FLOOR_C) if noise is None else noise
        scene = find_blobs(px, mean, sd, settings)
        # A black body hotter than any skin is classed an object; here it is the target.
        candidates = scene.people + (scene.objects if reference == "surface" else ())
        if not candidates:
            continue
        target = max(candidates, key=lambda b: b.coverage_px)
        measures.append(measure(frame, target, settings))
    window = estimate_window(measures, settings, calibrated=False)
    if window.frames < settings.min_frames or window.estimate_c is None or window.hot_c is None:
        raise ValueError(
            f"calibration needs {settings.min_frames} frames showing the target, got {window.frames}"
        )
    if reference == "surface":
        offset = settings.model_hot * (reference_c - window.hot_c)
        measured = window.hot_c
    else:
        offset = reference_c - window.estimate_c
        measured = window.estimate_c
    return Calibration(offset, window.frames, window.std_c, measured)
