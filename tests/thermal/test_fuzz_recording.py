"""Recordings with garbage in them, through the reader and through `appliance replay` and
`appliance calibrate --recording`: frames or RecordingError naming the file and a line that
exists (exit 2 and that line for the commands), never another exception or a traceback; an
enormous line is refused without being read whole."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.cli import main
from appliance.errors import RecordingError
from appliance.sim.scenario import parse_scenario
from appliance.sim.suite import SessionPlan, record_session
from appliance.thermal.recording import (
    CSV_HEADER,
    MAX_LINE,
    bounded_lines,
    iter_csv,
    iter_jsonl,
    make_frame,
    read_recording,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def base_frames(n: int = 5) -> list[tuple[float, float, list[list[float]]]]:
    rng = np.random.default_rng(7)
    return [
        (round(0.1 * (i + 1), 4), 24.0 + i * 0.0625, (np.round(rng.uniform(20, 37, (8, 8)) * 4) / 4).tolist())
        for i in range(n)
    ]


def jsonl_text(frames: list[tuple[float, float, list[list[float]]]]) -> str:
    return "".join(make_frame(t, th, px).to_json() + "\n" for t, th, px in frames)


def csv_text(frames: list[tuple[float, float, list[list[float]]]]) -> str:
    rows = [",".join(CSV_HEADER)]
    rows += [",".join(str(v) for v in [t, th, *np.ravel(px).tolist()]) for t, th, px in frames]
    return "\n".join(rows) + "\n"


# JSON that json.dumps would not write: spliced in as text.
ODD_NUMBERS = [
    *("NaN", "Infinity", "-Infinity", "1e400", "-1e999", "9" * 400, "9" * 5000, "1e39", "-3.5e38"),
    *("1e30", "-1e30", "1e308", "5e-324", "-0.0", "0"),
]
odd_json = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.sampled_from(['"24.0"', "true", "null", "[]", "{}", "[[1]]", '"' + "x" * 100 + '"']),
    st.sampled_from([2, 50, 3000]).map(lambda d: "[" * d + "]" * d),
)


@st.composite
def mutated_frame_line(draw: st.DrawFn, t: float) -> str:
    """One frame's JSON with a field made wrong: type, value, count, presence."""
    obj: dict[str, object] = {"t": t, "thermistor": 24.0, "pixels": [[22.0] * 8 for _ in range(8)]}
    raws: dict[str, str] = {}
    op = draw(st.integers(0, 6))
    if op == 0:
        del obj[draw(st.sampled_from(["t", "thermistor", "pixels"]))]
    elif op == 1:
        obj[draw(st.sampled_from(["extra", "T", ""]))] = 1
    elif op == 2:  # a row too short or too long, or a row count off
        rows = obj["pixels"]
        assert isinstance(rows, list)
        if draw(st.booleans()):
            rows[draw(st.integers(0, 7))] = [22.0] * draw(st.sampled_from([0, 7, 9, 64]))
        else:
            obj["pixels"] = rows[: draw(st.sampled_from([0, 1, 7]))] + (
                [[22.0] * 8] if draw(st.booleans()) else []
            )
    else:  # a value of the wrong kind, at the top or in a pixel
        key = draw(st.sampled_from(["t", "thermistor", "pixel"]))
        text = draw(odd_json)
        marker = "__odd__"
        raws[marker] = text
        if key == "pixel":
            rows = obj["pixels"]
            assert isinstance(rows, list)
            rows[draw(st.integers(0, 7))][draw(st.integers(0, 7))] = marker
        else:
            obj[key] = marker
    line = json.dumps(obj)
    for marker, text in raws.items():
        line = line.replace(f'"{marker}"', text)
    return line


