"""The canonical JSONL recording line, and a writer of it, in plain Python (no numpy).

The format is recording.py's (one frame per line: {"t": ..., "thermistor": ..., "pixels": [8 rows of 8]}).
This module only writes it, without numpy, for `appliance thermal record` (record.py), which streams the
thermal daemon's frames to a file and has no use for numpy's ~12 MB of RSS (issue 8). recording.py's
RecordedFrame and RecordingWriter (numpy, for the screening side) format through the same functions, so
there is one definition of a line.

Pixels are held as float32, as the readers hold them: each value is rounded to float32 first (array('f')
does what numpy's cast did, a value beyond float32's range becomes inf and is refused), then to 4
decimals, which keep the sensor's 0.25 °C and 0.0625 °C steps exact while keeping lines short.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable
from typing import IO, Any

ROWS = 8
COLS = 8


def float32_pixels(pixels: Iterable[Any]) -> list[float]:
    """64 values (or 8 rows of 8) -> 64 floats rounded to float32, row-major. ValueError otherwise."""
    flat: list[float] = []
    for item in pixels:
        if hasattr(item, "__iter__"):
            flat.extend(float(v) for v in item)
        else:
            flat.append(float(item))
    if len(flat) != ROWS * COLS:
        raise ValueError(f"pixels must be 8x8 (64 values), got {len(flat)}")
    return array("f", flat).tolist()


def frame_json(t: float, thermistor: float, pixels: Iterable[Any]) -> str:
    """One recording line (without the newline). `pixels`: 64 values row-major, or 8 rows of 8."""
    values = float32_pixels(pixels)
    return json.dumps(
        {
            "t": round(t, 4),
            "thermistor": round(thermistor, 4),
            "pixels": [[round(v, 4) for v in values[r * COLS : (r + 1) * COLS]] for r in range(ROWS)],
        },
        separators=(",", ":"),
    )


class FrameWriter:
    """Appends frames to a JSONL stream, refusing what a reader would reject (non-finite numbers,
    a t that does not increase, other than 64 pixels): a refused frame raises ValueError and writes
    nothing."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._last_t: float | None = None

    def write(self, t: float, thermistor: float, pixels: Iterable[Any]) -> None:
        t, thermistor = float(t), float(thermistor)
        values = float32_pixels(pixels)
        if not (math.isfinite(t) and math.isfinite(thermistor) and all(math.isfinite(v) for v in values)):
            raise ValueError("recordings hold finite numbers only")
        if self._last_t is not None and t <= self._last_t:
            raise ValueError(f"t must increase: {t} after {self._last_t}")
        self._last_t = t
        self._stream.write(frame_json(t, thermistor, values) + "\n")

    def flush(self) -> None:
        self._stream.flush()
