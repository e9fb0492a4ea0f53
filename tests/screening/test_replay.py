import dataclasses
import json

import numpy as np

from appliance.screening.replay import replay
from appliance.screening.settings import ScreeningSettings

from .synth import Clock, Head, empty, visit

S = dataclasses.replace(ScreeningSettings(), sensor_warmup_s=0.0, system_warmup_s=0.0)


def recording() -> list[tuple[float, float, list[list[float]]]]:
    rng, clock = np.random.default_rng(21), Clock()
    frames = [
        *empty(clock, 2.0, rng=rng),
        *visit(clock, 3.0, [Head(face_c=34.0, distance_m=0.35)], rng=rng),
        *empty(clock, 2.0, rng=rng),
        *visit(clock, 3.0, [Head(face_c=35.7, distance_m=0.3, center=(3.2, 3.6))], rng=rng),
        *empty(clock, 1.0, rng=rng),
    ]
    return [(f.t, f.thermistor_c, f.pixels.tolist()) for f in frames]


def test_one_result_per_person_from_plain_tuples() -> None:
    results = list(replay(recording(), S))
    assert [r.result for r in results] == ["normal", "elevated"]
    assert results[0].end_t < results[1].start_t


def test_results_serialise_to_the_replay_json_shape() -> None:
    results = [r.as_dict() for r in replay(recording(), S)]
    text = json.dumps(results)
    back = json.loads(text)
    assert set(back[0]) >= {"start", "end", "result", "estimate_c", "confidence"}
    assert isinstance(back[0]["estimate_c"], float)


def test_the_warm_up_lockout_is_kept_unless_the_settings_drop_it() -> None:
    assert list(replay(recording(), ScreeningSettings())) == []