def absurd(line: bytes, csv: bool, field: str, value: float) -> bytes:
    """One frame's line with a field scaled, shifted or set to value (other lines as they are)."""
    try:
        text = line.decode()
        parsed = list(iter_csv([",".join(CSV_HEADER), text]) if csv else iter_jsonl([text]))
    except (RecordingError, UnicodeDecodeError):
        return line
    if len(parsed) != 1:
        return line  # the header, or a blank line
    t, thermistor, pixels = parsed[0].t, parsed[0].thermistor, parsed[0].pixels.astype(float).tolist()
    if field == "t*":
        t *= value
    elif field == "t+":
        t += value
    elif field == "thermistor":
        thermistor = value
    elif field == "pixels":
        pixels = [[value] * 8 for _ in range(8)]
    else:
        pixels[3][4] = value
    if csv:
        return ",".join(repr(float(v)) for v in [t, thermistor, *np.ravel(pixels).tolist()]).encode()
    return json.dumps({"t": t, "thermistor": thermistor, "pixels": pixels}).encode()


@st.composite
def mutated_recording(draw: st.DrawFn, csv: bool, base: str | None = None) -> bytes:
    """A recording (base, else five frames of random pixels) mutated one to three times."""
    if base is None:
        frames = base_frames()
        base = csv_text(frames) if csv else jsonl_text(frames)
    data = base.encode()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from([0, 1, 2, 2, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 11, 11]))
        lines = data.split(b"\n")
        if op == 0 and data:  # truncated
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif op == 1 and data:  # bit flips
            buf = bytearray(data)
            for _ in range(draw(st.integers(1, 8))):
                buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
            data = bytes(buf)
        elif op == 2:  # a line replaced by a broken frame
            i = draw(st.integers(0, len(lines) - 1))
            if csv:
                cells = [str(c) for c in [0.35, 24.0, *([22.0] * 64)]]
                cell = draw(st.integers(0, len(cells) - 1))
                cells[cell] = draw(st.sampled_from([*ODD_NUMBERS, "nan", "inf", "", "x", '"1', "1e-400"]))
                if draw(st.booleans()):
                    cells = cells[: draw(st.integers(0, 70))]
                lines[i] = ",".join(cells).encode()
            else:
                lines[i] = draw(mutated_frame_line(0.35)).encode()
            data = b"\n".join(lines)
        elif op == 3:  # binary junk in a line, or as the whole file
            junk = draw(st.binary(min_size=1, max_size=200))
            if draw(st.booleans()):
                data = junk
            else:
                lines.insert(draw(st.integers(0, len(lines))), junk)
                data = b"\n".join(lines)
        elif op == 4:  # an enormous line
            size = MAX_LINE + draw(st.sampled_from([1, 2, 1000]))
            filler = draw(st.sampled_from([b"x", b" ", b"[", b"9", b"\xc3\xa9"]))
            lines.insert(draw(st.integers(0, len(lines))), (filler * size)[: size + 1])
            data = b"\n".join(lines)
        elif op == 5:
            data = b""
        elif op == 6 and len(lines) > 2:  # time going backwards, or a line repeated
            i = draw(st.integers(1, len(lines) - 2))
            lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
            data = b"\n".join(lines)
        elif op == 7:  # odd characters where a spreadsheet or an editor puts them
            extra = draw(st.sampled_from([b"\xef\xbb\xbf", b"\x00", b"\r", b"\r\n", b"\t", b'"']))
            at = draw(st.integers(0, len(data)))
            data = data[:at] + extra + data[at:]
        elif op == 8:  # a JSON value that is not a frame
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] = draw(st.sampled_from([b"[1, 2]", b"null", b'"frame"', b"{}", b"1e999", b"{" * 3000]))
            data = b"\n".join(lines)
        elif op == 9:  # text that is not UTF-8 inside a line
            i = draw(st.integers(0, len(lines) - 1))
            at = draw(st.integers(0, len(lines[i])))
            bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]))
            lines[i] = lines[i][:at] + bad + lines[i][at:]
            data = b"\n".join(lines)
        elif op == 11:  # every frame absurd in the same way: what the screening machine meets
            field = draw(st.sampled_from(["t*", "t+", "thermistor", "pixels", "pixel"]))
            value = draw(st.sampled_from([1e300, 1e-300, 1e30, -1e30, 1000.0, -273.15, 0.0, 5e-324]))
            data = b"\n".join(absurd(line, csv, field, value) for line in lines)
        else:  # harmless: a blank line, trailing blanks, Windows line ends
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] += draw(st.sampled_from([b"", b" ", b"\r", b"\n"]))
            data = b"\n".join(lines)
    return data


