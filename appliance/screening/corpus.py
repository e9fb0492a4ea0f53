"""The scenario suite on disk, for fitting (split "train") and the benchmark (split "test").

Not part of the pure core: this module writes files. The suite is generated deterministically
from its seeds (appliance/sim/suite.py) and cached under

    $APPLIANCE_CACHE_DIR, else $XDG_CACHE_HOME/appliance, else ~/.cache/appliance
        suite-<version>/<split>-<people>[-fixed]/ground_truth.json, recordings/, calibration/

where <version> is a hash of the simulator's sources and of this module's calibration plan, so
a change to the simulator can never be scored against stale recordings. A fresh clone builds
it on first use (about 5 s per 200 people on a 2-core x86); concurrent builders do not clash
(each builds in its own temporary directory and the first rename wins). ``behaviour`` picks the
suite's people: "compliant" (they follow the kiosk's prompts, the default) or "fixed" (they
stand where they first stopped and pairs stay together: the suite before prompt compliance).

Site calibration. Every suite session is its own site with its own sensor (offset, fixed
pattern, seeded by the session). For each one, a calibration recording is made the way a
technician would: the same sensor in the same room, a few seconds of empty scene, then a
reference person stands on the floor mark (``NOMINAL_DISTANCE_M``, centred) for 8 s. Their
core temperature is drawn from the normal range and the reference value handed to the
calibration is what a clinical thermometer shows: rounded to 0.1 degC. Nothing of the screened
people's truth goes into it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from appliance.screening import evaluate
from appliance.screening.calibration import calibrate_frames
from appliance.screening.estimator import Calibration
from appliance.screening.machine import ScreeningMachine
from appliance.screening.records import FrameInput, ScreeningResult
from appliance.screening.settings import ScreeningSettings
from appliance.thermal.recording import read_recording, write_recording

# Where the technician's floor mark is: well inside the distance window, near enough that the
# face fully covers a pixel or two.
NOMINAL_DISTANCE_M = 0.45
CALIBRATION_CORE_RANGE = (36.3, 37.1)
# Bump when the calibration plan below changes (the simulator's own changes are hashed).
CALIBRATION_PLAN = 1
_SIM_SOURCES = (
    ("appliance.sim", "suite.py"),
    ("appliance.sim", "scenario.py"),
    ("appliance.sim", "thermal_scene.py"),
    ("appliance.thermal", "fake_amg8833.py"),
    ("appliance.thermal", "amg8833.py"),
    ("appliance.thermal", "registers.py"),
    ("appliance.thermal", "recording.py"),
)


def suite_version() -> str:
    digest = hashlib.sha256(f"calibration-plan-{CALIBRATION_PLAN}".encode())
    for package, name in _SIM_SOURCES:
        digest.update(name.encode())
        digest.update((resources.files(package) / name).read_bytes())
    return digest.hexdigest()[:12]


def cache_root() -> Path:
    if explicit := os.environ.get("APPLIANCE_CACHE_DIR"):
        return Path(explicit)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "appliance"
    home = Path.home()
    if home.is_dir() and os.access(home, os.W_OK):
        return home / ".cache" / "appliance"
    return Path(tempfile.gettempdir()) / "appliance-cache"


def calibration_scenario(session: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
    """(scenario data, reference_c shown by the thermometer, true core) for a session's site."""
    rng = np.random.default_rng([int(session["seed"]), 7])
    core = round(float(rng.uniform(*CALIBRATION_CORE_RANGE)), 3)
    ambient = session["scenario"]["ambient"]
    data = {
        "name": "calibration",
        "duration": 14.0,
        "loop": False,
        "seed": session["seed"],
        "ambient": {
            "temperature": ambient["temperature"],
            "drift_per_hour": 0.0,
            "gradient": ambient["gradient"],
        },
        "person": [
            {
                "name": "reference",
                "enter": 2.5,
                "approach": 1.5,
                "dwell": 8.0,
                "leave": 1.5,
                "distance": NOMINAL_DISTANCE_M,
                "core_temp": core,
                "sway": 0.01,
            }
        ],
    }
    return data, round(core, 1), core


