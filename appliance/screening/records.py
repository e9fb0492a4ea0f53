"""The records the screening core takes in and gives out.

``FrameInput`` comes from the `thermal.frame` topic (64 numbers, not a raw frame); ``ScreeningState`` and
``ScreeningResult`` map onto the bus topics ``screening.state`` (state: latest wins, retained) and
``screening.result`` (an event, written to SQLite with a seq before it is published).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
import numpy.typing as npt

from appliance.bus.topics import ResultName, ScreeningStateName

# The names are the bus contract's, so the core and `screening.state` can never disagree.
StateName = ScreeningStateName
Pixels = npt.NDArray[np.float64]

STATES: tuple[StateName, ...] = get_args(StateName)


@dataclass(frozen=True, slots=True)
class FrameInput:
    """One sensor frame. Time comes in with the frame: the core never reads a clock."""

    t: float  # seconds, monotonic
    pixels: Pixels  # 8x8 degC, row 0 = top of the image
    thermistor_c: float  # the sensor's own thermistor, our ambient proxy
    fault: bool = False  # the driver flags a failed read, a reset, an implausible frame

    @classmethod
    def of(cls, t: float, thermistor_c: float, pixels: Any, fault: bool = False) -> FrameInput:
        return cls(float(t), np.asarray(pixels, dtype=np.float64), float(thermistor_c), bool(fault))


@dataclass(frozen=True, slots=True)
class ScreeningResult:
    start_t: float  # first frame of the person's session
    end_t: float  # frame on which the result was decided
    result: ResultName
    estimate_c: float | None  # None on retry: a rejected window's number is not a measurement
    confidence: float  # 0..1, a quality score (not a probability)
    distance_m: float | None
    ambient_c: float | None
    reason: str | None = None  # why a retry: "moved", "unstable", "sensor_fault", ...

    def as_dict(self) -> dict[str, Any]:
        """The shape ``appliance replay --json`` prints and ``screening.result`` carries."""
        return {
            "start": round(self.start_t, 3),
            "end": round(self.end_t, 3),
            "result": self.result,
            "estimate_c": None if self.estimate_c is None else round(self.estimate_c, 2),
            "confidence": round(self.confidence, 3),
            "distance_m": None if self.distance_m is None else round(self.distance_m, 3),
            "ambient_c": None if self.ambient_c is None else round(self.ambient_c, 2),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ScreeningState:
    t: float
    state: StateName
    prompt: str  # a key the screens translate ("hold_still", "come_closer", ...)
    progress: float = 0.0  # 0..1 while warming up or measuring
    estimate_c: float | None = None  # only while showing a result
    confidence: float | None = None
    result: ResultName | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """What one fed frame produced: always a state, a result on the frame that decided one."""

    state: ScreeningState
    result: ScreeningResult | None = None