def refused_with_peak(path: Path) -> tuple[RecordingError, int]:
    """The error reading the recording raises, and the most memory the read held at once."""
    tracemalloc.start()
    try:
        with pytest.raises(RecordingError) as info:
            list(read_recording(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return info.value, peak


def check_read(path: Path, data: bytes) -> list[object]:
    """The reader's whole contract on one file."""
    path.write_bytes(data)
    try:
        frames = list(read_recording(path))
    except RecordingError as exc:
        assert exc.source == str(path)
        assert 1 <= exc.line <= len(re.split(rb"\r\n|\r|\n", data)), (exc.line, exc)
        assert f"{path}:{exc.line}: " in str(exc)
        return []
    last = -math.inf
    for f in frames:
        assert math.isfinite(f.t) and f.t > last
        last = f.t
        assert math.isfinite(f.thermistor)
        assert f.pixels.shape == (8, 8) and f.pixels.dtype == np.float32
        assert np.isfinite(f.pixels).all()
    return list(frames)


@FUZZ
@given(data=mutated_recording(csv=False))
def test_a_mutated_jsonl_recording_reads_or_names_its_line(tmp_path: Path, data: bytes) -> None:
    check_read(tmp_path / "fuzz.jsonl", data)


@FUZZ
@given(data=mutated_recording(csv=True))
def test_a_mutated_csv_recording_reads_or_names_its_line(tmp_path: Path, data: bytes) -> None:
    check_read(tmp_path / "fuzz.csv", data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".jsonl", ".csv", ".txt"]))
def test_random_bytes_read_or_name_their_line(tmp_path: Path, data: bytes, suffix: str) -> None:
    check_read(tmp_path / f"junk{suffix}", data)


def test_the_mutations_are_not_all_refused_the_same_way(tmp_path: Path) -> None:
    """The properties above would pass vacuously if every mutation broke line 1."""
    outcomes: set[str] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(data=mutated_recording(csv=False))
    def collect(data: bytes) -> None:
        path = tmp_path / "c.jsonl"
        path.write_bytes(data)
        try:
            n = len(list(read_recording(path)))
            outcomes.add("read" if n else "empty")
        except RecordingError as exc:
            outcomes.add(exc.reason.split(":")[0].split(" is ")[-1][:20])

    collect()
    assert {"read", "empty", "not valid JSON", "not a number", "missing key(s)"} <= outcomes, outcomes
    assert len(outcomes) >= 10, outcomes


# Regressions: each escaped the reader as another exception, or read as a frame of inf.
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"t": 1, "thermistor": ' + "9" * 400 + ', "pixels": []}', "thermistor is out of range"),  # Overflow
        ('{"t": 1, "thermistor": ' + "9" * 5000 + "}", "not valid JSON"),  # ValueError: 4300 digits
        ('{"t": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),  # RecursionError
        ('{"t": 1, "thermistor": 24, "pixels": ' + json.dumps([[1e39] * 8] * 8) + "}", "out of range"),
    ],
)
def test_jsonl_values_that_escaped_the_reader(line: str, reason: str) -> None:
    with pytest.raises(RecordingError) as info:
        list(iter_jsonl([line], "r.jsonl"))
    assert reason in info.value.reason and info.value.line == 1


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("\n1,1," + ",".join(["1e39"] * 64) + "\n", 2, "p0 is out of range"),
        ('\n"' + "x" * 200_000 + '"\n', 2, "not valid CSV"),  # csv.Error: field larger than the limit
    ],
)
def test_csv_that_escaped_the_reader(text: str, line: int, reason: str) -> None:
    header = ",".join(CSV_HEADER)
    with pytest.raises(RecordingError) as info:
        list(iter_csv(io.StringIO(header + text), "r.csv"))
    assert reason in info.value.reason and info.value.line >= line


def test_bytes_that_are_not_utf8_are_named_by_their_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = jsonl_text(base_frames(3)).encode()
    path.write_bytes(good + b'{"t": 9, "thermistor": "\xff"}\n')  # UnicodeDecodeError before
    with pytest.raises(RecordingError) as info:
        list(read_recording(path))
    assert info.value.line == 4 and "not UTF-8" in info.value.reason


