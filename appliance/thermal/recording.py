"""Thermal recordings: the canonical JSONL format, a CSV reader, streaming both ways.

JSONL, one frame per line:

    {"t": 12.3, "thermistor": 24.5, "pixels": [[8 floats], ... 8 rows]}

t is seconds (any origin, strictly increasing), thermistor and pixels are °C, row 0 is the top of the
image (the driver's orientation). Blank lines are skipped. CSV has a header `t,thermistor,p0,...,p63`
with the pixels row-major (p0..p7 is the top row). Files are UTF-8 (a byte-order mark, as some
spreadsheets write, is allowed).

Readers are iterators, so an hour of 10 fps frames never sits in memory, and every defect raises
RecordingError naming the source and the 1-based line number, whatever the file holds (binary
junk, text that is not UTF-8, numbers too large for a float, nesting thousands deep). A frame's
line is about 600 characters: a line (in CSV, a row, which quoted newlines can spread over many
lines) over MAX_LINE characters is refused when that many have been read, never read whole, so a
file that is not a recording cannot fill the memory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from appliance.atomic import atomic_write
from appliance.errors import RecordingError
from appliance.thermal.jsonl import COLS, ROWS, FrameWriter, frame_json

CSV_HEADER = ["t", "thermistor", *(f"p{i}" for i in range(ROWS * COLS))]
_KEYS = {"t", "thermistor", "pixels"}
MAX_LINE = 64 * 1024  # characters; a frame takes about 600
# Pixels are held as float32: a larger value would turn into inf on the way in.
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class RecordedFrame:
    t: float
    thermistor: float
    pixels: npt.NDArray[np.float32]  # 8x8 °C, row 0 = top

    def to_json(self) -> str:
        # The one definition of a line, shared with the numpy-free recorder (jsonl.py).
        return frame_json(self.t, self.thermistor, self.pixels)


def make_frame(t: float, thermistor: float, pixels: npt.ArrayLike) -> RecordedFrame:
    grid = np.asarray(pixels, dtype=np.float32)
    if grid.shape != (ROWS, COLS):
        raise ValueError(f"pixels must be 8x8, got shape {grid.shape}")
    return RecordedFrame(float(t), float(thermistor), grid)


class RecordingWriter:
    """Appends frames to a JSONL stream, refusing what a reader would reject."""

    def __init__(self, stream: IO[str]) -> None:
        self._writer = FrameWriter(stream)

    def write(self, frame: RecordedFrame) -> None:
        values = np.asarray(frame.pixels)
        if values.shape != (ROWS, COLS):
            raise ValueError(f"pixels must be 8x8, got shape {values.shape}")
        self._writer.write(frame.t, frame.thermistor, values)

    def flush(self) -> None:
        self._writer.flush()


def write_recording(path: str | os.PathLike[str], frames: Iterable[RecordedFrame]) -> int:
    """Write a whole recording atomically (no half-written file survives a crash); returns the count."""
    buffer = io.StringIO()
    writer = RecordingWriter(buffer)
    count = 0
    for frame in frames:
        writer.write(frame)
        count += 1
    atomic_write(path, buffer.getvalue())
    return count


def read_recording(path: str | os.PathLike[str]) -> Iterator[RecordedFrame]:
    """Frames from a .jsonl or .csv file (chosen by extension; anything else is read as JSONL)."""
    source = str(path)
    # surrogateescape: bytes that are not UTF-8 arrive as lone surrogates, found line by line
    # in bounded_lines (a strict decoder would fail a whole chunk, on the wrong line number).
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as stream:
        lines = bounded_lines(stream, source)
        if Path(path).suffix.lower() == ".csv":
            yield from iter_csv(lines, source)
        else:
            yield from iter_jsonl(lines, source)


def bounded_lines(stream: IO[str], source: str = "<stream>") -> Iterator[str]:
    """The stream's lines, each read at most MAX_LINE characters at a time: a longer line, or
    one holding bytes that are not UTF-8 (decoded with surrogateescape), is a RecordingError.
    A byte-order mark at the start is dropped."""
    number = 0
    while line := stream.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE:
            raise RecordingError(source, number, f"line longer than {MAX_LINE} characters: not a recording")
        try:
            line.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RecordingError(source, number, f"not UTF-8 text (column {exc.start + 1})") from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield line


def _number(value: Any, source: str, line: int, what: str) -> float:
    # bool is an int to Python but never a temperature.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordingError(source, line, f"{what} is not a number: {_short(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        raise RecordingError(source, line, f"{what} is out of range: {_short(value)}") from None
    if not math.isfinite(number):
        raise RecordingError(source, line, f"{what} is not finite: {value!r}")
    return number


def _pixel(number: float, source: str, line: int, what: str) -> float:
    if abs(number) > _F32_MAX:
        raise RecordingError(source, line, f"{what} is out of range: {number!r}")
    return number


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


class _Sequence:
    """Checks that t strictly increases across lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.last: float | None = None

    def check(self, t: float, line: int) -> None:
        if self.last is not None and t <= self.last:
            raise RecordingError(self.source, line, f"t does not increase: {t} after {self.last}")
        self.last = t