def _build(out: Path, split: str, people: int, behaviour: str = "compliant") -> None:
    from appliance.sim.scenario import parse_scenario
    from appliance.sim.suite import SessionPlan, generate_suite, record_session

    truth = generate_suite(out, split, people, behaviour)
    references: dict[str, Any] = {}
    for session in truth["sessions"]:
        name = Path(session["recording"]).stem
        data, reference_c, core = calibration_scenario(session)
        plan = SessionPlan(f"{name}_cal", int(session["seed"]), parse_scenario(data, f"<calibration {name}>"))
        frames, offset = record_session(plan)
        path = f"calibration/{name}.jsonl"
        write_recording(out / path, frames)
        references[name] = {
            "recording": path,
            "reference_c": reference_c,
            "core_c": core,
            "sensor_offset_c": round(offset, 4),
        }
    (out / "calibration.json").write_text(json.dumps(references, indent=1))


def ensure_suite(split: str, people: int, root: Path | None = None, behaviour: str = "compliant") -> Path:
    """The directory of a generated suite; built on first use."""
    from appliance.sim.suite import BEHAVIOURS

    if behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour must be one of {BEHAVIOURS}, not {behaviour!r}")
    base = (root or cache_root()) / f"suite-{suite_version()}"
    name = f"{split}-{people}" if behaviour == "compliant" else f"{split}-{people}-{behaviour}"
    target = base / name
    if (target / "calibration.json").is_file():
        return target
    base.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
    try:
        _build(building, split, people, behaviour)
        try:
            building.rename(target)
        except OSError:
            if not (target / "calibration.json").is_file():
                raise  # not a lost race: a real failure
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(building)
    return target


def load_truth(suite: Path) -> dict[str, Any]:
    truth: dict[str, Any] = json.loads((suite / "ground_truth.json").read_text())
    references = json.loads((suite / "calibration.json").read_text())
    for session in truth["sessions"]:
        session["calibration"] = references[Path(session["recording"]).stem]
    return truth


def frames_of(path: Path) -> Iterator[FrameInput]:
    for f in read_recording(path):
        yield FrameInput(f.t, f.pixels.astype(np.float64), f.thermistor)


def calibrate_site(suite: Path, session: dict[str, Any], settings: ScreeningSettings) -> Calibration:
    cal = session["calibration"]
    return calibrate_frames(frames_of(suite / cal["recording"]), float(cal["reference_c"]), settings)


def run_session(
    path: Path, settings: ScreeningSettings, *, windows: list[Any] | None = None
) -> list[ScreeningResult]:
    """Every result of one recording, with a warm sensor (the suite starts on a running kiosk).

    ``windows``, if given, receives (result, the window behind it) for each result that came
    from a window (not from a fault).
    """
    machine = ScreeningMachine(settings, warm_start=True)
    results = []
    for frame in frames_of(path):
        step = machine.feed(frame)
        if step.result is not None:
            results.append(step.result)
            if windows is not None and step.result.reason != "sensor_fault":
                windows.append((step.result, machine.last_window))
    return results


def score_suite(
    suite: Path, settings: ScreeningSettings
) -> tuple[list[evaluate.SessionScore], list[Calibration]]:
    """Calibrate every site from its own calibration recording, then screen its people."""
    truth = load_truth(suite)
    scores: list[evaluate.SessionScore] = []
    calibrations: list[Calibration] = []
    for session in truth["sessions"]:
        calibration = calibrate_site(suite, session, settings)
        calibrations.append(calibration)
        site = dataclasses.replace(settings, calibration_offset_c=calibration.offset_c)
        results = run_session(suite / session["recording"], site)
        scores.append(evaluate.score_session(session, results))
    return scores, calibrations
