"""Run the screening machine over recorded frames as fast as it will go.

Backs ``appliance replay FILE --json``: the CLI reads the recording, this yields one result per
screened person. The settings are used as given: a recording that begins with the sensor
cold must keep the warm-up lockout; one made from a warm sensor may pass settings with
``sensor_warmup_s=0, system_warmup_s=0`` (the background still learns its first frames).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from appliance.screening.machine import ScreeningMachine
from appliance.screening.records import FrameInput, ScreeningResult
from appliance.screening.settings import ScreeningSettings

# (t, thermistor_c, pixels) or (t, thermistor_c, pixels, fault), or a FrameInput.
FrameLike = FrameInput | Sequence[Any]


def replay(
    frames: Iterable[FrameLike], settings: ScreeningSettings | None = None
) -> Iterator[ScreeningResult]:
    machine = ScreeningMachine(settings or ScreeningSettings())
    for item in frames:
        frame = item if isinstance(item, FrameInput) else FrameInput.of(*item)
        step = machine.feed(frame)
        if step.result is not None:
            yield step.result
