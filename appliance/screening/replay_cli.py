"""`appliance replay FILE [--config FILE] [--state-dir DIR] [--json]`: a recording through the core.

The recording (JSONL or CSV, appliance/thermal/recording.py) runs through the same screening
machine the daemon uses, as fast as it goes: frame times come from the file, nothing sleeps.
With --json, one JSON object per screened person, as the results are decided:

    {"start": 12.3, "end": 13.4, "result": "normal", "estimate_c": 36.81, "confidence": 0.72,
     "distance_m": 0.45, "ambient_c": 22.1, "reason": null}

and a last line {"summary": {...}} (results per kind, frames, duration, calibration, settings).
Without --json, the same as a table. Exit 0 on success; 2 when the recording is malformed (the
message names the file and line; results before that line have been printed already), cannot
be read, or the config or calibration cannot be loaded.

Settings: the config's (--config, else $APPLIANCE_CONFIG, else /etc/appliance/appliance.toml
if it exists, else the defaults), mapped by configure.settings_for.

Calibration: --state-dir DIR uses DIR/calibration.json. Without it, the config's
paths.state_dir is used only when a config was named (--config or $APPLIANCE_CONFIG) or
$APPLIANCE_STATE_DIR is set: replaying on a workstation must not pick up whatever sits in
/var/lib/appliance by accident. Otherwise the offset is 0. The summary says which applied.

Warm-up: a recording is taken to come from a sensor that was already running (`appliance
thermal record` records from a kiosk in service, and most recordings are cut from longer
ones), so the power-on and enclosure lockouts (sensor_warmup_s, system_warmup_s) are not
applied at its start; they would only hide its first 30 s. They still apply after a fault in
the recording, and the background must still learn its first frames, so a recording should
open with a second or two of empty scene (someone standing there from the first frame is
handled: the background is started without them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from appliance.errors import ApplianceError, ConfigError, RecordingError
from appliance.screening.records import FrameInput, ScreeningResult
from appliance.screening.settings import ScreeningSettings
from appliance.screening.units import format_temperature

PROG = "appliance replay"


@dataclasses.dataclass(frozen=True)
class Calibration:
    offset_c: float
    source: str  # "none", or the calibration file it came from
    reference_c: float | None = None


def _state_dir(args: argparse.Namespace, config_state_dir: Path) -> Path | None:
    if args.state_dir is not None:
        return Path(args.state_dir)
    named = args.config is not None or "APPLIANCE_CONFIG" in os.environ
    if named or "APPLIANCE_STATE_DIR" in os.environ:
        return config_state_dir
    return None


def load_settings(args: argparse.Namespace) -> tuple[ScreeningSettings, Calibration]:
    """The settings the recording is screened with, and where its calibration came from."""
    from appliance.config import load_config
    from appliance.screening import calstore
    from appliance.screening.configure import settings_for

    config = load_config(args.config)
    state_dir = _state_dir(args, config.paths.state_dir)
    calibration = Calibration(0.0, "none")
    if state_dir is not None:
        current, _ = calstore.load(state_dir)
        if current is not None:
            calibration = Calibration(current.offset_c, str(calstore.path_in(state_dir)), current.reference_c)
    settings = settings_for(config, calibration_offset_c=calibration.offset_c)
    return settings, calibration


def replay_results(frames: Any, settings: ScreeningSettings, sink: Any) -> dict[str, Any]:
    """Feed every frame, hand each result to ``sink``; returns the frame statistics."""
    from appliance.screening.machine import ScreeningMachine

    machine = ScreeningMachine(settings, warm_start=True)
    count, first, last = 0, None, None
    for f in frames:
        t = float(f.t)
        first = t if first is None else first
        last = t
        count += 1
        step = machine.feed(FrameInput(t, np.asarray(f.pixels, dtype=np.float64), float(f.thermistor)))
        if step.result is not None:
            sink(step.result)
    return {
        "frames": count,
        "first_t": first,
        "last_t": last,
        "duration_s": 0.0 if first is None or last is None else round(last - first, 3),
    }


def _summary(
    stats: dict[str, Any], counts: Counter[str], settings: ScreeningSettings, cal: Calibration, source: str
) -> dict[str, Any]:
    return {
        "recording": source,
        "results": {kind: counts.get(kind, 0) for kind in ("normal", "elevated", "retry")},
        "people": sum(counts.values()),
        **stats,
        "warm_start": True,
        "calibration": {"offset_c": cal.offset_c, "source": cal.source, "reference_c": cal.reference_c},
        "settings": dataclasses.asdict(settings),
    }


_HEADER = (
    f"{'start s':>9} {'end s':>9}  {'result':<9} {'estimate':>10} {'confidence':>10} {'distance':>9}  reason"
)


def _row(result: ScreeningResult, settings: ScreeningSettings) -> str:
    distance = "--" if result.distance_m is None else f"{result.distance_m:.2f} m"
    return (
        f"{result.start_t:9.2f} {result.end_t:9.2f}  {result.result:<9} "
        f"{format_temperature(result.estimate_c, settings.unit):>10} {result.confidence:10.2f} "
        f"{distance:>9}  {result.reason or ''}"
    ).rstrip()


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    # Looked up per call, not bound at import: tests and callers swap the streams.
    out = out or sys.stdout
    err = err or sys.stderr
    from appliance.thermal.recording import read_recording

    path = Path(args.file)
    try:
        settings, calibration = load_settings(args)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    counts: Counter[str] = Counter()

    def sink(result: ScreeningResult) -> None:
        counts[result.result] += 1
        if args.json:
            print(json.dumps(result.as_dict()), file=out, flush=True)
        else:
            if sum(counts.values()) == 1:
                print(_HEADER, file=out)
            print(_row(result, settings), file=out, flush=True)

    try:
        stats = replay_results(read_recording(path), settings, sink)
    except RecordingError as exc:
        print(f"{PROG}: malformed recording: {exc}", file=err)
        return 2
    except FileNotFoundError:
        print(f"{PROG}: {path}: no such file", file=err)
        return 2
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{PROG}: {path}: cannot read: {exc}", file=err)
        return 2
    summary = _summary(stats, counts, settings, calibration, str(path))
    if args.json:
        print(json.dumps({"summary": summary}), file=out)
        return 0
    if not counts:
        print("nobody was screened", file=out)
    results = ", ".join(f"{n} {kind}" for kind, n in summary["results"].items())
    offset = (
        "none (offset 0)"
        if calibration.source == "none"
        else f"{calibration.offset_c:+.2f} °C from {calibration.source}"
    )
    frames = f"{stats['frames']} frames over {stats['duration_s']:.1f} s"
    print(f"{summary['people']} screened: {results}; {frames}; calibration {offset}", file=out)
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except ApplianceError as exc:  # anything else this package raises on purpose
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
