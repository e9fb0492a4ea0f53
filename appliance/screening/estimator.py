"""Body temperature from a window of still frames, with a confidence.

What is measured is the face's *contrast*: how much warmer than the learned background its
pixels read (blobs.py removes the whole-array drift too). The sensor's absolute offset (up to
+-2.5 degC on an AMG8833) and its fixed pixel pattern are in both the pixel and the background,
so they cancel; only the thermistor then carries an absolute temperature.

The frames of the window are averaged into one contrast image, and the face's contrast is its
largest value over the head region (the head and its rim, as found frame by frame). Averaging
before taking the maximum keeps the noise out of it: the largest of several noisy pixels reads
high, the largest of their 9-frame means hardly. No single frame can set the estimate (a
glitch is a ninth of the mean), and a pixel stuck at some value cancels against the
background, which learned it. The largest pixel rather than the second largest: a face 0.6 m
away or more is under two pixels wide, so only the best-placed pixel is mostly face.

The contrast becomes a body temperature through a model of skin between core and room:

    skin = core - k (core - room)  =>  core = room + contrast / ((1 - k) * coverage)

    estimate = model_intercept_c + model_ambient * (thermistor - thermistor_rise_c)
               + gain(distance) * contrast + model_distance_c_per_m * distance
               + calibration_offset_c
    gain(d)  = model_hot + model_hot_per_m * max(0, d - model_full_cover_m)

``gain`` is 1 / (1 - k) while the face fully covers a pixel and grows once it is too small to
(farther than ``model_full_cover_m``), because the best pixel is then partly background. The
coefficients are fitted on the training split of the scenario suite (see settings.py and
fit.py). How well the best pixel is covered also depends on where the face falls on the pixel
grid, which a 60-degree 8x8 sensor cannot see: beyond about 0.6 m that, not noise, limits the
accuracy.

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
from appliance.screening.blobs import Blob, Mask, find_blobs
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
    contrast: Pixels  # the frame's 8x8 contrast over the background
    region: Mask  # where the face's hottest pixels are (the head and its rim)
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
    contrast_c: float | None  # the face's contrast over the background
    ambient_c: float | None
    distance: Distance | None
    std_c: float  # spread of the face pixel's contrast from frame to frame
    drift_px: float  # farthest the head moved from where the window began
    width_change: float  # (max - min) / median of the face width
    confidence: Confidence
    running_c: tuple[float, ...]  # the estimate as the window filled, one per usable frame
    uncertainty_c: float = math.inf  # the model's typical error at this distance

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
        contrast=blob.contrast,
        region=blob.region,
        fault=frame.fault,
    )


def face_gain(distance_m: float, settings: ScreeningSettings) -> float:
    """degC of body temperature per degC of face contrast, at this distance (always > 0)."""
    beyond = max(0.0, distance_m - settings.model_full_cover_m)
    return settings.model_hot + settings.model_hot_per_m * beyond


def uncertainty(distance_m: float, settings: ScreeningSettings) -> float:
    """The model's typical error (a robust sd, degC) for a face at this distance."""
    beyond = max(0.0, distance_m - settings.model_full_cover_m)
    return settings.model_sd_c + settings.model_sd_per_m * beyond


def model_estimate(
    contrast_c: float,
    ambient_c: float,
    distance_m: float,
    settings: ScreeningSettings,
    *,
    calibrated: bool = True,
) -> float:
    s = settings
    estimate = (
        s.model_intercept_c
        + s.model_ambient * (ambient_c - s.thermistor_rise_c)
        + face_gain(distance_m, s) * contrast_c
        + s.model_distance_c_per_m * distance_m
    )
    return estimate + s.calibration_offset_c if calibrated else estimate


def face_contrast(measures: Sequence[FrameMeasure]) -> tuple[float, tuple[float, ...], tuple[int, int]]:
    """(face contrast, its value as the window filled, the pixel it came from).

    The running values use the same rule on the frames so far, so the last one is the result.
    """
    images = np.stack([m.contrast for m in measures])
    regions = np.logical_or.accumulate(np.stack([m.region for m in measures]), axis=0)
    counts = np.arange(1, len(measures) + 1, dtype=np.float64)[:, None, None]
    means = np.cumsum(images, axis=0) / counts
    masked = np.where(regions, means, -np.inf).reshape(len(measures), -1)
    running = masked.max(axis=1)
    r, c = divmod(int(np.argmax(masked[-1])), images.shape[2])
    return float(running[-1]), tuple(float(v) for v in running), (r, c)


