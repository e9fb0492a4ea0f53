from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import RecordingError
from appliance.thermal.recording import (
    CSV_HEADER,
    RecordingWriter,
    iter_csv,
    iter_jsonl,
    make_frame,
    read_recording,
    write_recording,
)


def _frames(n: int = 3) -> list:
    rng = np.random.default_rng(1)
    return [
        make_frame(0.1 * (i + 1), 24.0625 + i * 0.0625, np.round(rng.uniform(20, 37, (8, 8)) * 4) / 4)
        for i in range(n)
    ]


def _line(t: float = 1.0, thermistor: float = 24.0, pixels: object = None, **extra: object) -> str:
    obj = {"t": t, "thermistor": thermistor, "pixels": pixels if pixels is not None else [[22.0] * 8] * 8}
    obj.update(extra)
    return json.dumps(obj)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    frames = _frames()
    path = tmp_path / "r.jsonl"
    assert write_recording(path, frames) == 3
    back = list(read_recording(path))
    assert [f.t for f in back] == pytest.approx([f.t for f in frames], abs=1e-4)
    assert [f.thermistor for f in back] == [f.thermistor for f in frames]
    for a, b in zip(back, frames, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert a.pixels.dtype == np.float32
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"t", "thermistor", "pixels"} and len(first["pixels"]) == 8


def test_row_zero_is_stored_first(tmp_path: Path) -> None:
    grid = np.full((8, 8), 22.0)
    grid[0, 7] = 35.0  # top-right
    path = tmp_path / "r.jsonl"
    write_recording(path, [make_frame(0.0, 22.0, grid)])
    assert json.loads(path.read_text())["pixels"][0][7] == 35.0


def test_csv_reader(tmp_path: Path) -> None:
    frames = _frames(2)
    path = tmp_path / "r.csv"
    rows = [",".join(CSV_HEADER)]
    for f in frames:
        rows.append(",".join(str(v) for v in [f.t, f.thermistor, *f.pixels.reshape(64).tolist()]))
    path.write_text("\n".join(rows) + "\n")
    back = list(read_recording(path))
    assert len(back) == 2
    np.testing.assert_array_equal(back[1].pixels, frames[1].pixels)  # p0..p7 is the top row


def test_reader_is_lazy() -> None:
    lines = iter([_line(1.0), "{broken\n"])
    frames = iter_jsonl(lines, "s")
    assert next(frames).t == 1.0  # the broken line has not been reached yet
    with pytest.raises(RecordingError):
        next(frames)


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"t": 5.0, "pixels": [[22.0] * 8] * 8}), "missing key(s): thermistor"),
        (_line(5.0, label="x"), "unknown key(s): label"),
        (_line(5.0, pixels=[[22.0] * 8] * 7), "list of 8 rows, got 7"),
        (_line(5.0, pixels=[[22.0] * 8] * 7 + [[22.0] * 9]), "row 7 must hold 8 values, got 9"),
        (_line(5.0, pixels=[[22.0] * 8] * 7 + [[22.0] * 7 + ["hot"]]), "pixels[7][7] is not a number"),
        (_line(5.0, pixels=[[22.0] * 8] * 7 + [[22.0] * 7 + [True]]), "pixels[7][7] is not a number"),
        (_line(5.0, thermistor="24"), "thermistor is not a number"),
        ('{"t": 5.0, "thermistor": NaN, "pixels": ' + json.dumps([[22.0] * 8] * 8) + "}", "not finite"),
        (_line(5.0, pixels=[[22.0] * 8] * 7 + [[22.0] * 7 + [float("inf")]]), "not finite"),
        (_line(0.5), "t does not increase: 0.5 after 1.0"),
        (_line(1.0), "t does not increase"),
    ],
)
def test_malformed_jsonl_names_line_and_reason(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(_line(0.0) + "\n\n" + _line(1.0) + "\n" + bad_line + "\n" + _line(9.0) + "\n")
    with pytest.raises(RecordingError) as info:
        list(read_recording(path))
    assert info.value.line == 4  # the blank line 2 still counts
    assert reason in info.value.reason
    assert str(path) in str(info.value) and ":4:" in str(info.value)


def _csv_row(t: object, thermistor: object = 24.0, pixels: list | None = None) -> str:
    values = pixels if pixels is not None else [22.0] * 64
    return ",".join(str(v) for v in [t, thermistor, *values])


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        (_csv_row(5.0, pixels=[22.0] * 63), "expected 66 columns, got 65"),
        (_csv_row(5.0, pixels=[22.0] * 63 + ["warm"]), "p63 is not a number"),
        (_csv_row("x"), "t is not a number"),
        (_csv_row(5.0, thermistor="nan"), "thermistor is not finite"),
        (_csv_row(1.0), "t does not increase"),
    ],
)
def test_malformed_csv_names_line_and_reason(bad_row: str, reason: str) -> None:
    text = ",".join(CSV_HEADER) + "\n" + _csv_row(0.5) + "\n" + _csv_row(1.0) + "\n" + bad_row + "\n"
    with pytest.raises(RecordingError) as info:
        list(iter_csv(io.StringIO(text), "x.csv"))
    assert info.value.line == 4
    assert reason in info.value.reason


def test_csv_header_is_checked() -> None:
    with pytest.raises(RecordingError, match="header") as info:
        list(iter_csv(io.StringIO("t,thermistor,p1\n"), "x.csv"))
    assert info.value.line == 1
    with pytest.raises(RecordingError, match="empty"):
        list(iter_csv(io.StringIO(""), "x.csv"))


def test_writer_refuses_what_readers_reject() -> None:
    writer = RecordingWriter(io.StringIO())
    writer.write(make_frame(1.0, 24.0, np.zeros((8, 8))))
    with pytest.raises(ValueError, match="increase"):
        writer.write(make_frame(1.0, 24.0, np.zeros((8, 8))))
    with pytest.raises(ValueError, match="finite"):
        writer.write(make_frame(2.0, float("nan"), np.zeros((8, 8))))
    with pytest.raises(ValueError, match="8x8"):
        make_frame(3.0, 24.0, np.zeros((8, 7)))
