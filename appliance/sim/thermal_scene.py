"""The true 8x8 temperature field an AMG8833 would see, rendered from a scenario.

Optics: the AMG8833 sees 60° x 60° through 8 x 8 pixels of 7.5° each. Each pixel reads the area-weighted
mean of what lies in its cone, so the renderer casts `supersample`² rays per pixel on an equiangular grid,
finds what each ray hits (nearest surface wins), and averages. A head 0.16 m wide fills ~2.4 pixels at
0.5 m but ~1.5 at 0.8 m: far faces mix with the background and the hottest pixel drops, as on the real
sensor. (A real lens also blurs a little across pixels; that only strengthens the effect.)

Physiology, kept deliberately simple: skin sits between the core and the room like the midpoint of a
thermal divider, T_skin = T_core - k (T_core - T_ambient), with k the share of the core-to-room
resistance that lies inside the body. k = 0.20 for the forehead (34.0 °C at core 37, room 22; typical
measured forehead values are 33.5-35 °C) and 0.12 for the inner canthus (35.2 °C), which is the warmest
easily visible skin and the usual screening site. A fever of +1.5 °C core shows as +1.2 °C forehead.
Hair and clothing insulate, so they sit at ambient + 0.35 of the skin's excess over ambient.

Deterministic: the background's fixed texture comes from the seed, and the scenario itself has no chance.

Plain Python, no numpy: the thermal daemon's sim backend renders this ten times a second, and numpy would
cost its process ~12 MB of RSS (issue 8). The arithmetic is the one the numpy version did, in the same
order: the rays per pixel are summed as numpy's pairwise summation summed them, so the same scene and
texture give the same field to the last bit (tests/thermal/test_golden.py). The texture's random numbers
come from a `Noise` (appliance/thermal/fake_amg8833.py): by default the standard library's generator; the
screening corpus passes one backed by numpy's Generator so that its recordings stay as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from appliance.sim.scenario import (
    HEAD_HEIGHT_M,
    HEAD_WIDTH_M,
    NECK_HEIGHT_M,
    TORSO_HEIGHT_M,
    TORSO_WIDTH_M,
    ObjectState,
    PersonState,
    Scenario,
)
from appliance.thermal.fake_amg8833 import FaultState, Noise, PyNoise
from appliance.thermal.registers import COLS, FOV_DEG, ROWS

FOREHEAD_K = 0.20
CANTHUS_K = 0.12
INSULATED_SHARE = 0.35  # hair and clothing: fraction of the skin's excess over ambient that shows
CANTHUS_RADIUS_M = 0.010
CANTHUS_OFFSET_M = 0.017  # from the midline, each side
EYE_LINE_M = 0.0  # eyes sit at the head's centre line


def skin_temperature(core_c: float, ambient_c: float, k: float) -> float:
    return core_c - k * (core_c - ambient_c)


def forehead_temperature(core_c: float, ambient_c: float) -> float:
    return skin_temperature(core_c, ambient_c, FOREHEAD_K)


def canthus_temperature(core_c: float, ambient_c: float) -> float:
    return skin_temperature(core_c, ambient_c, CANTHUS_K)


def _pairwise_sum(values: Sequence[float], start: int, n: int) -> float:
    """values[start:start + n] summed in the order of numpy's pairwise summation (numpy's
    pairwise_sum for float64): eight running sums combined as a tree, recursion above 128."""
    if n < 8:
        total = 0.0
        for i in range(start, start + n):
            total += values[i]
        return total
    if n <= 128:
        r = list(values[start : start + 8])
        whole = n - n % 8
        for i in range(start + 8, start + whole, 8):
            for j in range(8):
                r[j] += values[i + j]
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for i in range(start + whole, start + n):
            total += values[i]
        return total
    half = n // 2
    half -= half % 8
    return _pairwise_sum(values, start, half) + _pairwise_sum(values, start + half, n - half)


class ThermalScene:
    """`field(t)` -> (64 °C row-major, row 0 = top of the image, ambient °C); also the scenario's fault
    schedule."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        supersample: int = 10,
        fov_deg: float = FOV_DEG,
        noise: Noise | None = None,
    ) -> None:
        """`noise` draws the texture; without one, PyNoise seeded with `seed` (default: the scenario's)."""
        self.scenario = scenario
        self.supersample = supersample
        rng = noise if noise is not None else PyNoise(scenario.seed if seed is None else seed)
        # Walls, doors and furniture are never one temperature: a fixed, smooth-ish texture, one value per
        # pixel, drawn row-major.
        texture = [float(rng.normal(0.0, 0.15)) for _ in range(ROWS * COLS)]
        n = supersample
        n_x, n_y = COLS * n, ROWS * n
        half = math.radians(fov_deg) / 2.0
        azimuth = [-half + (i + 0.5) * (2 * half / n_x) for i in range(n_x)]  # left -> right
        elevation = [half - (j + 0.5) * (2 * half / n_y) for j in range(n_y)]  # top -> bottom
        self._tan_x = [math.tan(a) for a in azimuth]  # per ray column
        self._tan_y = [math.tan(e) for e in elevation]  # per ray row
        # Vertical position in the view, +0.5 at the top and -0.5 at the bottom, for the gradient.
        self._up = [e / (2 * half) * 1.0 for e in elevation]
        # The texture per ray, ray row by ray row (each value times 1.0, as the Kronecker product made it).
        self._texture_rows = [
            [texture[(j // n) * COLS + i // n] * 1.0 for i in range(n_x)] for j in range(n_y)
        ]

    def faults_at(self, t: float) -> FaultState:
        return self.scenario.faults_at(t)

    def field(self, t: float) -> tuple[list[float], float]:
        ambient = self.scenario.ambient_at(t)
        gradient = self.scenario.ambient.gradient
        rays = [
            [ambient + gradient * up + texture for texture in row]
            for up, row in zip(self._up, self._texture_rows, strict=True)
        ]
        depth = [[math.inf] * len(self._tan_x) for _ in self._tan_y]
        for person in self.scenario.people_at(t):
            self._paint_person(rays, depth, person, ambient)
        for obj in self.scenario.objects_at(t):
            self._paint_object(rays, depth, obj)
        return self._pixels(rays), ambient

    def _pixels(self, rays: list[list[float]]) -> list[float]:
        """Each pixel's mean over its n x n rays: numpy's mean over axes (1, 3) of the rays as
        (8, n, 8, n), which adds each ray row's pairwise sum to a running total, then divides."""
        n = self.supersample
        count = n * n
        pixels = []
        for row in range(ROWS):
            block = rays[row * n : (row + 1) * n]
            for col in range(COLS):
                total = 0.0
                for ray_row in block:
                    total = total + _pairwise_sum(ray_row, col * n, n)
                pixels.append(total / count)
        return pixels

    @staticmethod
    def _paint_where(
        rays: list[list[float]],
        depth: list[list[float]],
        z: float,
        value: float,
        rows: Sequence[int],
        hit: Callable[[int, int], bool],
    ) -> None:
        """Rays (j, i) in `rows` for which hit(j, i) holds, and nothing nearer, take the value."""
        for j in rows:
            ray_row, depth_row = rays[j], depth[j]
            for i in range(len(ray_row)):
                if depth_row[i] >= z and hit(j, i):
                    ray_row[i] = value
                    depth_row[i] = z

    def _plane(self, z: float, x0: float, y0: float) -> tuple[list[float], list[float]]:
        """Where each ray column and each ray row meets the plane at depth z, relative to (x0, y0)."""
        return [z * tx - x0 for tx in self._tan_x], [z * ty - y0 for ty in self._tan_y]

    def _paint_person(
        self, rays: list[list[float]], depth: list[list[float]], p: PersonState, ambient: float
    ) -> None:
        z = p.distance
        x, y = self._plane(z, p.lateral, p.face_height)
        forehead = forehead_temperature(p.core_temp, ambient)
        canthus = canthus_temperature(p.core_temp, ambient)
        insulated = ambient + INSULATED_SHARE * (forehead - ambient)
        half_w, half_h = HEAD_WIDTH_M / 2, HEAD_HEIGHT_M / 2
        every = range(len(y))
        # The head is the ellipse (x / half_w)² + (y / half_h)² <= 1, squares as x * x (numpy's square).
        head_x = [(v / half_w) * (v / half_w) for v in x]
        head_y = [(v / half_h) * (v / half_h) for v in y]
        head_rows = [j for j in every if head_y[j] <= 1.0]  # a row beyond stays beyond whatever x adds

        def head(j: int, i: int) -> bool:
            return head_x[i] + head_y[j] <= 1.0

        neck_top = -half_h * 0.8
        neck_bottom = -half_h - NECK_HEIGHT_M
        neck_rows = [j for j in every if neck_bottom < y[j] <= neck_top]
        torso_top = -half_h - NECK_HEIGHT_M
        torso_bottom = torso_top - TORSO_HEIGHT_M
        torso_rows = [j for j in every if torso_bottom < y[j] <= torso_top]
        # Painted at the same depth, so later layers win: clothing, neck, face, then hair and eyes.
        self._paint_where(rays, depth, z, insulated, torso_rows, lambda j, i: abs(x[i]) <= TORSO_WIDTH_M / 2)
        self._paint_where(rays, depth, z, forehead - 0.3, neck_rows, lambda j, i: abs(x[i]) <= 0.055)
        self._paint_where(rays, depth, z, forehead, head_rows, head)
        # Below the eyes (nose, cheeks) the skin is a little cooler than the forehead.
        below_eyes = EYE_LINE_M - 0.02
        cheek_rows = [j for j in head_rows if y[j] < below_eyes]
        self._paint_where(rays, depth, z, forehead - 0.5, cheek_rows, head)
        hair_line = half_h * 0.55
        hair_rows = [j for j in head_rows if y[j] > hair_line]
        self._paint_where(rays, depth, z, insulated, hair_rows, head)  # hair
        eye_y = [(v - EYE_LINE_M) * (v - EYE_LINE_M) for v in y]
        radius_sq = CANTHUS_RADIUS_M**2
        eye_rows = [j for j in every if eye_y[j] <= radius_sq]
        for side in (-1.0, 1.0):
            centre = side * CANTHUS_OFFSET_M
            eye_x = [(v - centre) * (v - centre) for v in x]

            def eye(j: int, i: int, eye_x: list[float] = eye_x) -> bool:
                return eye_x[i] + eye_y[j] <= radius_sq

            self._paint_where(rays, depth, z, canthus, eye_rows, eye)

    def _paint_object(self, rays: list[list[float]], depth: list[list[float]], o: ObjectState) -> None:
        x, y = self._plane(o.distance, o.lateral, o.height)
        rows = [j for j in range(len(y)) if abs(y[j]) <= o.tall / 2]
        self._paint_where(rays, depth, o.distance, o.temperature, rows, lambda j, i: abs(x[i]) <= o.width / 2)
