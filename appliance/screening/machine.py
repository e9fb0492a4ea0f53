"""The screening state machine, fed one frame at a time.

    warming-up --> idle <--> approaching / too-far / too-close / multiple
                     ^            |
                     |            v
                     |       hold-still --> measuring --> result --(person leaves)--> idle
                     |            ^             |
                     |            +--(moved)----+
    any state --(fault flag or impossible frame)--> fault --(clean frame)--> warming-up

Timing at 10 fps: a person who stops in range is still after ``still_frames`` (0.2 s), the
window takes ``window_s`` (0.8 s): about 1.0 s from stopping to the result.

A session is one person's visit: it starts when someone appears and ends when the scene has
been empty for ``leave_s``. It produces at most one result. Windows that fail (unstable,
implausible) are re-measured silently up to ``max_attempts`` before a "retry" is shown;
moving during a window only restarts it. After a result, the result is held for
``result_hold_s`` and nobody is screened again until the scene has emptied, so a person
standing on cannot collect a second answer.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from appliance.screening.background import Background
from appliance.screening.blobs import Blob, Scene, find_blobs
from appliance.screening.decision import decide
from appliance.screening.distance import Distance
from appliance.screening.estimator import FrameMeasure, estimate_window, measure
from appliance.screening.records import (
    FrameInput,
    Pixels,
    ScreeningResult,
    ScreeningState,
    StateName,
    Step,
)
from appliance.screening.settings import ScreeningSettings

# A scene whose blobs change less than this (degC, any pixel) since it last changed counts as
# static for the absorb timer. A person's sway moves a face edge pixel by more than this.
_STATIC_TOLERANCE_C = 1.0
_EIGHT = np.ones((3, 3), dtype=bool)

_PROMPTS: dict[StateName, str] = {
    "warming-up": "warming_up",
    "idle": "step_up",
    "approaching": "center_face",
    "too-far": "come_closer",
    "too-close": "step_back",
    "multiple": "one_at_a_time",
    "hold-still": "hold_still",
    "measuring": "measuring",
    "result": "move_on",
    "fault": "out_of_order",
}


class ScreeningMachine:
    def __init__(self, settings: ScreeningSettings, background: Background | None = None) -> None:
        self.settings = settings
        self.background = background if background is not None else Background(settings)
        self._last_t: float | None = None
        self._last_step: Step | None = None
        self._warm_from = 0.0
        self._ready_t = math.inf
        self._faulted = False
        # The current visit.
        self._session_t: float | None = None
        self._attempts = 0
        self._window: list[FrameMeasure] = []
        self._still = 0
        self._prev_centroid: tuple[float, float] | None = None
        self._in_range = False
        # The last result, shown until hold ends, and the re-arm condition.
        self._shown: ScreeningResult | None = None
        self._hold_until = -math.inf
        self._await_leave = False
        self._empty_since: float | None = None
        # Absorbing a scene that stopped changing.
        self._static_ref: Pixels | None = None
        self._static_since = 0.0

    @property
    def measuring(self) -> bool:
        return bool(self._window)

    def feed(self, frame: FrameInput) -> Step:
        t = frame.t
        if not math.isfinite(t) or (self._last_t is not None and t <= self._last_t):
            # Time must move forward; a repeated or reordered frame says nothing new.
            return self._last_step or self._state(t if math.isfinite(t) else 0.0, "warming-up")
        if self._last_t is None:
            self._warm_from = t
            self._ready_t = t + max(self.settings.sensor_warmup_s, self.settings.system_warmup_s)
        self._last_t = t
        step = self._feed(frame, t)
        self._last_step = step
        return step

    # -- the steps -------------------------------------------------------------------------

    def _feed(self, frame: FrameInput, t: float) -> Step:
        s = self.settings
        px = np.asarray(frame.pixels, dtype=np.float64)
        if self._is_fault(frame, px):
            return self._fault(t)
        if self._faulted:
            # The driver re-initialises the sensor on a fault; the datasheet's settling applies.
            self._faulted = False
            self._warm_from = t
            self._ready_t = max(self._ready_t, t + s.sensor_warmup_s)

        if t < self._ready_t or self.background.frames < s.background_min_frames:
            self._learn(px)
            return self._state(t, "warming-up", progress=self._warm_progress(t))

        scene = find_blobs(px, self.background.mean, self.background.sigma, s)
        if self._absorb(px, scene, t):
            return self._state(t, "idle")
        if scene.empty:
            return self._empty(px, scene, t)
        self._empty_since = None
        if t < self._hold_until or self._await_leave:
            return self._showing(t)
        if self._session_t is None:
            self._session_t, self._attempts = t, 0
        if scene.multiple:
            self._restart()
            return self._state(t, "multiple")
        person = scene.person
        assert person is not None
        m = measure(frame, person, s)
        where = self._where(person, m.distance)
        if where is not None:
            self._restart()
            return self._state(t, where)
        return self._in_range_step(m, t)

    def _in_range_step(self, m: FrameMeasure, t: float) -> Step:
        s = self.settings
        prev, self._prev_centroid = self._prev_centroid, m.centroid
        motion = math.inf if prev is None else math.dist(prev, m.centroid)
        if not self._window:
            self._still = self._still + 1 if motion <= s.still_motion_px else 0
            if self._still < s.still_frames:
                return self._state(t, "hold-still")
            self._window = [m]
            return self._state(t, "measuring", progress=0.0)

        self._window.append(m)
        if math.dist(self._window[0].centroid, m.centroid) > s.max_drift_px:
            # Moving restarts the window; the prompt asks again, no attempt is spent.
            self._restart(keep_centroid=True)
            return self._state(t, "hold-still")
        elapsed = t - self._window[0].t
        if elapsed < s.window_s - 1e-6:
            return self._state(t, "measuring", progress=min(1.0, elapsed / s.window_s))

        window = estimate_window(self._window, s)
        decision = decide(window, s)
        self._restart(keep_centroid=True)
        if decision.result == "retry":
            self._attempts += 1
            if self._attempts < s.max_attempts:
                return self._state(t, "hold-still")
        ok = decision.result != "retry"
        result = ScreeningResult(
            start_t=self._session_t if self._session_t is not None else t,
            end_t=t,
            result=decision.result,
            estimate_c=window.estimate_c if ok else None,
            confidence=window.confidence_total,
            distance_m=None if window.distance is None else window.distance.metres,
            ambient_c=window.ambient_c,
            reason=decision.reason,
        )
        return self._show(result, t)

    def _empty(self, px: Pixels, scene: Scene, t: float) -> Step:
        s = self.settings
        # Learn the empty scene, but not under (or right around) a cup or a lamp.
        self.background.update(px, exclude=ndimage.binary_dilation(scene.foreground, structure=_EIGHT))
        self._restart()
        if self._empty_since is None:
            self._empty_since = t
        if t - self._empty_since >= s.leave_s:
            self._session_t = None
            self._attempts = 0
            self._await_leave = False
        if t < self._hold_until:
            return self._showing(t)
        return self._state(t, "idle")

    def _fault(self, t: float) -> Step:
        result = None
        if self._session_t is not None and (self._window or self._attempts) and not self._await_leave:
            result = ScreeningResult(
                start_t=self._session_t, end_t=t, result="retry", estimate_c=None, confidence=0.0,
                distance_m=None, ambient_c=None, reason="sensor_fault",
            )  # fmt: skip
        self._faulted = True
        self._restart()
        self._session_t, self._attempts = None, 0
        self._shown, self._hold_until, self._await_leave = None, -math.inf, False
        self._empty_since = None
        return Step(self._state(t, "fault").state, result)

    # -- helpers ---------------------------------------------------------------------------

    def _is_fault(self, frame: FrameInput, px: Pixels) -> bool:
        s = self.settings
        if frame.fault or px.shape != (8, 8) or not math.isfinite(frame.thermistor_c):
            return True
        if not np.all(np.isfinite(px)):
            return True
        return bool(px.min() < s.pixel_min_c or px.max() > s.pixel_max_c)

    def _learn(self, px: Pixels) -> None:
        if not self.background.ready:
            self.background.relearn(px)
            return
        scene = find_blobs(px, self.background.mean, self.background.sigma, self.settings)
        self.background.update(px, exclude=ndimage.binary_dilation(scene.foreground, structure=_EIGHT))

    def _warm_progress(self, t: float) -> float:
        span = self._ready_t - self._warm_from
        by_time = 1.0 if span <= 0 else (t - self._warm_from) / span
        by_frames = self.background.frames / self.settings.background_min_frames
        return float(min(1.0, max(0.0, by_time), by_frames))

    def _where(self, person: Blob, distance: Distance) -> StateName | None:
        """Where the person is relative to the distance window; None when in it."""
        s = self.settings
        where: StateName | None
        if len(person.hot_c) < s.hot_pixels:
            where = "too-far"
        elif person.peak_c < s.skin_ref_c and distance.metres >= s.distance_min_m:
            # No pixel reads as warm as fully covered skin: the face fills no pixel, so what
            # looks widest is probably the torso. The likely cure is to come closer.
            where = "too-far"
        elif person.clipped:
            # Part of the face is off the image: its width, hence its distance, is a bound.
            where = "too-close" if distance.metres < s.distance_min_m else "approaching"
        else:
            widen = s.distance_hysteresis_m if self._in_range else 0.0
            if distance.metres > s.distance_max_m + widen:
                where = "too-far"
            elif distance.metres < s.distance_min_m - widen:
                where = "too-close"
            else:
                where = None
        self._in_range = where is None
        return where

    def _absorb(self, px: Pixels, scene: Scene, t: float) -> bool:
        """Learn a scene that has not changed for ``absorb_after_s`` as the new background."""
        if not scene.foreground.any() or self._window:
            self._static_ref = None
            return False
        if (
            self._static_ref is None
            or np.max(np.abs(px - self._static_ref)[scene.foreground]) > _STATIC_TOLERANCE_C
        ):
            self._static_ref, self._static_since = px, t
            return False
        if t - self._static_since < self.settings.absorb_after_s:
            return False
        self.background.adopt(px)
        self._static_ref = None
        self._restart()
        self._session_t, self._attempts, self._await_leave = None, 0, False
        return True

    def _restart(self, keep_centroid: bool = False) -> None:
        self._window = []
        self._still = 0
        if not keep_centroid:
            self._prev_centroid = None
            self._in_range = False

    def _show(self, result: ScreeningResult, t: float) -> Step:
        self._shown = result
        self._hold_until = t + self.settings.result_hold_s
        self._await_leave = True
        return Step(self._showing(t).state, result)

    def _showing(self, t: float) -> Step:
        shown = self._shown
        if shown is None:
            return self._state(t, "result")
        prompt = f"result_{shown.result}" if t < self._hold_until else _PROMPTS["result"]
        state = ScreeningState(
            t=t, state="result", prompt=prompt, progress=1.0, estimate_c=shown.estimate_c,
            confidence=shown.confidence, result=shown.result,
        )  # fmt: skip
        return Step(state)

    def _state(self, t: float, name: StateName, progress: float = 0.0) -> Step:
        return Step(ScreeningState(t=t, state=name, prompt=_PROMPTS[name], progress=progress))
