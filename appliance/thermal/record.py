"""`appliance thermal record --seconds N --out FILE.jsonl [--config F]`: live frames to a recording.

Records thermal.frame from the running thermal daemon over the bus, in the canonical JSONL format
(appliance/thermal/recording.py, written by jsonl.py without numpy: this process has no use for numpy's
~12 MB of RSS), t in seconds from the first recorded frame (from the frames' monotonic
envelope timestamps, i.e. when the daemon read them, not when they reached this process).

The sensor is never read directly, even with no bus: the thermal daemon owns the chip (it changes the frame
rate and the interrupt levels as people come and go) and a second process on the same I2C device would
fight it for the registers. No bus, or no daemon on it, means the appliance is not running or the config
points elsewhere, and that is what this command says, with what to do about it.

The file appears only complete: frames stream into a temporary file beside it, which is fsynced and
renamed over FILE at the end. On any failure or Ctrl-C the temporary file is removed and FILE is untouched.

Exit status: 0 recorded, 1 nothing recorded (no bus, no daemon, no frames, cannot write), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import math
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from appliance.atomic import atomic_open
from appliance.bus.client import BusClient, Received, Subscription
from appliance.bus.topics import Health, ThermalFrame, ThermalStatus
from appliance.config import load_config
from appliance.errors import ApplianceError, NotConnected
from appliance.thermal.jsonl import FrameWriter

PROG = "appliance thermal record"
MAX_SECONDS = 24 * 3600.0  # ~0.4 GB at 10 fps; more is a typo or a job for a logger, not this command
CONNECT_TIMEOUT_S = 3.0
FIRST_FRAME_TIMEOUT_S = 5.0  # frames come at 1 fps at the slowest


class RecordFailed(Exception):
    """Nothing was recorded; the message says why and what to do."""


@dataclass
class Summary:
    frames: int = 0
    duration_s: float = 0.0
    missed: int = 0  # gaps in the daemon's frame_seq: frames dropped on the way, or a fault
    daemon_restarts: int = 0
    states: set[str] = field(default_factory=set)  # thermal.status states seen while recording


# -- the file -------------------------------------------------------------------------------------------


def atomic_stream(path: Path) -> contextlib.AbstractContextManager[IO[str]]:
    """A text stream that becomes `path` only when the block ends normally (a recording is not a secret)."""
    return atomic_open(path, 0o644, text=True)


# -- the bus --------------------------------------------------------------------------------------------


def probe_socket(path: Path) -> None:
    """Say precisely why the bus cannot be reached, before a client starts retrying in the background."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        raise RecordFailed(
            f"no bus socket at {path}: the appliance is not running here "
            "(start it: systemctl start appliance-bus.socket appliance-thermal, or run "
            "`appliance run bus` and `appliance run thermal`), or --config / APPLIANCE_RUN_DIR point "
            "elsewhere"
        ) from None
    except PermissionError:
        raise RecordFailed(
            f"permission denied on {path}: run as root or as a member of the bus's group (bus.allowed_groups)"
        ) from None
    except ConnectionRefusedError:
        raise RecordFailed(f"nothing listens on {path}: the bus daemon is not running") from None
    except OSError as exc:
        raise RecordFailed(f"cannot connect to the bus at {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()


def _latest(sub: Subscription) -> Received | None:
    """The newest message already delivered (retained state arrives right after subscribing)."""
    last = None
    while sub.queue:
        last = sub.queue.popleft()
    return last


def _why_no_frames(health: Subscription, status: Subscription, waited: float) -> str:
    rx_health, rx_status = _latest(health), _latest(status)
    if rx_health is None or not isinstance(rx_health.msg, Health):
        return (
            f"no thermal.frame within {waited:g} s and no thermal daemon on the bus: start it "
            "(systemctl start appliance-thermal, or `appliance run thermal`)"
        )
    if rx_health.msg.state == "stopping":
        return "the thermal daemon is stopping; start it again and retry"
    if rx_status is not None and isinstance(rx_status.msg, ThermalStatus) and rx_status.msg.state == "fault":
        return f"the thermal daemon reports a sensor fault: {rx_status.msg.reason or 'no reason given'}"
    return (
        f"no thermal.frame within {waited:g} s although the thermal daemon is {rx_health.msg.state} "
        f"({rx_health.msg.status or 'no status'}); see its log"
    )


async def record(
    socket_path: Path,
    seconds: float,
    out: Path,
    *,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    first_frame_timeout: float = FIRST_FRAME_TIMEOUT_S,
) -> Summary:
    probe_socket(socket_path)
    client = BusClient(socket_path, "thermal-record")
    try:
        try:
            await client.connect(connect_timeout)
        except NotConnected:
            raise RecordFailed(
                f"the bus at {socket_path} did not accept a client within {connect_timeout:g} s"
            ) from None
        frames = client.subscribe("thermal.frame", maxsize=4096)
        status = client.subscribe("thermal.status")
        health = client.subscribe("health.thermal")
        try:
            first = await frames.get(first_frame_timeout)
        except TimeoutError:
            raise RecordFailed(_why_no_frames(health, status, first_frame_timeout)) from None
        return await _write(first, frames, status, seconds, out)
    finally:
        await client.close()


async def _write(
    first: Received, frames: Subscription, status: Subscription, seconds: float, out: Path
) -> Summary:
    summary = Summary()
    t0 = first.ts
    # The deadline is on the daemon's clock (monotonic is system-wide): a frame read after it is not
    # part of the recording even if it arrives early enough.
    deadline = t0 + seconds
    last_seq: int | None = None
    last_t = -math.inf
    with atomic_stream(out) as stream:
        writer = FrameWriter(stream)
        rx: Received | None = first
        while rx is not None:
            for state_rx in list(status.queue):
                if isinstance(state_rx.msg, ThermalStatus):
                    summary.states.add(state_rx.msg.state)
            status.queue.clear()
            msg = rx.msg
            assert isinstance(msg, ThermalFrame)  # the client validated the topic's type
            if rx.ts > deadline:
                break
            if last_seq is not None:
                if msg.frame_seq > last_seq:
                    summary.missed += msg.frame_seq - last_seq - 1
                else:
                    summary.daemon_restarts += 1  # its frame_seq starts again at 1
            last_seq = msg.frame_seq
            # 4 decimals is what the file holds; round first so the writer checks what the reader sees.
            t = round(rx.ts - t0, 4)
            if t > last_t:
                writer.write(t, msg.thermistor, msg.pixels)
                summary.frames += 1
                summary.duration_s = t
                last_t = t
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                rx = await frames.get(remaining)
            except TimeoutError:
                rx = None
    return summary


# -- the command ----------------------------------------------------------------------------------------


def _check_args(seconds: float, out: str) -> Path:
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise ValueError(f"--seconds must be more than 0 and at most {MAX_SECONDS:g}, not {seconds:g}")
    path = Path(out)
    if path.suffix.lower() == ".csv":
        raise ValueError(f"{out}: recordings are written as JSONL; name the file .jsonl (CSV is read only)")
    if path.is_dir():
        raise ValueError(f"{out} is a directory; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{path.parent} does not exist or is not a directory")
    return path


def main(args: argparse.Namespace) -> int:
    # The bus client logs its retries; this command explains failures itself, once.
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    logging.getLogger("appliance.bus.client").setLevel(logging.ERROR)
    try:
        out = _check_args(float(args.seconds), str(args.out))
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ApplianceError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(
            record(
                config.bus_socket,
                float(args.seconds),
                out,
                connect_timeout=CONNECT_TIMEOUT_S,
                first_frame_timeout=FIRST_FRAME_TIMEOUT_S,
            )
        )
    except RecordFailed as exc:
        print(f"{PROG}: nothing recorded: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        print(f"{PROG}: cannot write {out}: {why}", file=sys.stderr)
        return 1
    rate = (summary.frames - 1) / summary.duration_s if summary.duration_s > 0 else 0.0
    print(f"{out}: {summary.frames} frames over {summary.duration_s:.1f} s ({rate:.1f} fps)")
    if summary.missed:
        print(
            f"{PROG}: note: {summary.missed} frame(s) missing (gaps in frame_seq: a sensor fault, "
            "or frames dropped on the way)",
            file=sys.stderr,
        )
    if summary.daemon_restarts:
        print(
            f"{PROG}: note: the thermal daemon restarted {summary.daemon_restarts} time(s)", file=sys.stderr
        )
    for state in sorted(summary.states - {"ok"}):
        print(f"{PROG}: note: the sensor was {state} during the recording", file=sys.stderr)
    return 0
