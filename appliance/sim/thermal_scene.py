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
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

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
from appliance.thermal.fake_amg8833 import FaultState
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


class ThermalScene:
    """`field(t)` -> (8x8 °C, row 0 = top of the image, ambient °C); also the scenario's fault schedule."""

    def __init__(
        self, scenario: Scenario, *, seed: int | None = None, supersample: int = 10, fov_deg: float = FOV_DEG
    ) -> None:
        self.scenario = scenario
        self.supersample = supersample
        rng = np.random.default_rng(scenario.seed if seed is None else seed)
        # Walls, doors and furniture are never one temperature: a fixed, smooth-ish texture.
        self._texture = np.kron(rng.normal(0.0, 0.15, (ROWS, COLS)), np.ones((supersample, supersample)))
        n_x, n_y = COLS * supersample, ROWS * supersample
        half = math.radians(fov_deg) / 2.0
        azimuth = -half + (np.arange(n_x) + 0.5) * (2 * half / n_x)  # left -> right
        elevation = half - (np.arange(n_y) + 0.5) * (2 * half / n_y)  # top -> bottom
        self._tan_x, self._tan_y = np.meshgrid(np.tan(azimuth), np.tan(elevation))
        # Vertical position in the view, +0.5 at the top and -0.5 at the bottom, for the gradient.
        self._up = (elevation / (2 * half))[:, None] * np.ones((1, n_x))

    def faults_at(self, t: float) -> FaultState:
        return self.scenario.faults_at(t)

    def field(self, t: float) -> tuple[npt.NDArray[np.float64], float]:
        ambient = self.scenario.ambient_at(t)
        rays = ambient + self.scenario.ambient.gradient * self._up + self._texture
        depth = np.full(rays.shape, np.inf)
        for person in self.scenario.people_at(t):
            self._paint_person(rays, depth, person, ambient)
        for obj in self.scenario.objects_at(t):
            self._paint_object(rays, depth, obj)
        n = self.supersample
        return rays.reshape(ROWS, n, COLS, n).mean(axis=(1, 3)), ambient

    def _plane(
        self, z: float, x0: float, y0: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Where each ray meets the plane at depth z, relative to (x0, y0)."""
        return z * self._tan_x - x0, z * self._tan_y - y0

    @staticmethod
    def _paint(
        rays: npt.NDArray[np.float64],
        depth: npt.NDArray[np.float64],
        mask: npt.NDArray[np.bool_],
        z: float,
        value: float,
    ) -> None:
        hit = mask & (depth >= z)
        rays[hit] = value
        depth[hit] = z

    def _paint_person(
        self, rays: npt.NDArray[np.float64], depth: npt.NDArray[np.float64], p: PersonState, ambient: float
    ) -> None:
        z = p.distance
        x, y = self._plane(z, p.lateral, p.face_height)
        forehead = forehead_temperature(p.core_temp, ambient)
        canthus = canthus_temperature(p.core_temp, ambient)
        insulated = ambient + INSULATED_SHARE * (forehead - ambient)
        half_w, half_h = HEAD_WIDTH_M / 2, HEAD_HEIGHT_M / 2
        head = (x / half_w) ** 2 + (y / half_h) ** 2 <= 1.0
        neck_top = -half_h * 0.8
        neck = (np.abs(x) <= 0.055) & (y <= neck_top) & (y > -half_h - NECK_HEIGHT_M)
        torso_top = -half_h - NECK_HEIGHT_M
        torso = (np.abs(x) <= TORSO_WIDTH_M / 2) & (y <= torso_top) & (y > torso_top - TORSO_HEIGHT_M)
        # Painted at the same depth, so later layers win: clothing, neck, face, then hair and eyes.
        self._paint(rays, depth, torso, z, insulated)
        self._paint(rays, depth, neck, z, forehead - 0.3)
        self._paint(rays, depth, head, z, forehead)
        # Below the eyes (nose, cheeks) the skin is a little cooler than the forehead.
        self._paint(rays, depth, head & (y < EYE_LINE_M - 0.02), z, forehead - 0.5)
        self._paint(rays, depth, head & (y > half_h * 0.55), z, insulated)  # hair
        for side in (-1.0, 1.0):
            eye = (x - side * CANTHUS_OFFSET_M) ** 2 + (y - EYE_LINE_M) ** 2 <= CANTHUS_RADIUS_M**2
            self._paint(rays, depth, eye, z, canthus)

    def _paint_object(
        self, rays: npt.NDArray[np.float64], depth: npt.NDArray[np.float64], o: ObjectState
    ) -> None:
        x, y = self._plane(o.distance, o.lateral, o.height)
        body = (np.abs(x) <= o.width / 2) & (np.abs(y) <= o.tall / 2)
        self._paint(rays, depth, body, o.distance, o.temperature)
