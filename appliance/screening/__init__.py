"""The screening core: pure functions and classes, no I/O, no clock, no asyncio.

Frames go in with their own time; states and results come out. The daemon around this
package reads the sensor, publishes ``screening.state`` / ``screening.result`` and stores
results; the bench and ``appliance replay`` drive the same machine from recordings.
"""

from appliance.screening.background import Background
from appliance.screening.decision import Decision, ThresholdTrigger, decide
from appliance.screening.estimator import Calibration, WindowEstimate, calibration_offset, estimate_window
from appliance.screening.interpolate import upsample, upsample_griddata
from appliance.screening.machine import ScreeningMachine
from appliance.screening.records import FrameInput, ScreeningResult, ScreeningState, Step
from appliance.screening.replay import replay
from appliance.screening.settings import ScreeningSettings
from appliance.screening.units import format_temperature, to_unit

__all__ = [
    "Background",
    "Calibration",
    "Decision",
    "FrameInput",
    "ScreeningMachine",
    "ScreeningResult",
    "ScreeningSettings",
    "ScreeningState",
    "Step",
    "ThresholdTrigger",
    "WindowEstimate",
    "calibration_offset",
    "decide",
    "estimate_window",
    "format_temperature",
    "replay",
    "to_unit",
    "upsample",
    "upsample_griddata",
]
