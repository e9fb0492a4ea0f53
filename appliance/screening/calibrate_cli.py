"""`appliance calibrate --reference DEGC [--recording FILE] ...`: set the site's calibration offset.

Two ways:

- From a recording (``--recording FILE``): record the kiosk with nobody in front for a few
  seconds, then the reference person (core temperature just taken with a clinical thermometer,
  the value given as --reference) standing on the floor mark, holding still for a few seconds.
  The offset is computed here (calibration.calibrate_frames: the machine learns the empty
  scene, then the longest steady stretch of the target is used, at most --frames frames) and
  stored with calstore.save in --state-dir, else the config's paths.state_dir, with
  source "recording:<file name>". The previous calibration moves to the history.
- Live (no --recording): the screening daemon measures whoever stands in front now, through the
  bus method ``screening.calibrate``, and stores the result itself (in its own state dir, so
  --state-dir is refused here). The bus socket comes from the config.

``--target surface`` calibrates on a black body of known temperature instead of a person.
Refused: a reference outside what a person can read (body) or a black body is set to
(surface), a target that never held still, and an offset beyond calstore.MAX_OFFSET_C (a
broken sensor or a wrong reference, not a site offset). Exit 0 on success, 1 when the
calibration was refused or the daemon could not do it, 2 on bad input files (a malformed
recording is named with its line, as `appliance replay` does).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from appliance.errors import ApplianceError, ConfigError, RecordingError

if TYPE_CHECKING:
    from appliance.screening.records import FrameInput

PROG = "appliance calibrate"
# A black body for calibrating a skin thermometer is set near skin temperature.
SURFACE_RANGE_C = (25.0, 45.0)
# Live: the daemon needs --frames at 10 fps plus the person stepping up; this long at most.
LIVE_EXTRA_S = 20.0


def _check_reference(args: argparse.Namespace, low: float, high: float) -> str | None:
    if args.target == "surface":
        low, high = SURFACE_RANGE_C
    if not low <= args.reference <= high:
        what = "a black body" if args.target == "surface" else "a person's core temperature"
        return f"--reference {args.reference} is not {what} ({low}..{high} °C)"
    if not 1 <= args.frames <= 600:
        return f"--frames {args.frames}: must be 1..600"
    return None


class Unreadable(Exception):
    """The recording cannot be read at all (a directory, no permission): exit 2, as replay."""


def _frames(path: Path) -> Iterator[FrameInput]:
    from appliance.screening.records import FrameInput
    from appliance.thermal.recording import read_recording

    try:
        for f in read_recording(path):
            yield FrameInput(float(f.t), np.asarray(f.pixels, dtype=np.float64), float(f.thermistor))
    except FileNotFoundError:
        raise
    except OSError as exc:  # reading only: an error storing the result is not the recording's
        raise Unreadable(f"{path}: cannot read: {exc.strerror or exc}") from None


def from_recording(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from appliance.config import load_config
    from appliance.screening import calstore
    from appliance.screening.calibration import calibrate_frames
    from appliance.screening.configure import settings_for

    config = load_config(args.config)
    settings = settings_for(config)
    problem = _check_reference(args, settings.min_plausible_c, settings.max_plausible_c)
    if problem:
        print(f"{PROG}: {problem}", file=err)
        return 1
    path = Path(args.recording)
    state_dir = Path(args.state_dir) if args.state_dir is not None else config.paths.state_dir
    frames = _frames(path)
    try:
        cal = calibrate_frames(frames, args.reference, settings, target=args.target, max_frames=args.frames)
    except ValueError as exc:
        print(f"{PROG}: {path.name}: {exc}", file=err)
        return 1
    if cal.spread_c > settings.max_window_std_c:
        print(
            f"{PROG}: the target's reading varied by {cal.spread_c:.2f} °C (over "
            f"{settings.max_window_std_c}): it moved or the scene changed; record again",
            file=err,
        )
        return 1
    try:
        record = calstore.save(
            state_dir,
            offset_c=cal.offset_c,
            reference_c=args.reference,
            measured_c=cal.measured_c,
            frames=cal.frames,
            spread_c=cal.spread_c,
            source=f"recording:{path.name}",
        )
    except ValueError as exc:  # the offset cap
        print(f"{PROG}: refused: {exc}", file=err)
        return 1
    print(
        f"calibration offset {record.offset_c:+.2f} °C (the kiosk read {cal.measured_c:.2f} °C, "
        f"reference {args.reference:.2f} °C, {cal.frames} frames, spread {cal.spread_c:.2f} °C) "
        f"saved to {calstore.path_in(state_dir)}",
        file=out,
    )
    return 0


async def _request(socket: Path, reference_c: float, frames: int) -> object:
    from appliance.bus.client import BusClient
    from appliance.bus.topics import CalibrateParams

    client = BusClient(socket, "calibrate-cli")
    try:
        await client.connect(timeout=2.0)
        return await client.request(
            "screening.calibrate",
            CalibrateParams(reference_c=reference_c, frames=frames),
            timeout=frames / 10.0 + LIVE_EXTRA_S,
        )
    finally:
        await client.close()


def live(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from appliance.config import load_config
    from appliance.errors import NoSuchMethod, NotConnected, RemoteError, RequestTimeout

    if args.state_dir is not None:
        print(
            f"{PROG}: --state-dir goes with --recording; a live calibration is stored by the "
            "screening daemon in its own state directory",
            file=err,
        )
        return 2
    if args.target != "body":
        print(
            f"{PROG}: a live calibration is on a person (--target body); use --recording for a black body",
            file=err,
        )
        return 2
    problem = _check_reference(args, 30.0, 45.0)
    if problem:
        print(f"{PROG}: {problem}", file=err)
        return 1
    config = load_config(args.config)
    socket = config.bus_socket
    try:
        result = asyncio.run(_request(socket, args.reference, args.frames))
    except NotConnected:
        print(f"{PROG}: no bus at {socket}: is the appliance running (appliance-bus.socket)?", file=err)
        return 1
    except NoSuchMethod:
        print(f"{PROG}: nobody serves screening.calibrate: is appliance-screening running?", file=err)
        return 1
    except RequestTimeout:
        print(
            f"{PROG}: the screening daemon did not answer in time: was someone standing still in front?",
            file=err,
        )
        return 1
    except RemoteError as exc:
        print(f"{PROG}: the screening daemon refused: {exc}", file=err)
        return 1
    offset = getattr(result, "offset_c", None)
    measured = getattr(result, "measured_c", None)
    frames = getattr(result, "frames", None)
    print(
        f"calibration offset {offset:+.2f} °C (the kiosk read {measured:.2f} °C, reference "
        f"{args.reference:.2f} °C, {frames} frames), stored by the screening daemon",
        file=out,
    )
    return 0


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    # Looked up per call, not bound at import: tests and callers swap the streams.
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.recording is not None:
            return from_recording(args, out, err)
        return live(args, out, err)
    except RecordingError as exc:
        print(f"{PROG}: malformed recording: {exc}", file=err)
        return 2
    except FileNotFoundError as exc:
        print(f"{PROG}: {exc.filename}: no such file", file=err)
        return 2
    except Unreadable as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    except ApplianceError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 1


def main(args: argparse.Namespace) -> int:
    return run(args)
