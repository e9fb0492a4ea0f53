"""`appliance events export --csv [--out FILE] [--since SEQ] [--state-dir DIR] [--config F]`.

Reads <state_dir>/events.db read-only (safe while the screening daemon writes: a WAL reader
sees one consistent snapshot and never blocks the writer) and writes one CSV row per stored
event: a result, and for an elevated one its alert with the same seq. Wall times are ISO 8601
UTC. With --out the file appears complete or not at all (written beside it, then renamed).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from appliance.config import load_config
from appliance.errors import ApplianceError
from appliance.screening.events import EventStore, StoredEvent, path_in

HEADER = (
    "seq",
    "wall_time_utc",
    "topic",
    "result",
    "estimate_c",
    "confidence",
    "distance_m",
    "ambient_c",
    "threshold_c",
    "reason",
)


def iso_utc(wall_ts: float) -> str:
    stamp = datetime.datetime.fromtimestamp(wall_ts, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def row(ev: StoredEvent) -> list[str]:
    r = ev.result
    return [
        str(ev.seq),
        iso_utc(ev.wall_ts),
        ev.topic,
        r.result,
        _num(r.estimate_c, 2),
        _num(r.confidence, 3),
        _num(r.distance_m, 3),
        _num(r.ambient_c, 2),
        _num(ev.threshold_c, 2),
        ev.reason or "",
    ]


def write_csv(events: Iterable[StoredEvent], out: IO[str]) -> tuple[int, int | None, int | None]:
    """Write the header and the rows; (rows, first seq, last seq)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    n, first, last = 0, None, None
    for ev in events:
        writer.writerow(row(ev))
        n += 1
        first = ev.seq if first is None else first
        last = ev.seq
    return n, first, last


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir)
    return load_config(args.config).paths.state_dir


def main(args: argparse.Namespace) -> int:
    try:
        db = path_in(_state_dir(args))
        store = EventStore.open_readonly(db)
    except ApplianceError as exc:
        print(f"appliance events export: {exc}", file=sys.stderr)
        return 1
    try:
        if args.out:
            n, first, last = _to_file(store, Path(args.out), args.since)
            where = args.out
        else:
            n, first, last = write_csv(store.rows(args.since), sys.stdout)
            sys.stdout.flush()
            where = "stdout"
    except BrokenPipeError:
        # `... | head`: the reader has what it wanted; do not die with a traceback at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, ApplianceError) as exc:  # a file damaged past the header check: StateError
        print(f"appliance events export: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    span = f" (seq {first}..{last})" if n else ""
    print(f"exported {n} events{span} from {db} to {where}", file=sys.stderr)
    return 0


def _to_file(store: EventStore, out: Path, since: int) -> tuple[int, int | None, int | None]:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            counts = write_csv(store.rows(since), fh)
            fh.flush()
            os.fsync(fh.fileno())
        # Kept at mkstemp's 0600: these are people's health readings.
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return counts
