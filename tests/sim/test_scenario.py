from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from appliance.errors import ConfigError
from appliance.sim.scenario import ImageRegion, bundled_scenario, load_scenario, parse_scenario


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_demo_tells_the_promised_story() -> None:
    demo = bundled_scenario("demo")
    assert demo.loop and 120 <= demo.duration <= 600
    cores = [p.core_temp for p in demo.people]
    assert any(c >= 38.0 for c in cores) and any(c < 37.3 for c in cores)
    assert any(p.distance > 1.0 for p in demo.people)  # someone too far
    assert any(len(demo.people_at(t / 2)) >= 2 for t in range(int(demo.duration * 2)))  # two at once
    assert demo.objects and demo.objects[0].temperature > 50  # the coffee cup


def test_person_approaches_holds_and_leaves() -> None:
    scenario = parse_scenario(
        {
            "name": "walk",
            "duration": 30.0,
            "person": [{"name": "a", "enter": 2.0, "approach": 2.0, "dwell": 4.0, "leave": 2.0, "sway": 0.0}],
        }
    )
    assert scenario.people_at(1.0) == []
    walking_in = scenario.people_at(3.0)[0]
    holding = scenario.people_at(6.0)[0]
    walking_out = scenario.people_at(9.0)[0]
    assert walking_in.phase == "approach" and 0.5 < walking_in.distance < 2.5
    assert holding.phase == "dwell" and holding.distance == 0.5
    assert walking_out.phase == "leave" and walking_out.distance > 0.5
    assert scenario.people_at(10.5) == []
    assert scenario.people_at(36.0)[0].phase == "dwell"  # loops by default


def test_ambient_drift_and_cooling_cup() -> None:
    scenario = parse_scenario(
        {
            "name": "room",
            "duration": 7200.0,
            "ambient": {"temperature": 20.0, "drift_per_hour": 1.0},
            "object": [{"name": "cup", "temperature": 70.0, "cooling_minutes": 10.0}],
        }
    )
    assert scenario.ambient_at(3600.0) == pytest.approx(21.0)
    hot = scenario.objects_at(0.0)[0].temperature
    later = scenario.objects_at(600.0)[0].temperature
    assert hot == 70.0 and later == pytest.approx(20.1667 + (70 - 20.1667) / 2.718281828, abs=0.01)


def test_faults_at_times() -> None:
    scenario = parse_scenario(
        {"name": "f", "duration": 60.0, "fault": [{"kind": "stuck_frames", "start": 10.0, "duration": 2.0}]}
    )
    assert not scenario.faults_at(9.9).stuck_frames
    assert scenario.faults_at(10.0).stuck_frames and not scenario.faults_at(10.0).i2c_error
    assert not scenario.faults_at(12.0).stuck_frames


def test_camera_view_is_normalized_and_shrinks_with_distance() -> None:
    def face_at(distance: float, lateral: float = 0.0, height: float = 0.0) -> ImageRegion:
        scenario = parse_scenario(
            {
                "name": "c",
                "duration": 10.0,
                "person": [
                    {
                        "name": "a", "enter": 0.0, "approach": 1.0, "dwell": 5.0, "distance": distance,
                        "lateral": lateral, "face_height": height, "sway": 0.0,
                    }
                ],
            }
        )  # fmt: skip
        return next(r for r in scenario.camera_view(3.0) if r.kind == "face")

    near, far = face_at(0.3), face_at(0.8)
    assert near.u == pytest.approx(0.5) and near.v == pytest.approx(0.5)
    assert near.width == pytest.approx(far.width * 0.8 / 0.3)
    right_high = face_at(0.5, lateral=0.1, height=0.1)
    assert right_high.u > 0.5 and right_high.v < 0.5  # u right, v down


HEAD = 'name = "x"\nduration = 10\n'
PERSON = HEAD + '[[person]]\nname = "a"\nenter = 0\n'


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (PERSON + "core_temp = 50\n", "person[0].core_temp", "less than or equal"),
        (HEAD + "wind = 3\n", "wind", "Extra inputs"),
        ('name = "x"\n', "duration", "Field required"),
        (HEAD + '[[fault]]\nkind = "smoke"\nstart = 1\nduration = 1\n', "fault[0].kind", "Input should be"),
        (PERSON + "distance = 3\nfar_distance = 2\n", "person[0]", "far_distance"),
        (HEAD + '[ambient]\ntemperature = "warm"\n', "ambient.temperature", "valid number"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert info.value.file == str(path)
    assert info.value.key == key
    assert reason in info.value.reason


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(_write(tmp_path, "name = \n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "absent.toml")


def test_scenario_round_trips_through_its_dump() -> None:
    demo = bundled_scenario()
    assert parse_scenario(msgspec.to_builtins(demo)) == demo


def test_a_person_can_step_while_dwelling_and_leaves_from_where_they_ended() -> None:
    scenario = parse_scenario(
        {
            "name": "steps",
            "duration": 20.0,
            "loop": False,
            "person": [
                {
                    "name": "a", "enter": 0.0, "approach": 1.0, "dwell": 8.0, "leave": 2.0, "distance": 0.7,
                    "sway": 0.0, "move": [{"after": 2.0, "duration": 1.0, "distance": 0.4, "lateral": 0.1}],
                }
            ],
        }
    )  # fmt: skip
    person = scenario.people[0]
    assert person.settled_at == 4.0 and person.final_distance == 0.4 and person.final_lateral == 0.1
    (before,) = scenario.people_at(2.9)
    (stepping,) = scenario.people_at(3.5)
    (after,) = scenario.people_at(5.0)
    (leaving,) = scenario.people_at(9.5)
    assert before.phase == "dwell" and before.distance == 0.7 and before.lateral == 0.0
    assert stepping.phase == "step" and 0.4 < stepping.distance < 0.7
    assert after.phase == "dwell" and after.distance == 0.4 and after.lateral == 0.1
    assert leaving.phase == "leave" and 0.4 < leaving.distance < 2.5 and leaving.lateral == 0.1


@pytest.mark.parametrize(
    "moves",
    [
        [{"after": 7.0, "duration": 2.0}],  # ends after the dwell
        [{"after": 2.0, "duration": 2.0}, {"after": 3.0, "duration": 1.0}],  # overlap
        [{"after": 1.0, "distance": 3.0}],  # beyond far_distance
    ],
)
def test_moves_must_fit_the_dwell(moves: list[dict[str, float]]) -> None:
    data = {
        "name": "bad",
        "duration": 20.0,
        "person": [{"name": "a", "enter": 0.0, "dwell": 8.0, "move": moves}],
    }
    with pytest.raises(ConfigError):
        parse_scenario(data)