def estimate_window(
    measures: Sequence[FrameMeasure], settings: ScreeningSettings, *, calibrated: bool = True
) -> WindowEstimate:
    usable = [m for m in measures if _usable(m, settings)]
    faults = sum(1 for m in measures if m.fault or not _plausible(m, settings))
    if not usable:
        return WindowEstimate(
            0, faults, None, None, None, None, math.inf, math.inf, math.inf, Confidence(0, 0, 0, 0), ()
        )

    contrast, running_contrast, (pr, pc) = face_contrast(usable)
    ambients = np.array([m.ambient_c for m in usable])
    metres_seen = np.array([m.distance.metres for m in usable])
    running = tuple(
        model_estimate(
            value,
            float(np.median(ambients[:i])),
            float(np.median(metres_seen[:i])),
            settings,
            calibrated=calibrated,
        )
        for i, value in enumerate(running_contrast, start=1)
    )
    ambient = float(np.median(ambients))
    metres = float(np.median(metres_seen))
    sd = float(np.median([m.distance.sd_m for m in usable]))
    distance = Distance(metres, sd, any(m.distance.clipped for m in usable))
    std = float(np.std([m.contrast[pr, pc] for m in usable]))
    first = usable[0].centroid
    drift = max(math.dist(first, m.centroid) for m in usable)
    widths = [m.width_px for m in usable]
    width_change = (max(widths) - min(widths)) / max(float(np.median(widths)), 1e-6)
    noise = float(np.median([m.noise_c for m in usable]))
    # How far the estimate moves per metre of distance error.
    slope = settings.model_distance_c_per_m
    if metres > settings.model_full_cover_m:
        slope += settings.model_hot_per_m * contrast

    confidence = Confidence(
        stability=max(0.0, 1.0 - (std / settings.max_window_std_c) ** 2),
        noise=min(1.0, settings.noise_ref_c / max(noise, 1e-6)),
        distance=1.0 / (1.0 + (slope * sd / _DISTANCE_REF_C) ** 2),
        # A face at least two pixels wide fully covers at least one pixel, wherever it sits.
        coverage=min(1.0, max(0.0, float(np.median(widths)) - 1.0)),
    )
    return WindowEstimate(
        frames=len(usable),
        faults=faults,
        estimate_c=running[-1],
        contrast_c=contrast,
        ambient_c=ambient,
        distance=distance,
        std_c=std,
        drift_px=drift,
        width_change=width_change,
        confidence=confidence,
        running_c=running,
        uncertainty_c=uncertainty(metres, settings),
    )


def _plausible(m: FrameMeasure, settings: ScreeningSettings) -> bool:
    values = (*m.hot_c, m.ambient_c, m.distance.metres, m.width_px, *m.centroid, m.noise_c)
    if not all(math.isfinite(v) for v in values) or not np.all(np.isfinite(m.contrast)):
        return False
    return all(settings.pixel_min_c <= v <= settings.pixel_max_c for v in m.hot_c)


def _usable(m: FrameMeasure, settings: ScreeningSettings) -> bool:
    return not m.fault and _plausible(m, settings) and len(m.hot_c) >= settings.hot_pixels


@dataclass(frozen=True, slots=True)
class Calibration:
    offset_c: float  # the value for ``calibration_offset_c``
    frames: int
    spread_c: float  # spread of the per-frame readings; large means redo it
    measured_c: float  # what the kiosk read before the offset (body estimate or surface temperature)


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
    ``reference="surface"``: a black body of known radiometric temperature, large and close
    enough to fill whole pixels (a 5 cm aperture at 0.3 m fills less than one). Its contrast
    gives the true temperature behind it (reference - contrast); the kiosk assumes
    thermistor - thermistor_rise_c, and the offset is what that difference does to an
    estimate: model_ambient * (reference - (thermistor - rise + contrast)).

    Without ``background`` each frame's median stands in for it, which only works while the
    target covers less than half the image (calibration.py learns a real one). The stored
    offset itself is I/O, kept elsewhere. Raises ValueError when there is nothing usable.
    """
    measures: list[FrameMeasure] = []
    for frame in frames:
        px = np.asarray(frame.pixels, dtype=np.float64)
        if frame.fault or px.shape != (8, 8) or not np.all(np.isfinite(px)):
            raise ValueError(f"calibration frame at t={frame.t} is faulty")
        mean = np.full(px.shape, float(np.median(px))) if background is None else background
        sd = np.full(px.shape, NOISE_FLOOR_C) if noise is None else noise
        scene = find_blobs(px, mean, sd, settings, room_c=frame.thermistor_c - settings.thermistor_rise_c)
        # A black body hotter than any skin is classed an object; here it is the target.
        candidates = scene.people + (scene.objects if reference == "surface" else ())
        if not candidates:
            continue
        target = max(candidates, key=lambda b: b.coverage_px)
        measures.append(measure(frame, target, settings))
    window = estimate_window(measures, settings, calibrated=False)
    if (
        window.frames < settings.min_frames
        or window.estimate_c is None
        or window.contrast_c is None
        or window.ambient_c is None
    ):
        raise ValueError(
            f"calibration needs {settings.min_frames} frames showing the target, got {window.frames}"
        )
    if reference == "surface":
        measured = window.ambient_c - settings.thermistor_rise_c + window.contrast_c
        offset = settings.model_ambient * (reference_c - measured)
    else:
        measured = window.estimate_c
        offset = reference_c - window.estimate_c
    return Calibration(offset, window.frames, window.std_c, measured)