def test_a_spreadsheets_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text(base_frames(2)).encode())
    assert len(list(read_recording(path))) == 2


def test_an_enormous_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    size = 64 * 1024 * 1024
    with path.open("wb") as fh:
        fh.write(jsonl_text(base_frames(2)).encode())
        fh.write(b'{"t": 3, "pixels": "')
        fh.write(b"x" * size)
        fh.write(b'"}\n')
    error, peak = refused_with_peak(path)
    assert error.line == 3 and "longer than" in error.reason
    assert peak < 2 * 1024 * 1024, f"{peak} bytes allocated reading a {size}-byte line"


def test_a_csv_row_spread_over_many_short_lines_is_refused_without_holding_it(tmp_path: Path) -> None:
    # Quoted fields may hold newlines, so one CSV row can run over any number of lines, each
    # of them short: the line limit alone let the reader collect millions of cells.
    path = tmp_path / "quotes.csv"
    good = csv_text(base_frames(2))
    with path.open("w", newline="") as fh:
        fh.write(good)
        fh.write('"a' + '\n","a' * 1_000_000 + '"\n')
    error, peak = refused_with_peak(path)
    first = good.count("\n") + 1  # the line the runaway row starts on
    assert error.line == first and "longer than" in error.reason, error
    assert peak < 2 * 1024 * 1024, f"{peak} bytes allocated reading a {path.stat().st_size}-byte file"


def test_bounded_lines_counts_and_limits() -> None:
    text = "a\n\n" + "b" * MAX_LINE + "\n" + "c" * (MAX_LINE + 1)
    lines = bounded_lines(io.StringIO(text, newline=""), "s")
    assert [next(lines), next(lines)] == ["a\n", "\n"]
    with pytest.raises(RecordingError) as info:
        list(lines)
    assert info.value.line == 3  # MAX_LINE characters and a newline is one too many


# --- through the commands ----------------------------------------------------------------------


def site_text(csv: bool) -> str:
    """Six simulated seconds: an empty scene, then a person at the mark: results to replay and
    a target to calibrate on, so the mutations meet the whole pipeline, not just the reader."""
    person = {"name": "p", "enter": 1.5, "approach": 1.0, "dwell": 3.0, "leave": 0.5, "distance": 0.45}
    scenario = parse_scenario(
        {
            "name": "fuzz",
            "duration": 6.0,
            "loop": False,
            "seed": 4242,
            "ambient": {"temperature": 23.0, "gradient": 0.5},
            "person": [{**person, "core_temp": 36.9, "sway": 0.005}],
        }
    )
    frames, _ = record_session(SessionPlan("fuzz", 4242, scenario))
    triples = [(f.t, f.thermistor, f.pixels.tolist()) for f in frames]
    return csv_text(triples) if csv else jsonl_text(triples)


SITE = {False: site_text(False), True: site_text(True)}