def iter_jsonl(stream: Iterable[str], source: str = "<stream>") -> Iterator[RecordedFrame]:
    sequence = _Sequence(source)
    for line_number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            raise RecordingError(
                source, line_number, f"line longer than {MAX_LINE} characters: not a recording"
            )
        try:
            obj = json.loads(line, parse_constant=lambda name: float(name))
        except json.JSONDecodeError as exc:
            raise RecordingError(source, line_number, f"not valid JSON: {exc.msg}") from None
        except ValueError as exc:  # an integer of more than 4300 digits (sys.int_info)
            raise RecordingError(source, line_number, f"not valid JSON: {exc}") from None
        except RecursionError:
            raise RecordingError(source, line_number, "not valid JSON: nested too deeply") from None
        if not isinstance(obj, dict):
            raise RecordingError(source, line_number, f"expected a JSON object, got {type(obj).__name__}")
        missing = sorted(_KEYS - obj.keys())
        if missing:
            raise RecordingError(source, line_number, f"missing key(s): {', '.join(missing)}")
        extra = sorted(obj.keys() - _KEYS)
        if extra:
            raise RecordingError(source, line_number, f"unknown key(s): {', '.join(extra)}")
        t = _number(obj["t"], source, line_number, "t")
        thermistor = _number(obj["thermistor"], source, line_number, "thermistor")
        rows = obj["pixels"]
        if not isinstance(rows, list) or len(rows) != ROWS:
            count = len(rows) if isinstance(rows, list) else type(rows).__name__
            raise RecordingError(source, line_number, f"pixels must be a list of 8 rows, got {count}")
        grid = np.empty((ROWS, COLS), dtype=np.float32)
        for r, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != COLS:
                count = len(row) if isinstance(row, list) else type(row).__name__
                raise RecordingError(source, line_number, f"pixels row {r} must hold 8 values, got {count}")
            for c, value in enumerate(row):
                what = f"pixels[{r}][{c}]"
                grid[r, c] = _pixel(_number(value, source, line_number, what), source, line_number, what)
        sequence.check(t, line_number)
        yield RecordedFrame(t, thermistor, grid)


def _parse_csv_number(text: str, source: str, line: int, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise RecordingError(source, line, f"{what} is not a number: {_short(text)}") from None
    if not math.isfinite(number):
        raise RecordingError(source, line, f"{what} is not finite: {_short(text)}")
    return number


def _csv_rows(reader: Any, source: str, limit: _RowLimit) -> Iterator[list[str]]:
    """The reader's rows, its own errors (a quoted field past csv.field_size_limit, say) as
    RecordingError."""
    while True:
        try:
            cells: list[str] = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise RecordingError(source, max(1, reader.line_num), f"not valid CSV: {exc}") from None
        limit.row_done()
        yield cells


class _RowLimit:
    """Feeds csv.reader its lines, refusing a row longer than MAX_LINE characters in all.

    A quoted field may hold newlines, so one CSV row can run over any number of short lines;
    limiting each line (bounded_lines) would still let such a row collect millions of cells.
    """

    def __init__(self, stream: Iterable[str], source: str) -> None:
        self._lines = iter(stream)
        self._source = source
        self._line = 0  # lines handed to the reader so far
        self._row_start = 1  # the line the current row began on
        self._row_chars = 0

    def __iter__(self) -> _RowLimit:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._line += 1
        self._row_chars += len(line)
        if self._row_chars > MAX_LINE:
            raise RecordingError(
                self._source,
                self._row_start,
                f"row longer than {MAX_LINE} characters (a quote never closed?): not valid CSV",
            )
        return line

    def row_done(self) -> None:
        """The reader returned a row: the next one starts on the next line."""
        self._row_start, self._row_chars = self._line + 1, 0


def iter_csv(stream: Iterable[str], source: str = "<stream>") -> Iterator[RecordedFrame]:
    limit = _RowLimit(stream, source)
    reader = csv.reader(limit)
    rows = _csv_rows(reader, source, limit)
    header = next(rows, None)
    if header is None:
        raise RecordingError(source, 1, "empty file: expected a header t,thermistor,p0..p63")
    if [h.strip() for h in header] != CSV_HEADER:
        raise RecordingError(source, 1, "header must be t,thermistor,p0,...,p63 in that order")
    sequence = _Sequence(source)
    for cells in rows:
        line_number = reader.line_num
        if not cells or not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(CSV_HEADER):
            raise RecordingError(source, line_number, f"expected {len(CSV_HEADER)} columns, got {len(cells)}")
        t = _parse_csv_number(cells[0], source, line_number, "t")
        thermistor = _parse_csv_number(cells[1], source, line_number, "thermistor")
        values = [
            _pixel(
                _parse_csv_number(cell, source, line_number, CSV_HEADER[i + 2]),
                source,
                line_number,
                CSV_HEADER[i + 2],
            )
            for i, cell in enumerate(cells[2:])
        ]
        sequence.check(t, line_number)
        yield RecordedFrame(t, thermistor, np.array(values, dtype=np.float32).reshape(ROWS, COLS))
