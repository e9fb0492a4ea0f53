"""The screening state machine, fed one frame at a time.

    warming-up --> idle <--> approaching / too-far / too-close / multiple
                     ^            |
                     |            v
                     |       hold-still --> measuring --> result --(person leaves)--> idle
                     |            ^             |
                     |            +--(moved)----+
    any state --(fault flag, impossible or repeated frame, missing frames)--> fault
    fault --(clean frame)--> warming-up (fault_settle_s) --> idle

Timing at 10 fps: a person who stops in range is still after ``still_frames`` (0.2 s), the
window takes ``window_s`` (0.8 s): about 1.0 s from stopping to the result.

A session is one person's visit: it starts when someone appears and ends when the scene has
been empty for ``leave_s``. It produces at most one result. Windows that fail (unstable,
implausible) are re-measured silently up to ``max_attempts`` before a "retry" is shown;
moving during a window only restarts it. After a result, the result is held for
``result_hold_s`` and nobody is screened again until the scene has emptied, so a person
standing on cannot collect a second answer. Someone else can: once the pixel where the
answered face was has been background for ``leave_s`` while someone is still in view (the
answered person walked off, the one who waited beside them stays), a new visit starts without
the scene having to empty. (Someone who steps aside by a face's width and stays is a new visit
too: no worse than walking off and coming back.)

Sensor faults reach the core three ways: the fault flag (the daemon's failed read), frames
that repeat bit for bit (a hung sensor: real frames always differ by their noise) and frames
missing for longer than ``max_frame_gap_s`` while someone is being screened (the driver refused
them; a recording simply has a gap there). A fault in the middle of a visit ends it with a
"retry" if anything was being measured, and that person is not measured again until they
leave: one visit, one answer.

``warm_start=True`` says the first frame comes from a sensor that has been running (a
recording cut from a kiosk in service, a daemon restart): the time lockouts then apply only
after faults, and the background still has to learn ``background_min_frames`` frames.
"""

from __future__ import annotations

import math

import numpy as np

from appliance.screening import grid
from appliance.screening.background import Background
from appliance.screening.blobs import Blob, Mask, Scene, find_blobs
from appliance.screening.decision import decide
from appliance.screening.distance import Distance
from appliance.screening.estimator import (
    FrameMeasure,
    WindowEstimate,
    estimate_window,
    measure,
    model_estimate,
)
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


def _around(mask: Mask) -> Mask:
    """The mask and its 8 neighbours (nothing to do for the usual empty mask)."""
    return grid.to_mask(grid.dilate8(grid.to_bits(mask))) if mask.any() else mask


