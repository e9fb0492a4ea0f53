import numpy as np

from appliance.screening.background import NOISE_FLOOR_C, Background
from appliance.screening.settings import ScreeningSettings

from .synth import Head, render


def test_learns_the_empty_scene_and_its_noise() -> None:
    rng = np.random.default_rng(1)
    bg = Background(ScreeningSettings())
    truth = 20.0 + np.arange(64).reshape(8, 8) / 32.0
    for _ in range(300):
        bg.update(truth + rng.normal(0, 0.4, (8, 8)))
    assert np.max(np.abs(bg.mean - truth)) < 0.3
    assert 0.25 < float(np.median(bg.sigma)) < 0.6


def test_noise_never_drops_below_the_sensor_floor() -> None:
    bg = Background(ScreeningSettings())
    for _ in range(50):
        bg.update(np.full((8, 8), 22.0))
    assert np.all(bg.sigma >= NOISE_FLOOR_C)


def test_excluded_pixels_keep_their_background() -> None:
    bg = Background(ScreeningSettings())
    bg.update(np.full((8, 8), 22.0))
    exclude = np.zeros((8, 8), dtype=bool)
    exclude[2:4, 2:4] = True
    warm = np.full((8, 8), 22.0)
    warm[2:4, 2:4] = 34.0
    for _ in range(100):
        bg.update(warm, exclude=exclude)
    assert np.all(bg.mean[2:4, 2:4] == 22.0)


def test_warm_start_leaves_a_person_present_at_boot_out_of_the_background() -> None:
    bg = Background(ScreeningSettings())
    bg.relearn(render([Head(distance_m=0.4)], background_c=22.0))
    assert float(bg.mean.max()) < 22.0 + ScreeningSettings().contrast_c


def test_one_outlier_does_not_blow_up_the_noise_estimate() -> None:
    bg = Background(ScreeningSettings())
    for _ in range(100):
        bg.update(np.full((8, 8), 22.0))
    spike = np.full((8, 8), 22.0)
    spike[4, 4] = 60.0
    bg.update(spike)
    assert bg.sigma[4, 4] < 0.5
    assert bg.mean[4, 4] < 22.5


def test_from_arrays_restores_a_saved_model() -> None:
    s = ScreeningSettings()
    bg = Background.from_arrays(s, np.full((8, 8), 21.0), np.zeros((8, 8)))
    assert bg.ready
    assert np.all(bg.mean == 21.0)
    assert np.all(bg.sigma == NOISE_FLOOR_C)
