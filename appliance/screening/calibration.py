"""Site calibration from a sequence of frames: an empty scene, then the reference target. Pure.

The procedure a technician follows (and `appliance calibrate --recording` replays): record the
kiosk with nobody in front for a few seconds, then the reference person (core temperature just
taken with a clinical thermometer) steps up to the nominal distance and holds still for a few
seconds. A black body on a stand works the same way with ``target="surface"``.

The background is learned by the screening machine itself from the empty frames, exactly as in
service, and then frozen: a per-frame median would sit on the person once they cover half the
image, and a background that keeps learning would slowly absorb them. Of the frames that follow,
the calibration uses the longest run in which one target stands in the distance window without
moving (the walk up and the walk away are left out), at most ``max_frames`` from its middle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Literal

from appliance.screening.blobs import find_blobs
from appliance.screening.distance import estimate_distance
from appliance.screening.estimator import Calibration, calibration_offset
from appliance.screening.machine import ScreeningMachine
from appliance.screening.records import FrameInput
from appliance.screening.settings import ScreeningSettings

Target = Literal["body", "surface"]
_EMPTY_STATES = ("warming-up", "idle")


def calibrate_frames(
    frames: Iterable[FrameInput],
    reference_c: float,
    settings: ScreeningSettings,
    *,
    target: Target = "body",
    max_frames: int = 50,
) -> Calibration:
    """The offset that makes the kiosk read ``reference_c`` for the target in ``frames``.

    ``settings.calibration_offset_c`` is ignored: the result replaces it. Raises ValueError
    (with what was missing) when the frames hold no empty scene or no steady target.
    """
    s = dataclasses.replace(settings, calibration_offset_c=0.0)
    machine = ScreeningMachine(s, warm_start=True)
    learning = True
    runs: list[list[FrameInput]] = [[]]
    anchor: tuple[float, float] | None = None
    for frame in frames:
        if learning:
            learned = machine.background.frames
            state = machine.feed(frame).state.state
            if state == "warming-up" and learned >= 1:
                # Still learning: nobody may be in front yet, or the background is half them.
                room = frame.thermistor_c - s.thermistor_rise_c
                bg = machine.background
                if find_blobs(frame.pixels, bg.mean, bg.sigma, s, room_c=room).people:
                    raise ValueError(
                        f"the target arrived after {learned} empty frames; record at least "
                        f"{s.background_min_frames} frames ({s.background_min_frames / 10:.0f} s) of the "
                        "empty scene first"
                    )
            if state in _EMPTY_STATES:
                continue
            learning = False
        room = frame.thermistor_c - s.thermistor_rise_c
        scene = find_blobs(frame.pixels, machine.background.mean, machine.background.sigma, s, room_c=room)
        candidates = scene.people + (scene.objects if target == "surface" else ())
        steady = False
        if len(candidates) == 1 and not frame.fault:
            blob = candidates[0]
            d = estimate_distance(blob.width_px, s, noise_c=blob.noise_c, contrast_c=blob.contrast_c)
            in_range = s.distance_min_m <= d.metres <= s.distance_max_m and not blob.clipped
            if in_range and (anchor is None or math.dist(anchor, blob.centroid) <= s.max_drift_px):
                steady = True
                anchor = anchor or blob.centroid
        if steady:
            runs[-1].append(frame)
        else:
            anchor = None
            if runs[-1]:
                runs.append([])
    if learning:
        raise ValueError("no target ever appeared in front of the sensor")
    best = max(runs, key=len)
    if len(best) < s.min_frames:
        raise ValueError(
            f"the target never held still in the distance window {s.distance_min_m}-{s.distance_max_m} m "
            f"for {s.min_frames} frames (longest: {len(best)})"
        )
    skip = max(0, (len(best) - max_frames) // 2)
    chosen = best[skip : skip + max_frames]
    return calibration_offset(
        chosen,
        reference_c,
        s,
        background=machine.background.mean,
        noise=machine.background.sigma,
        reference=target,
    )
