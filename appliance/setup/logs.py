"""The logs page's sources: the journal of the appliance's units, or log files, or this process.

- Under systemd: systemd.journal.Reader, entries of this boot from the appliance-*.service
  units (matches on _SYSTEMD_UNIT, OR'ed), newest last.
- Elsewhere: the files in setup.log_dir (`appliance demo --headless` writes one per daemon
  there), the last lines of each.
- Always: this daemon's own recent records (a ring buffer), so a page served from a
  foreground run still has something to show.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from appliance import daemons
from appliance.setup.system import unit_name

MAX_LINES = 300
TAIL_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class LogLine:
    ts: float | None
    source: str
    priority: int  # syslog: 0 emerg .. 7 debug
    text: str

    @property
    def when(self) -> str:
        if self.ts is None:
            return ""
        return datetime.datetime.fromtimestamp(self.ts).strftime("%Y-%m-%d %H:%M:%S")


def journal_available() -> bool:
    try:
        from systemd import journal  # noqa: F401
    except ImportError:
        return False
    return any(Path(p).is_dir() for p in ("/run/log/journal", "/var/log/journal"))


def read_journal(daemon: str | None = None, limit: int = MAX_LINES) -> list[LogLine]:
    from systemd import journal

    names = [daemon] if daemon else list(daemons.START_ORDER)
    reader = journal.Reader()
    try:
        reader.this_boot()
        for name in names:
            reader.add_match(_SYSTEMD_UNIT=unit_name(name))
        reader.seek_tail()
        lines: list[LogLine] = []
        while len(lines) < limit:
            entry = reader.get_previous()
            if not entry:
                break
            stamp = entry.get("__REALTIME_TIMESTAMP")
            unit = str(entry.get("_SYSTEMD_UNIT", ""))
            lines.append(
                LogLine(
                    ts=stamp.timestamp() if isinstance(stamp, datetime.datetime) else None,
                    source=unit.removeprefix("appliance-").removesuffix(".service") or "?",
                    priority=int(entry.get("PRIORITY", 6)),
                    text=str(entry.get("MESSAGE", "")),
                )
            )
    finally:
        reader.close()
    lines.reverse()
    return lines


def _priority(text: str) -> int:
    for word, level in ((" ERROR ", 3), (" CRITICAL ", 2), (" WARNING ", 4), (" DEBUG ", 7)):
        if word in text:
            return level
    return 6


def read_files(log_dir: Path, daemon: str | None = None, limit: int = MAX_LINES) -> list[LogLine]:
    """The last lines of <log_dir>/<daemon>.log (all daemons when None), file order kept."""
    names = [daemon] if daemon else list(daemons.START_ORDER)
    lines: list[LogLine] = []
    for name in names:
        path = log_dir / f"{name}.log"
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - TAIL_BYTES))
                data = fh.read()
        except OSError:
            continue
        text_lines = data.decode("utf-8", "replace").splitlines()
        if size > TAIL_BYTES:
            text_lines = text_lines[1:]  # the first is probably cut in half
        lines += [LogLine(None, name, _priority(t), t) for t in text_lines[-limit:]]
    return lines[-limit:] if daemon else lines


class RingHandler(logging.Handler):
    """Keeps this process's last records for the logs page."""

    def __init__(self, capacity: int = 200) -> None:
        super().__init__(logging.INFO)
        self.records: collections.deque[LogLine] = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname} {record.name}: {record.getMessage()}"
        except Exception:  # a bad format string must not take logging down
            return
        level = {logging.ERROR: 3, logging.CRITICAL: 2, logging.WARNING: 4, logging.DEBUG: 7}.get(
            record.levelno, 6
        )
        self.records.append(LogLine(record.created, "setup", level, text))
