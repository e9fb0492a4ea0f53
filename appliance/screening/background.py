"""Per-pixel model of the empty scene: a slow mean and a robust noise estimate.

The mean is only updated on pixels that are not part of a blob, and only while nobody is in
front of the kiosk: a person standing still must never fade into the background mid-screening.
The noise estimate tracks the mean absolute deviation (scaled to a standard deviation), with
residuals clipped so that one warm hand passing by does not inflate it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from appliance.screening.records import Pixels
from appliance.screening.settings import ScreeningSettings

SHAPE = (8, 8)
# Quantisation (0.25 degC step -> 0.072 sd) combined with the datasheet NETD (0.16 degC at
# 10 fps): the floor for the noise estimate, so a quiet start cannot make every flicker a blob.
NOISE_FLOOR_C = 0.175
_MAD_TO_SD = 1.2533  # E|x| = sd * sqrt(2/pi) for a normal distribution
_CLIP_SD = 4.0


class Background:
    def __init__(self, settings: ScreeningSettings) -> None:
        self._alpha = settings.background_alpha
        self._warm_margin_c = settings.contrast_c
        self.mean: Pixels = np.zeros(SHAPE)
        self.sigma: Pixels = np.full(SHAPE, NOISE_FLOOR_C)
        self.frames = 0  # frames learned since the last (re)start

    @property
    def ready(self) -> bool:
        return self.frames > 0

    @classmethod
    def from_arrays(cls, settings: ScreeningSettings, mean: Pixels, sigma: Pixels) -> Background:
        """Warm start from a saved model (the daemon may persist it across restarts)."""
        bg = cls(settings)
        bg.mean = np.array(mean, dtype=np.float64).reshape(SHAPE)
        bg.sigma = np.maximum(np.array(sigma, dtype=np.float64).reshape(SHAPE), NOISE_FLOOR_C)
        bg.frames = 1
        return bg

    def relearn(self, pixels: Pixels) -> None:
        """Start over from one frame, robustly: pixels well above the frame's lower quartile
        are probably a person already standing there (a person at the kiosk can cover half
        the image, so not the median), so they start at that level instead and are learned
        properly once the scene is empty."""
        px = np.asarray(pixels, dtype=np.float64)
        low = float(np.percentile(px, 25))
        self.mean = np.where(px > low + self._warm_margin_c, low, px)
        self.sigma = np.full(SHAPE, NOISE_FLOOR_C)
        self.frames = 1

    def adopt(self, pixels: Pixels) -> None:
        """Take the frame as it is for the new background (a scene that stopped changing)."""
        self.mean = np.array(pixels, dtype=np.float64).reshape(SHAPE)
        self.frames = max(self.frames, 1)

    def update(self, pixels: Pixels, exclude: npt.NDArray[np.bool_] | None = None) -> None:
        """Learn one frame, except on the ``exclude`` pixels (blobs, their rims)."""
        px = np.asarray(pixels, dtype=np.float64)
        if not self.ready:
            self.relearn(px)
            return
        # Running mean for the first frames (fast convergence after a start), then the slow EMA.
        alpha = max(self._alpha, 1.0 / (self.frames + 1))
        residual = np.clip(px - self.mean, -_CLIP_SD * self.sigma, _CLIP_SD * self.sigma)
        learn = np.ones(SHAPE, dtype=bool) if exclude is None else ~exclude
        self.mean = np.where(learn, self.mean + alpha * residual, self.mean)
        mad = np.abs(residual) * _MAD_TO_SD
        sigma = self.sigma + alpha * (mad - self.sigma)
        self.sigma = np.where(learn, np.maximum(sigma, NOISE_FLOOR_C), self.sigma)
        self.frames += 1
