"""The site calibration on disk: the current offset and every earlier one.

<state_dir>/calibration.json, written atomically (a power cut leaves the old file or the new):

    {"version": 1,
     "current": {"offset_c": -0.42, "reference_c": 36.8, "measured_c": 37.22, "frames": 50,
                 "spread_c": 0.08, "source": "bus" | "cli" | "recording:<file>", "wall_ts": 1.7e9},
     "history": [ ...earlier "current" entries, oldest first, at most HISTORY_LIMIT... ]}

A missing file means "never calibrated" (offset 0). A file that cannot be read is an error:
a kiosk must not silently forget its calibration and screen with the wrong offset.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.atomic import atomic_write
from appliance.errors import ConfigError

FILENAME = "calibration.json"
HISTORY_LIMIT = 100
# A larger correction means a broken sensor or a wrong reference, not a site offset.
MAX_OFFSET_C = 5.0


@dataclass(frozen=True, slots=True)
class CalibrationRecord:
    offset_c: float
    reference_c: float
    measured_c: float
    frames: int
    spread_c: float
    source: str
    wall_ts: float


def path_in(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / FILENAME


def _record(data: Any, where: str) -> CalibrationRecord:
    try:
        rec = CalibrationRecord(
            offset_c=float(data["offset_c"]),
            reference_c=float(data["reference_c"]),
            measured_c=float(data["measured_c"]),
            frames=int(data["frames"]),
            spread_c=float(data.get("spread_c", 0.0)),
            source=str(data.get("source", "")),
            wall_ts=float(data.get("wall_ts", 0.0)),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(where, "current", f"not a calibration record: {exc}") from None
    # json reads NaN and Infinity; a NaN offset passes the bound below and makes every estimate NaN.
    for name in ("offset_c", "reference_c", "measured_c", "spread_c", "wall_ts"):
        if not math.isfinite(getattr(rec, name)):
            raise ConfigError(where, f"current.{name}", f"not a finite number: {getattr(rec, name)}")
    if abs(rec.offset_c) > MAX_OFFSET_C:
        raise ConfigError(where, "current.offset_c", f"|{rec.offset_c}| exceeds {MAX_OFFSET_C} degC")
    return rec


def load(state_dir: str | os.PathLike[str]) -> tuple[CalibrationRecord | None, list[CalibrationRecord]]:
    """(current, history); (None, []) when the site was never calibrated."""
    file = path_in(state_dir)
    try:
        raw = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, []
    except OSError as exc:
        raise ConfigError(str(file), "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), "", "not UTF-8 text") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(file), "", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(str(file), "", "not valid JSON: nested too deeply") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ConfigError(str(file), "version", "expected a version 1 calibration file")
    current = None if data.get("current") is None else _record(data["current"], str(file))
    history_data = data.get("history", [])
    if not isinstance(history_data, list):
        raise ConfigError(str(file), "history", f"expected a list, not {type(history_data).__name__}")
    history = [_record(h, str(file)) for h in history_data]
    return current, history


def offset(state_dir: str | os.PathLike[str]) -> float:
    current, _ = load(state_dir)
    return 0.0 if current is None else current.offset_c


def save(
    state_dir: str | os.PathLike[str],
    *,
    offset_c: float,
    reference_c: float,
    measured_c: float,
    frames: int,
    spread_c: float,
    source: str,
    wall_ts: float | None = None,
) -> CalibrationRecord:
    """Make this the current calibration; the previous one moves to the history."""
    if not all(map(math.isfinite, (offset_c, reference_c, measured_c, spread_c))):
        raise ValueError(
            f"calibration values must be finite numbers (offset {offset_c}, reference {reference_c}, "
            f"measured {measured_c}, spread {spread_c})"
        )
    if abs(offset_c) > MAX_OFFSET_C:
        raise ValueError(
            f"calibration offset {offset_c:+.2f} degC exceeds +-{MAX_OFFSET_C}: "
            "check the reference and that the target filled the distance window"
        )
    current, history = load(state_dir)
    if current is not None:
        history.append(current)
    history = history[-HISTORY_LIMIT:]
    rec = CalibrationRecord(
        offset_c=round(offset_c, 3),
        reference_c=reference_c,
        measured_c=round(measured_c, 3),
        frames=frames,
        spread_c=round(spread_c, 3),
        source=source,
        wall_ts=time.time() if wall_ts is None else wall_ts,
    )
    doc = {"version": 1, "current": asdict(rec), "history": [asdict(h) for h in history]}
    atomic_write(path_in(state_dir), json.dumps(doc, indent=1) + "\n", mode=0o644)
    return rec