class ScreeningMachine:
    def __init__(
        self, settings: ScreeningSettings, background: Background | None = None, *, warm_start: bool = False
    ) -> None:
        self.settings = settings
        self.background = background if background is not None else Background(settings)
        self.warm_start = warm_start
        self._last_t: float | None = None
        self._last_step: Step | None = None
        self._last_px: Pixels | None = None
        self._last_gap = math.inf
        # The window behind the last result (or failed attempt): for fitting and diagnostics.
        self.last_window: WindowEstimate | None = None
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
        # The last result, shown until hold ends, and the re-arm condition: where the screened
        # person stood (None: anywhere counts) and since when nobody has stood there.
        self._shown: ScreeningResult | None = None
        self._hold_until = -math.inf
        self._await_leave = False
        self._screened_at: tuple[float, float] | None = None
        self._gone_since: float | None = None
        self._empty_since: float | None = None
        # Where objects (a cup, a lamp) stood in the empty scene, and around them: nobody is
        # measured there while they stand in front of them.
        self._avoid: Mask | None = None
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
        gap = math.inf if self._last_t is None else t - self._last_t
        if self._last_t is None:
            self._warm_from = t
            warmup = max(self.settings.sensor_warmup_s, self.settings.system_warmup_s)
            self._ready_t = t if self.warm_start else t + warmup
        self._last_t = t
        step = self._feed(frame, t, gap)
        self._last_step = step
        return step

    def frames_withheld(self) -> None:
        """The frames since the last one fed went elsewhere on purpose (a calibration took them),
        or were never made on purpose (the sampler slowed to its idle rate).

        The hole before the next frame is then no sensor that stopped (no fault, no "retry"),
        but no window may span it either: measuring starts again from the next frame.
        """
        self._restart()
        self._last_gap = math.inf
        self._last_px = None

    # -- the steps -------------------------------------------------------------------------

    def _feed(self, frame: FrameInput, t: float, gap: float) -> Step:
        s = self.settings
        px = np.asarray(frame.pixels, dtype=np.float64)
        previous, self._last_px = self._last_px, px
        previous_gap, self._last_gap = self._last_gap, gap
        if self._is_fault(frame, px):
            return self._fault(t)
        if self._screening():
            # Only while someone is screened: the sensor then runs at 10 fps, and an idle sensor
            # at 1 fps averages its noise so far down that two frames can match by chance.
            if previous is not None and np.array_equal(previous, px):
                return self._fault(t)
            if gap > s.max_frame_gap_s and previous_gap <= s.max_frame_gap_s:
                # A gap after frames at the active rate: reads failed in between. (A first
                # frame after the idle rate comes late too, before anyone is measured.)
                return self._fault(t)
        if self._faulted:
            # The driver re-initialised the sensor: its first frames and the background need a
            # moment. Not the 15 s power-on settling: a re-init does not cool the die.
            self._faulted = False
            self._warm_from = t
            self._ready_t = max(self._ready_t, t + s.fault_settle_s)

        if t < self._ready_t or self.background.frames < s.background_min_frames:
            self._learn(px, frame)
            return self._state(t, "warming-up", progress=self._warm_progress(t))

        scene = find_blobs(
            px, self.background.mean, self.background.sigma, s, room_c=self._room(frame), avoid=self._avoid
        )
        if self._absorb(px, scene, t):
            return self._state(t, "idle")
        if scene.empty:
            return self._empty(px, scene, t)
        self._empty_since = None
        if self._await_leave and self._replaced(scene, t):
            # The next person need not wait for the last one's result to time out.
            self._new_visit()
            self._hold_until = -math.inf
        if self._await_leave or t < self._hold_until:
            return self._showing(t)
        if self._session_t is None:
            self._session_t, self._attempts = t, 0
        if scene.multiple:
            self._restart()
            return self._state(t, "multiple")
        person = scene.person
        assert person is not None
        m = measure(frame, person, s)
        where = self._where(person, m.distance, frame.thermistor_c)
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
        self.last_window = window
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
        return self._show(result, t, at=m.centroid)

    def _empty(self, px: Pixels, scene: Scene, t: float) -> Step:
        s = self.settings
        self._learn_scene(px, scene)
        self._restart()
        if self._empty_since is None:
            self._empty_since = t
        if t - self._empty_since >= s.leave_s:
            self._new_visit()
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
        # The person who got the retry is not measured again on this visit; whoever was
        # already answered stays answered. Either way the fault screen replaces the result.
        leave = result is not None or self._await_leave
        where = self._screened_at if self._await_leave else self._prev_centroid
        self._restart()
        self._new_visit()
        self._shown, self._hold_until, self._empty_since = None, -math.inf, None
        if leave:
            self._await_leave, self._screened_at = True, where
        return Step(self._state(t, "fault").state, result)

    # -- helpers ---------------------------------------------------------------------------

    def _screening(self) -> bool:
        """Someone is being screened: from the first frame of a visit to its answer."""
        return self._session_t is not None and not self._await_leave

    def _replaced(self, scene: Scene, t: float) -> bool:
        """The answered person has gone and someone else is in view (the second of two who came
        together): after ``leave_s`` with the pixel where the answered face was not foreground.
        (Two people side by side often make one blob, whose centroid is nobody's.)"""
        if self._screened_at is None:
            return False
        r, c = (min(max(round(v), 0), 7) for v in self._screened_at)
        if scene.foreground[r, c]:
            self._gone_since = None
            return False
        if self._gone_since is None:
            self._gone_since = t
        return t - self._gone_since >= self.settings.leave_s

    def _new_visit(self) -> None:
        self._session_t, self._attempts = None, 0
        self._await_leave, self._screened_at, self._gone_since = False, None, None

    def _is_fault(self, frame: FrameInput, px: Pixels) -> bool:
        s = self.settings
        if frame.fault or px.shape != (8, 8) or not math.isfinite(frame.thermistor_c):
            return True
        if not np.all(np.isfinite(px)):
            return True
        return bool(px.min() < s.pixel_min_c or px.max() > s.pixel_max_c)

    def _room(self, frame: FrameInput) -> float:
        return frame.thermistor_c - self.settings.thermistor_rise_c

    def _learn(self, px: Pixels, frame: FrameInput) -> None:
        if not self.background.ready:
            self.background.relearn(px)
            return
        scene = find_blobs(
            px, self.background.mean, self.background.sigma, self.settings, room_c=self._room(frame)
        )
        self._learn_scene(px, scene)

    def _learn_scene(self, px: Pixels, scene: Scene) -> None:
        """Learn an empty scene, but not under (or right around) a cup or a lamp, and remember
        where those stand."""
        self.background.update(px, exclude=_around(scene.foreground))
        if not scene.foreground.any():
            self._avoid = None  # nothing in view: whatever stood there has gone
        elif scene.object_mask.any():
            # Kept while anything is in view: someone walking up may hide a cup, not remove it.
            spot = _around(scene.object_mask)
            self._avoid = spot if self._avoid is None else self._avoid | spot

    def _warm_progress(self, t: float) -> float:
        span = self._ready_t - self._warm_from
        by_time = 1.0 if span <= 0 else (t - self._warm_from) / span
        by_frames = self.background.frames / self.settings.background_min_frames
        return float(min(1.0, max(0.0, by_time), by_frames))

    def _too_cool(self, person: Blob, distance: Distance, thermistor_c: float) -> bool:
        """Would the warmest pixel, read as a face at this distance, be an implausibly cold body?"""
        peak = float(person.contrast[person.peak_at])
        s = self.settings
        return model_estimate(peak, thermistor_c, distance.metres, s) < s.min_plausible_c

    def _where(self, person: Blob, distance: Distance, thermistor_c: float) -> StateName | None:
        """Where the person is relative to the distance window; None when in it."""
        s = self.settings
        where: StateName | None
        if len(person.hot_c) < s.hot_pixels:
            where = "too-far"
        elif self._too_cool(person, distance, thermistor_c) and distance.metres >= s.distance_min_m:
            # Even read as a face at the distance it seems to be, the warmest pixel would be an
            # implausibly cold body: it is not a face filling a pixel (the torso of someone
            # farther away, a warm spot smaller than a pixel). The likely cure: come closer.
            where = "too-far"
        elif person.clipped and distance.metres > s.model_full_cover_m:
            # Part of the face is off the image: its width is a lower bound, its distance an
            # upper bound. Too far a bound says nothing; one inside the full-cover zone says
            # the face is near enough to fill whole pixels, and is measured where it is.
            where = "approaching"
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
        self._new_visit()
        return True

    def _restart(self, keep_centroid: bool = False) -> None:
        self._window = []
        self._still = 0
        if not keep_centroid:
            self._prev_centroid = None
            self._in_range = False

    def _show(self, result: ScreeningResult, t: float, at: tuple[float, float]) -> Step:
        self._shown = result
        self._hold_until = t + self.settings.result_hold_s
        self._await_leave, self._screened_at, self._gone_since = True, at, None
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
