"""normal, elevated or retry: the one decision the kiosk exists for.

Rule one: a window that is faulty, too short, unstable, moved, out of range or implausible is
a retry, never "normal" -- a false "normal" is the costly error of a fever screen. Every check
is written so that NaN fails it.

Rule two: doubt goes to the thermometer. The estimator knows its typical error at the face's
distance (``uncertainty_c``: a few tenths of a degree where the face fills pixels, more beyond).
An estimate within ``refer_margin_sd`` of those errors below the threshold is "elevated" too:
the person may have a fever, and an elevated screen only asks for a clinical reading. An
estimate that is not that close but still within ``normal_margin_sd`` errors of the threshold
is a retry ("uncertain"), never "normal": far faces, whose errors are large, are asked to come
closer rather than waved through on a guess. ``threshold_c`` itself stays the site's policy.

Rule three: the threshold has hysteresis. The running estimate (one per frame as the window
fills) drives a Schmitt trigger that switches up after ``confirm_frames`` readings at or above
``threshold_c`` and back down only after as many below ``threshold_c - hysteresis_c``; noise
narrower than the band cannot flip it. The window is "elevated" if the trigger ends up, or if
the final estimate is at or above the threshold; so a borderline person who crossed the
threshold during the window is sent to a clinical thermometer rather than waved through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from appliance.screening.estimator import WindowEstimate
from appliance.screening.records import ResultName
from appliance.screening.settings import ScreeningSettings


@dataclass(frozen=True, slots=True)
class Decision:
    result: ResultName
    reason: str | None = None  # set on retry


class ThresholdTrigger:
    def __init__(self, threshold_c: float, hysteresis_c: float, confirm_frames: int = 1) -> None:
        self.threshold_c = threshold_c
        self.release_c = threshold_c - hysteresis_c
        self.confirm_frames = max(1, confirm_frames)
        self.elevated = False
        self._streak = 0

    def update(self, value: float) -> bool:
        """Feed one reading; returns whether the trigger is now elevated. NaN resets the streak."""
        crossing = value >= self.threshold_c if not self.elevated else value < self.release_c
        self._streak = self._streak + 1 if crossing else 0
        if self._streak >= self.confirm_frames:
            self.elevated = not self.elevated
            self._streak = 0
        return self.elevated


def rejection(window: WindowEstimate, settings: ScreeningSettings) -> str | None:
    """Why this window cannot give a result, or None if it can."""
    s = settings
    estimate = window.estimate_c
    if window.faults > 0:
        return "sensor_fault"
    if not window.frames >= s.min_frames:
        return "too_few_frames"
    if estimate is None or not math.isfinite(estimate) or not all(map(math.isfinite, window.running_c)):
        return "no_estimate"
    if window.ambient_c is None or not s.ambient_min_c <= window.ambient_c <= s.ambient_max_c:
        return "ambient_out_of_range"
    d = window.distance
    lo, hi = s.distance_min_m - s.distance_hysteresis_m, s.distance_max_m + s.distance_hysteresis_m
    if d is None or not (d.metres <= hi if d.clipped else lo <= d.metres <= hi):
        return "distance"
    if d.clipped and d.metres > s.model_full_cover_m:
        return "distance"  # only a bound, and not one that proves whole pixels of face
    if not (window.drift_px <= s.max_drift_px and window.width_change <= s.max_width_change):
        return "moved"
    if not window.std_c <= s.max_window_std_c:
        return "unstable"
    if not estimate <= s.max_plausible_c:
        return "implausible_high"
    if not estimate >= s.min_plausible_c:
        return "implausible_low"
    if not window.confidence_total >= s.min_confidence:
        return "low_confidence"
    return None


def decide(window: WindowEstimate, settings: ScreeningSettings) -> Decision:
    reason = rejection(window, settings)
    if reason is not None or window.estimate_c is None:
        return Decision("retry", reason or "no_estimate")
    trigger = ThresholdTrigger(settings.threshold_c, settings.hysteresis_c, settings.confirm_frames)
    for value in window.running_c:
        trigger.update(value)
    doubt = window.uncertainty_c
    if trigger.elevated or window.estimate_c >= settings.threshold_c - settings.refer_margin_sd * doubt:
        return Decision("elevated")
    if window.estimate_c < settings.threshold_c - settings.normal_margin_sd * doubt:
        return Decision("normal")
    return Decision("retry", "uncertain")
