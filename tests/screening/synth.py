"""Hand-built AMG8833 frames for the screening tests: pure, seeded, no I/O.

A scene is drawn at 16x16 sub-samples per pixel and box-averaged, so every pixel is the mix
of what covers it (the partial coverage the real sensor shows); then noise and the sensor's
0.25 degC quantisation are added.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.screening.distance import Distance
from appliance.screening.estimator import FrameMeasure, face_gain, model_estimate
from appliance.screening.records import FrameInput
from appliance.screening.settings import ScreeningSettings

PITCH = 2.0 * math.tan(math.radians(30.0)) / 8.0  # metres per pixel per metre of distance
_SUB = 16


@dataclass(frozen=True)
class Head:
    face_c: float = 34.0
    distance_m: float = 0.4
    center: tuple[float, float] = (3.0, 4.0)  # (row, col) in pixel units; pixel r spans [r, r+1)
    width_m: float = 0.16
    height_m: float = 0.21
    torso_c: float | None = 29.0  # clothing below the face; None for a floating head


@dataclass(frozen=True)
class Spot:
    """A compact warm or hot thing (a cup, a lamp): a disc of ``diameter_px`` pixels."""

    temp_c: float
    center: tuple[float, float]
    diameter_px: float


def render(
    heads: Sequence[Head] = (),
    spots: Sequence[Spot] = (),
    *,
    background_c: float = 22.0,
    noise_sd: float = 0.0,
    rng: np.random.Generator | None = None,
    quantise: bool = False,
) -> np.ndarray:
    n = 8 * _SUB
    coords = (np.arange(n) + 0.5) / _SUB
    rows, cols = np.meshgrid(coords, coords, indexing="ij")
    scene = np.full((n, n), background_c)
    for head in heads:
        half_w = head.width_m / (2 * head.distance_m * PITCH)
        half_h = head.height_m / (2 * head.distance_m * PITCH)
        r0, c0 = head.center
        if head.torso_c is not None:
            torso = (rows > r0 + 0.8 * half_h) & (np.abs(cols - c0) < 2.6 * half_w)
            scene[torso] = head.torso_c
            neck = (rows > r0) & (rows < r0 + 1.3 * half_h) & (np.abs(cols - c0) < 0.55 * half_w)
            scene[neck] = head.face_c - 0.5
        face = ((rows - r0) / half_h) ** 2 + ((cols - c0) / half_w) ** 2 <= 1.0
        scene[face] = head.face_c
    for spot in spots:
        inside = (rows - spot.center[0]) ** 2 + (cols - spot.center[1]) ** 2 <= (spot.diameter_px / 2) ** 2
        scene[inside] = spot.temp_c
    pixels = scene.reshape(8, _SUB, 8, _SUB).mean(axis=(1, 3))
    if noise_sd > 0:
        pixels = pixels + (rng or np.random.default_rng(0)).normal(0.0, noise_sd, pixels.shape)
    if quantise:
        pixels = np.round(pixels * 4.0) / 4.0
    return pixels


def width_px(distance_m: float, width_m: float = 0.16) -> float:
    return width_m / (distance_m * PITCH)


# The thermistor reads its package, thermistor_rise_c (0.5) above the room; the room here is
# the 22 degC background, so a face's contrast over the wall is its excess over the room.
THERMISTOR_C = 22.5


def frame(
    t: float, pixels: np.ndarray, thermistor_c: float = THERMISTOR_C, fault: bool = False
) -> FrameInput:
    return FrameInput(
        t=t, pixels=np.asarray(pixels, dtype=np.float64), thermistor_c=thermistor_c, fault=fault
    )


@dataclass
class Clock:
    """Frame times at a fixed rate; tests advance it as the story goes."""

    t: float = 0.0
    fps: float = 10.0

    def tick(self) -> float:
        t = self.t
        self.t = round(self.t + 1.0 / self.fps, 9)
        return t


def empty(
    clock: Clock,
    seconds: float,
    *,
    rng: np.random.Generator,
    noise_sd: float = 0.16,
    background_c: float = 22.0,
    thermistor_c: float = THERMISTOR_C,
) -> Iterator[FrameInput]:
    for _ in range(round(seconds * clock.fps)):
        yield frame(
            clock.tick(),
            render(background_c=background_c, noise_sd=noise_sd, rng=rng, quantise=True),
            thermistor_c,
        )


def visit(
    clock: Clock,
    seconds: float,
    heads: Sequence[Head],
    *,
    rng: np.random.Generator,
    spots: Sequence[Spot] = (),
    noise_sd: float = 0.16,
    background_c: float = 22.0,
    thermistor_c: float = THERMISTOR_C,
    fault_at: set[int] | None = None,
) -> Iterator[FrameInput]:
    for i in range(round(seconds * clock.fps)):
        px = render(heads, spots, background_c=background_c, noise_sd=noise_sd, rng=rng, quantise=True)
        yield frame(clock.tick(), px, thermistor_c, fault=bool(fault_at and i in fault_at))


def measures(
    contrast_c: float | Sequence[float],
    n: int = 9,
    *,
    thermistor_c: float = 24.0,
    background_c: float = 22.0,
    distance_m: float = 0.35,
    distance_sd_m: float = 0.05,
    width_px: float = 3.0,
    centroid: tuple[float, float] = (3.0, 3.5),
) -> list[FrameMeasure]:
    """A still window of ``n`` frames whose face shows ``contrast_c`` over the background at
    its best pixel (per frame if a sequence), its neighbours a little less: what measure()
    gives for a steady face, without rendering one."""
    values = (
        [float(contrast_c)] * n if isinstance(contrast_c, int | float) else [float(v) for v in contrast_c]
    )
    out = []
    region = np.zeros((8, 8), dtype=bool)
    region[2:5, 2:6] = True
    for i, c in enumerate(values):
        image = np.zeros((8, 8))
        image[2:5, 2:6] = c - 0.4
        image[3, 3] = c
        image[3, 4] = c - 0.1
        hot = tuple(sorted((background_c + v for v in image[region]), reverse=True)[:4])
        out.append(
            FrameMeasure(
                t=i * 0.1,
                hot_c=hot,
                ambient_c=thermistor_c,
                distance=Distance(distance_m, distance_sd_m),
                width_px=width_px,
                centroid=centroid,
                noise_c=0.17,
                contrast=image,
                region=region,
            )
        )
    return out


def contrast_for(
    estimate_c: float, settings: ScreeningSettings, *, thermistor_c: float = 24.0, distance_m: float = 0.35
) -> float:
    """The face contrast the model turns into ``estimate_c`` (calibration included)."""
    rest = model_estimate(0.0, thermistor_c, distance_m, settings)
    return (estimate_c - rest) / face_gain(distance_m, settings)
