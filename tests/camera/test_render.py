"""The sim camera paints what the scenario says the camera sees (the same geometry as the thermal sim)."""

from __future__ import annotations

import numpy as np

from appliance.camera.render import SKIN, SceneRenderer
from appliance.sim.clock import load_sim_scenario
from appliance.sim.scenario import ImageRegion


def test_empty_scene_is_the_room() -> None:
    renderer = SceneRenderer(320, 240, seed=1)
    frame = renderer.render([])
    assert (frame == renderer.background).all()
    # The same seed gives the same room; the picture is not flat.
    assert (SceneRenderer(320, 240, seed=1).background == renderer.background).all()
    assert frame.std() > 10


def test_a_face_is_drawn_where_the_region_says() -> None:
    renderer = SceneRenderer(320, 240)
    face = ImageRegion("face", "alice", u=0.25, v=0.5, width=0.2, height=0.3, distance=0.5)
    frame = renderer.render([face])
    changed = np.argwhere((frame != renderer.background).any(axis=2))
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    assert abs((x0 + x1) / 2 - 80) <= 2 and abs((y0 + y1) / 2 - 120) <= 6
    assert 60 <= x1 - x0 <= 68  # 0.2 of 320 px, hair included
    assert tuple(frame[128, 80]) in SKIN  # the cheek


def test_nearer_regions_cover_farther_ones() -> None:
    renderer = SceneRenderer(320, 240)
    far = ImageRegion("object", "cup", 0.5, 0.5, 0.3, 0.3, distance=2.0)
    near = ImageRegion("face", "bob", 0.5, 0.5, 0.3, 0.4, distance=0.5)
    frame = renderer.render([far, near])  # camera_view lists far to near
    assert tuple(frame[125, 160]) in SKIN


def test_the_demo_shows_people_when_the_thermal_sim_does() -> None:
    scenario = load_sim_scenario("demo")
    renderer = SceneRenderer(160, 120)
    empty = renderer.render(scenario.camera_view(0.5))
    alice = renderer.render(scenario.camera_view(6.0))  # alice holds still at 0.45 m
    assert (empty == renderer.background).all()
    assert [p.name for p in scenario.people_at(6.0)] == ["alice"]
    (face,) = [r for r in scenario.camera_view(6.0) if r.kind == "face"]
    # Below the eyes, on the face's centre line: skin, where the thermal sim puts her canthi.
    assert tuple(alice[int((face.v + face.height * 0.15) * 120), int(face.u * 160)]) in SKIN
    assert (alice != renderer.background).any(axis=2).mean() > 0.1
