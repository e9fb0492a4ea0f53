"""Run the screening machine over recorded frames as fast as it will go.

Backs ``appliance replay FILE --json`` (replay_cli.py) and the tests: this yields one result per
screened person. ``warm_start=True`` says the recording was made from a sensor already running
(what `appliance replay` assumes, see replay_cli.py): the power-on and enclosure lockouts then
apply only after faults. Without it the recording is taken to begin at power-on and its first
``max(sensor_warmup_s, system_warmup_s)`` seconds give no result. Either way the background
learns its first frames.
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
    frames: Iterable[FrameLike], settings: ScreeningSettings | None = None, *, warm_start: bool = False
) -> Iterator[ScreeningResult]:
    machine = ScreeningMachine(settings or ScreeningSettings(), warm_start=warm_start)
    for item in frames:
        frame = item if isinstance(item, FrameInput) else FrameInput.of(*item)
        step = machine.feed(frame)
        if step.result is not None:
            yield step.result
