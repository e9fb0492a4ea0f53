"""`appliance calibrate`: from a recording of a simulated site (stored atomically, history kept,
the offset brings the estimate to the reference), refusals, and the live path over the bus."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.bus.topics import CalibrateParams, CalibrateResult
from appliance.cli import main
from appliance.screening import calstore
from appliance.sim.scenario import parse_scenario
from appliance.sim.suite import SessionPlan, record_session
from appliance.thermal.recording import write_recording

CORE_C = 36.9


def site_recording(path: Path, *, seed: int = 4242, core_c: float = CORE_C, person: bool = True) -> Path:
    """A kiosk with its own sensor offset (seeded), an empty room for 2.5 s, then a reference
    person on the floor mark for 6 s: what a technician records to calibrate."""
    people = [
        {"name": "ref", "enter": 2.5, "approach": 1.5, "dwell": 6.0, "leave": 1.0, "distance": 0.45,
         "core_temp": core_c, "sway": 0.005}
    ]  # fmt: skip
    scenario = parse_scenario(
        {
            "name": "calibration",
            "duration": 12.0,
            "loop": False,
            "seed": seed,
            "ambient": {"temperature": 23.0, "gradient": 0.5},
            "person": people if person else [],
        }
    )
    frames, _ = record_session(SessionPlan("calibration", seed, scenario))
    write_recording(path, frames)
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return site_recording(tmp_path_factory.mktemp("site") / "reference.jsonl")


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("APPLIANCE_CONFIG", "APPLIANCE_STATE_DIR", "APPLIANCE_RUN_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("appliance.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def calibrate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["calibrate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_recording_calibrates_the_site_and_the_offset_brings_the_estimate_to_the_reference(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, recording: Path
) -> None:
    state = tmp_path / "state"
    code, out, err = calibrate(capsys, "--reference", str(CORE_C), "--recording", str(recording),
                               "--state-dir", str(state))  # fmt: skip
    assert code == 0, err
    current, history = calstore.load(state)
    assert current is not None and history == []
    assert current.source == "recording:reference.jsonl"
    assert current.reference_c == CORE_C and current.frames == 50
    assert f"{current.offset_c:+.2f} °C" in out and str(state / "calibration.json") in out
    assert current.measured_c + current.offset_c == pytest.approx(CORE_C, abs=0.002)
    # The same person, screened by the kiosk with that calibration, reads the reference.
    assert main(["replay", str(recording), "--json", "--state-dir", str(state)]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()[:-1]]
    assert [r["result"] for r in results] == ["normal"]
    assert results[0]["estimate_c"] == pytest.approx(CORE_C, abs=0.25)


def test_each_calibration_keeps_the_previous_one_in_the_history(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, recording: Path
) -> None:
    state = tmp_path / "state"
    for reference in ("36.9", "37.1"):
        code, _, err = calibrate(capsys, "--reference", reference, "--recording", str(recording),
                                 "--state-dir", str(state))  # fmt: skip
        assert code == 0, err
    current, history = calstore.load(state)
    assert current is not None and current.reference_c == 37.1
    assert [h.reference_c for h in history] == [36.9]
    assert current.offset_c == pytest.approx(history[0].offset_c + 0.2, abs=0.002)


def test_the_store_is_replaced_atomically(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    assert (
        calibrate(capsys, "--reference", "36.9", "--recording", str(recording), "--state-dir", str(state))[0]
        == 0
    )
    before = (state / "calibration.json").read_bytes()

    def power_cut(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError):
        main(["calibrate", "--reference", "37.3", "--recording", str(recording), "--state-dir", str(state)])
    assert (state / "calibration.json").read_bytes() == before
    assert [p.name for p in state.iterdir()] == ["calibration.json"]  # no temporary left behind


@pytest.mark.parametrize(
    ("reference", "message"),
    [("30.0", "not a person's core temperature"), ("42.4", "exceeds")],
)
def test_implausible_references_and_offsets_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, recording: Path, reference: str, message: str
) -> None:
    state = tmp_path / "state"
    code, _, err = calibrate(
        capsys, "--reference", reference, "--recording", str(recording), "--state-dir", str(state)
    )
    assert code == 1
    assert message in err
    assert not (state / "calibration.json").exists()


def test_a_recording_without_anyone_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = site_recording(tmp_path / "empty.jsonl", person=False)
    code, _, err = calibrate(
        capsys, "--reference", "36.8", "--recording", str(empty), "--state-dir", str(tmp_path)
    )
    assert code == 1 and "no target" in err


def test_a_malformed_recording_names_its_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0.1, "thermistor": 23.0, "pixels": []}\n')
    code, _, err = calibrate(
        capsys, "--reference", "36.8", "--recording", str(bad), "--state-dir", str(tmp_path)
    )
    assert code == 2 and f"{bad}:1:" in err


def config_with_socket(tmp_path: Path, socket: Path) -> Path:
    config = tmp_path / "appliance.toml"
    config.write_text(f'[bus]\nsocket = "{socket}"\nallowed_groups = []\n')
    return config


def short_socket() -> Path:
    # A Unix socket path must fit in 108 bytes; pytest's tmp_path may not.
    return Path(tempfile.mkdtemp(prefix="cal-", dir="/tmp")) / "bus.sock"


def test_live_without_a_bus_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = config_with_socket(tmp_path, tmp_path / "nobody.sock")
    code, _, err = calibrate(capsys, "--reference", "36.8", "--config", str(config))
    assert code == 1 and "no bus at" in err and "nobody.sock" in err


def test_live_refuses_a_state_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = calibrate(capsys, "--reference", "36.8", "--state-dir", str(tmp_path))
    assert code == 2 and "--recording" in err


async def test_live_asks_the_screening_daemon_over_the_bus(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:  # fmt: skip
    socket = short_socket()
    broker = Broker()
    await broker.start(socket)
    seen: list[CalibrateParams] = []

    async def calibrate_handler(params: CalibrateParams) -> CalibrateResult:
        seen.append(params)
        return CalibrateResult(offset_c=-0.35, measured_c=params.reference_c + 0.35, frames=params.frames)

    server = BusClient(socket, "screening")
    try:
        await server.connect(timeout=5)
        config = config_with_socket(tmp_path, socket)
        argv = ["calibrate", "--reference", "36.8", "--frames", "30", "--config", str(config)]
        # Nothing served yet: the daemon is not running.
        assert await asyncio.to_thread(main, argv) == 1
        assert "is appliance-screening running" in capsys.readouterr().err
        server.serve("screening.calibrate", calibrate_handler)
        await asyncio.sleep(0.05)
        assert await asyncio.to_thread(main, argv) == 0
        out = capsys.readouterr().out
        assert seen == [CalibrateParams(reference_c=36.8, frames=30)]
        assert "-0.35 °C" in out and "37.15 °C" in out and "30 frames" in out
    finally:
        await server.close()
        await broker.close()
