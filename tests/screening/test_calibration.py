import dataclasses

import numpy as np
import pytest

from appliance.screening.calibration import calibrate_frames
from appliance.screening.machine import ScreeningMachine
from appliance.screening.settings import ScreeningSettings

from .synth import Clock, Head, empty, visit

S = ScreeningSettings()
HEAD = Head(face_c=33.6, distance_m=0.4)


def reference_frames(seed: int = 1, *, still_s: float = 6.0) -> list:  # type: ignore[type-arg]
    rng, clock = np.random.default_rng(seed), Clock()
    return [*empty(clock, 2.0, rng=rng), *visit(clock, still_s, [HEAD], rng=rng), *empty(clock, 1.0, rng=rng)]


def test_the_offset_makes_the_kiosk_read_the_reference() -> None:
    frames = reference_frames()
    cal = calibrate_frames(frames, 36.9, S, max_frames=40)
    assert cal.frames == 40 and cal.spread_c < 0.3
    assert cal.measured_c + cal.offset_c == pytest.approx(36.9)
    # Screening the same person with it now reads the reference (within a window's noise).
    site = dataclasses.replace(S, calibration_offset_c=cal.offset_c)
    machine = ScreeningMachine(site, warm_start=True)
    results = [r for f in reference_frames(seed=2) if (r := machine.feed(f).result) is not None]
    assert results and results[0].estimate_c == pytest.approx(36.9, abs=0.2)


def test_a_stale_offset_in_the_settings_is_ignored() -> None:
    frames = reference_frames()
    plain = calibrate_frames(frames, 36.9, S)
    stale = calibrate_frames(frames, 36.9, dataclasses.replace(S, calibration_offset_c=2.0))
    assert stale.offset_c == pytest.approx(plain.offset_c)


def test_without_an_empty_scene_or_a_steady_target_it_refuses() -> None:
    rng, clock = np.random.default_rng(3), Clock()
    with pytest.raises(ValueError, match="empty frames"):
        calibrate_frames([*empty(clock, 0.3, rng=rng), *visit(clock, 4.0, [HEAD], rng=rng)], 36.9, S)
    with pytest.raises(ValueError, match="no target"):
        calibrate_frames(list(empty(Clock(), 3.0, rng=rng)), 36.9, S)
    with pytest.raises(ValueError, match="held still"):
        calibrate_frames(reference_frames(still_s=0.4), 36.9, S)
