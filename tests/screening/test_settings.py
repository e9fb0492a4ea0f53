import dataclasses
import math
from typing import Any

import pytest

from appliance.screening.settings import ScreeningSettings


def test_defaults_are_valid_and_plain() -> None:
    s = ScreeningSettings()
    assert s.threshold_c == 38.0
    assert s.max_plausible_c == 42.5
    assert s.sensor_warmup_s == 15.0
    assert (s.distance_min_m, s.distance_max_m) == (0.3, 0.55)
    assert s.unit == "C"
    # Time to a result at 10 fps: still detection plus the window stays well under 1.5 s.
    assert s.still_frames / 10.0 + s.window_s < 1.5


def test_pixel_pitch_matches_a_60_degree_field_of_view() -> None:
    assert ScreeningSettings().pixel_pitch == pytest.approx(2 * math.tan(math.radians(30)) / 8)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_hot", 0.0),
        ("hot_pixels", 1),
        ("hysteresis_c", -0.1),
        ("model_hot_per_m", -0.1),
        ("normal_margin_sd", -1.0),
        ("object_equivalent_c", 42.0),
        ("max_frame_gap_s", 0.0),
        ("min_plausible_c", 43.0),
        ("distance_min_m", 0.9),
        ("unit", "K"),
        ("threshold_c", math.nan),
    ],
)
def test_nonsense_is_refused_with_the_field_name(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(ScreeningSettings(), **{field: value})


def test_settings_are_frozen() -> None:
    s = ScreeningSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.threshold_c = 37.5  # type: ignore[misc]
