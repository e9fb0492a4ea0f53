from __future__ import annotations

import numpy as np
import pytest

from appliance.sim.scenario import parse_scenario
from appliance.sim.thermal_scene import (
    ThermalScene,
    _pairwise_sum,
    canthus_temperature,
    forehead_temperature,
)


def row(field: list[float], r: int) -> list[float]:
    """Row r (0 = top) of a row-major field of 64."""
    return field[r * 8 : r * 8 + 8]


def _one_person(distance: float, core: float = 37.0, ambient: float = 22.0, **person: float) -> ThermalScene:
    scenario = parse_scenario(
        {
            "name": "one",
            "duration": 20.0,
            "ambient": {"temperature": ambient, "gradient": 0.0},
            "person": [
                {"name": "a", "enter": 0.0, "approach": 1.0, "dwell": 10.0, "distance": distance,
                 "far_distance": 3.0, "core_temp": core, "sway": 0.0, **person}
            ],
        }
    )  # fmt: skip
    return ThermalScene(scenario, seed=1)


def test_physiological_model() -> None:
    assert forehead_temperature(37.0, 22.0) == pytest.approx(34.0)
    assert canthus_temperature(37.0, 22.0) == pytest.approx(35.2)
    # Fever raises the skin, and so does a warmer room, but less.
    assert forehead_temperature(38.5, 22.0) - forehead_temperature(37.0, 22.0) == pytest.approx(1.2)
    assert forehead_temperature(37.0, 30.0) - forehead_temperature(37.0, 22.0) == pytest.approx(1.6)


def test_distance_changes_the_hottest_pixel() -> None:
    hottest = {d: max(_one_person(d).field(5.0)[0]) for d in (0.3, 0.5, 0.8, 1.5)}
    forehead = forehead_temperature(37.0, 22.0)
    assert hottest[0.3] == pytest.approx(forehead, abs=0.6)  # the face fills whole pixels
    assert hottest[0.3] > hottest[0.5] > hottest[0.8] > hottest[1.5]
    assert hottest[0.3] - hottest[0.8] > 1.0  # far faces mix with the background
    assert hottest[1.5] < forehead - 3.0


def test_fever_is_visible_at_the_same_distance() -> None:
    normal = max(_one_person(0.4, core=36.8).field(5.0)[0])
    fever = max(_one_person(0.4, core=39.0).field(5.0)[0])
    assert fever - normal == pytest.approx(0.8 * 2.2, abs=0.25)


def test_geometry_matches_image_orientation() -> None:
    field, ambient = _one_person(0.5, lateral=0.15, face_height=0.12).field(5.0)
    r, c = divmod(field.index(max(field)), 8)  # row-major
    assert r <= 3 and c >= 4  # up and to the right
    assert ambient == 22.0
    field, _ = _one_person(0.5).field(15.0)  # gone: only the room
    assert max(field) < 23.0


def test_area_weighting_is_gradual() -> None:
    # A person sliding sideways moves heat between pixels smoothly, not in 7.5° jumps.
    # Column 5 starts 7.5° right of the axis, where the edge of a centred head sits at 0.6 m.
    readings = [
        float(_one_person(0.6, lateral=x).field(5.0)[0][4 * 8 + 5]) for x in np.linspace(0.0, 0.08, 9)
    ]
    steps = np.diff(readings)
    assert np.all(steps >= 0) and np.all(steps < 2.5)
    assert readings[-1] - readings[0] > 5.0


def test_deterministic_given_seed() -> None:
    scenario = _one_person(0.5).scenario
    a = ThermalScene(scenario, seed=4).field(3.0)[0]
    b = ThermalScene(scenario, seed=4).field(3.0)[0]
    c = ThermalScene(scenario, seed=5).field(3.0)[0]
    assert a == b
    assert a != c


def test_coffee_cup_is_hot_and_cools() -> None:
    scenario = parse_scenario(
        {
            "name": "cup",
            "duration": 3600.0,
            "ambient": {"temperature": 22.0},
            "object": [{"name": "cup", "distance": 0.4, "lateral": 0.0, "height": -0.1, "temperature": 70.0}],
        }
    )
    scene = ThermalScene(scenario)
    fresh, _ = scene.field(0.0)
    cold, _ = scene.field(3000.0)
    assert max(fresh) > 40.0  # hotter than any face: a trap for naive max-pixel screening
    assert max(cold) < max(fresh) - 10.0


def test_warm_air_gradient() -> None:
    scenario = parse_scenario(
        {"name": "g", "duration": 1.0, "ambient": {"temperature": 22.0, "gradient": 1.0}}
    )
    field, _ = ThermalScene(scenario, seed=0).field(0.0)
    assert sum(row(field, 0)) / 8 - sum(row(field, 7)) / 8 == pytest.approx(0.875, abs=0.2)


@pytest.mark.parametrize("n", [1, 5, 7, 8, 9, 10, 16, 17, 20, 64, 127, 128, 129, 300, 1000])
def test_ray_sums_are_numpys_to_the_last_bit(n: int) -> None:
    """The renderer sums a pixel's rays in numpy's pairwise order, so supersampling at any size gives
    the field the numpy renderer gave (golden-tested at the default 10)."""
    values = np.random.default_rng(n).normal(22.0, 5.0, n + 3)
    assert _pairwise_sum(values.tolist(), 3, n) == float(np.add.reduce(values[3:]))