@pytest.fixture
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("APPLIANCE_CONFIG", "APPLIANCE_STATE_DIR", "APPLIANCE_RUN_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("appliance.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def run_cli(*argv: str) -> tuple[int, str, str]:
    """The command in this process: an exception it lets out fails the test, as a traceback
    would fail a technician."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def check_command_outcome(path: Path, data: bytes, code: int, err: str, ok: set[int]) -> None:
    assert code in ok | {2}, (code, err)
    assert "Traceback" not in err
    if code == 2:
        m = re.search(rf"malformed recording: {re.escape(str(path))}:(\d+): ", err)
        assert m, err
        assert 1 <= int(m.group(1)) <= len(re.split(rb"\r\n|\r|\n", data))


CLI_FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@CLI_FUZZ
@given(data=st.booleans().flatmap(lambda csv: st.tuples(st.just(csv), mutated_recording(csv, SITE[csv]))))
def test_replay_of_a_mutated_recording_exits_0_or_2_with_the_line(
    tmp_path: Path, no_ambient_config: None, data: tuple[bool, bytes]
) -> None:
    csv, raw = data
    path = tmp_path / ("site.csv" if csv else "site.jsonl")
    path.write_bytes(raw)
    code, out, err = run_cli("replay", str(path), "--json")
    check_command_outcome(path, raw, code, err, {0})
    if code == 0:
        assert json.loads(out.splitlines()[-1])["summary"]["recording"] == str(path)


@CLI_FUZZ
@given(data=st.booleans().flatmap(lambda csv: st.tuples(st.just(csv), mutated_recording(csv, SITE[csv]))))
def test_calibrate_from_a_mutated_recording_exits_0_1_or_2_with_the_line(
    tmp_path: Path, no_ambient_config: None, data: tuple[bool, bytes]
) -> None:
    csv, raw = data
    path = tmp_path / ("site.csv" if csv else "site.jsonl")
    path.write_bytes(raw)
    state = tmp_path / "state"
    code, _, err = run_cli(
        "calibrate", "--reference", "36.9", "--recording", str(path), "--state-dir", str(state)
    )
    check_command_outcome(path, raw, code, err, {0, 1})


def test_the_site_recording_replays_and_calibrates(tmp_path: Path, no_ambient_config: None) -> None:
    """The unmutated base works, so the mutated runs above do reach past the reader."""
    path = tmp_path / "site.jsonl"
    path.write_text(SITE[False])
    code, out, err = run_cli("replay", str(path), "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["summary"]["people"] == 1
    code, _, err = run_cli(
        "calibrate", "--reference", "36.9", "--recording", str(path), "--state-dir", str(tmp_path)
    )
    assert code == 0, err


@pytest.mark.parametrize("command", ["replay", "calibrate"])
def test_files_that_are_not_recordings_exit_2(tmp_path: Path, no_ambient_config: None, command: str) -> None:
    cases = {
        "empty.jsonl": b"",
        "empty.csv": b"",
        "binary.jsonl": bytes(range(256)) * 4,
        "latin1.csv": ",".join(CSV_HEADER).encode() + b"\n1,caf\xe9\n",
    }
    for name, raw in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        args = (
            [str(path), "--json"]
            if command == "replay"
            else ["--reference", "36.9", "--recording", str(path)]
        )
        code, _, err = run_cli(
            command, *args, *(["--state-dir", str(tmp_path)] if command == "calibrate" else [])
        )
        if raw or name.endswith(".csv"):  # a CSV file needs its header
            assert code == 2 and f"{path}:" in err, (name, code, err)
        else:  # an empty JSONL file is a recording of nothing
            assert code == (0 if command == "replay" else 1), (name, code, err)
    directory = tmp_path / "dir.jsonl"
    directory.mkdir()
    args = [str(directory)] if command == "replay" else ["--reference", "36.9", "--recording", str(directory)]
    code, _, err = run_cli(command, *args)
    assert code == 2 and str(directory) in err, err  # IsADirectoryError escaped calibrate


@pytest.mark.slow
def test_replay_of_an_enormous_line_stays_small(tmp_path: Path) -> None:
    """`appliance replay` as its own process on a file with a 256 MB line: exit 2 naming the
    line, and the process's peak RSS close to a run on a small recording (os.wait4 gives the
    child's own peak)."""
    small = tmp_path / "small.jsonl"
    small.write_text(SITE[False])
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as fh:
        fh.write(SITE[False].encode())
        chunk = b"9" * (1024 * 1024)
        for _ in range(256):
            fh.write(chunk)
        fh.write(b"\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    (tmp_path / "appliance.toml").write_text("")
    env["APPLIANCE_CONFIG"] = str(tmp_path / "appliance.toml")

    def peak_kb(path: Path) -> tuple[int, str, int]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "replay", str(path), "--json", "--state-dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode, err, usage.ru_maxrss

    code, err, base = peak_kb(small)
    assert code == 0, err
    code, err, peak = peak_kb(huge)
    lines = SITE[False].count("\n") + 1
    assert code == 2 and f"{huge}:{lines}: line longer than" in err and "Traceback" not in err, err
    assert peak - base < 16 * 1024, f"peak RSS {peak} kB against {base} kB for a small recording"
