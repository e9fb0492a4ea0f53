"""`appliance thermal record`: what the bus carries goes into a valid recording, or nothing is written.

A real broker in the test's loop and a test publisher playing the thermal daemon with exactly known frames;
the command itself runs on its own thread with its own event loop, as `appliance` would run it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.bus.topics import Health, ThermalFrame, ThermalStatus
from appliance.thermal import record
from appliance.thermal.recording import read_recording


def config_file(directory: Path, run_dir: Path) -> Path:
    path = directory / "appliance.toml"
    path.write_text(
        f'[paths]\nrun_dir = "{run_dir}"\nstate_dir = "{run_dir}"\n\n[bus]\nallowed_groups = []\n'
    )
    return path


def args(seconds: float, out: Path | str, config: Path) -> argparse.Namespace:
    return argparse.Namespace(seconds=seconds, out=str(out), config=str(config))


def pixels_for(seq: int) -> list[float]:
    """A frame nobody could mistake for another: a ramp, shifted by the frame number, on the 0.25 grid."""
    return [20.0 + 0.25 * ((i + seq) % 40) for i in range(64)]


@dataclass
class Bus:
    run_dir: Path
    config: Path
    client: BusClient


@pytest.fixture
async def bus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    run_dir = tmp_path_factory.mktemp("rec")
    sock = run_dir / "bus.sock"
    assert len(str(sock)) < 100
    broker = Broker()
    await broker.start(sock)
    client = BusClient(sock, "thermal")
    await client.connect(10)
    try:
        yield Bus(run_dir, config_file(run_dir, run_dir), client)
    finally:
        await client.close()
        await broker.close()


async def publish_frames(client: BusClient, period: float, skip_every: int = 0) -> None:
    """Play the thermal daemon: frames with known content, frame_seq counting (every n-th one lost)."""
    seq = 0
    while True:
        seq += 1
        if not (skip_every and seq % skip_every == 0):
            frame = ThermalFrame(
                pixels=pixels_for(seq), thermistor=24.0 + seq / 16, rate_hz=20.0, frame_seq=seq
            )
            await client.publish("thermal.frame", frame)
        await asyncio.sleep(period)


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


async def test_records_what_the_bus_carries(bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    await bus.client.publish("thermal.status", ThermalStatus(state="ok", rate_hz=20.0))
    out = bus.run_dir / "frames.jsonl"
    publisher = asyncio.get_running_loop().create_task(publish_frames(bus.client, 0.05, skip_every=10))
    try:
        code = await asyncio.to_thread(record.main, args(1.0, out, bus.config))
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
    assert code == 0
    frames = list(read_recording(out))
    assert 14 <= len(frames) <= 20  # 1.0 s at 20 fps, both ends included, every 10th never sent
    assert frames[0].t == 0.0 and frames[-1].t <= 1.0
    assert all(b.t > a.t for a, b in itertools.pairwise(frames))
    # Every line is exactly a frame that was published, in order (the thermistor tells which).
    seqs = [round((f.thermistor - 24.0) * 16) for f in frames]
    assert seqs == sorted(seqs) and all(seq % 10 for seq in seqs)
    for frame, seq in zip(frames, seqs, strict=True):
        assert frame.thermistor == 24.0 + seq / 16
        np.testing.assert_array_equal(frame.pixels.reshape(64), pixels_for(seq))  # row-major, row 0 first
    # t is from the first frame, on the daemon's clock: 20 fps means 0.05 s steps.
    steps = np.diff([f.t for f in frames])
    assert float(np.median(steps)) == pytest.approx(0.05, abs=0.02)
    captured = capsys.readouterr()
    assert f"{out}: {len(frames)} frames" in captured.out
    missing = sum(1 for seq in range(seqs[0], seqs[-1]) if seq % 10 == 0)
    assert missing >= 1 and f"{missing} frame(s) missing" in captured.err
    assert leftovers(bus.run_dir) == []
    assert (out.stat().st_mode & 0o777) == 0o644


def test_no_bus_says_so_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = tmp_path / "never.jsonl"
    started = time.monotonic()
    assert record.main(args(5.0, out, config_file(tmp_path, run_dir))) == 1
    assert time.monotonic() - started < 2.0  # no waiting for a socket that does not exist
    err = capsys.readouterr().err
    assert "nothing recorded" in err and f"no bus socket at {run_dir / 'bus.sock'}" in err
    assert "appliance run thermal" in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_dead_socket_file_is_not_a_bus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(run_dir / "bus.sock"))  # bound, never listening: what a crashed broker leaves
    stale.close()
    out = tmp_path / "never.jsonl"
    assert record.main(args(5.0, out, config_file(tmp_path, run_dir))) == 1
    assert "nothing listens on" in capsys.readouterr().err
    assert not out.exists()


async def test_bus_without_thermal_daemon(
    bus: Bus, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record, "FIRST_FRAME_TIMEOUT_S", 0.5)
    out = bus.run_dir / "never.jsonl"
    assert await asyncio.to_thread(record.main, args(5.0, out, bus.config)) == 1
    err = capsys.readouterr().err
    assert "no thermal.frame within 0.5 s and no thermal daemon on the bus" in err
    assert not out.exists() and leftovers(bus.run_dir) == []


async def test_daemon_with_a_faulty_sensor(
    bus: Bus, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record, "FIRST_FRAME_TIMEOUT_S", 0.5)
    health = Health(daemon="thermal", state="degraded", pid=1, started_ts=0.0, status="fault")
    await bus.client.publish("health.thermal", health)
    await bus.client.publish("thermal.status", ThermalStatus(state="fault", reason="I2C read of 0x80 failed"))
    out = bus.run_dir / "never.jsonl"
    assert await asyncio.to_thread(record.main, args(5.0, out, bus.config)) == 1
    assert "reports a sensor fault: I2C read of 0x80 failed" in capsys.readouterr().err
    assert not out.exists()


async def test_interrupted_recording_leaves_the_old_file(bus: Bus) -> None:
    out = bus.run_dir / "kept.jsonl"
    out.write_text("the previous recording\n")
    publisher = asyncio.get_running_loop().create_task(publish_frames(bus.client, 0.05))
    task = asyncio.get_running_loop().create_task(record.record(Path(bus.client.path), 10.0, out))
    try:
        await asyncio.sleep(0.6)
        assert leftovers(bus.run_dir)  # frames are streaming into the temporary file...
        task.cancel()  # ...when Ctrl-C comes (asyncio.run cancels the main task the same way)
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
    assert out.read_text() == "the previous recording\n"
    assert leftovers(bus.run_dir) == []


@pytest.mark.parametrize(
    ("seconds", "out", "message"),
    [
        (0.0, "a.jsonl", "--seconds must be more than 0"),
        (-3.0, "a.jsonl", "--seconds must be more than 0"),
        (math.nan, "a.jsonl", "--seconds must be more than 0"),
        (1e9, "a.jsonl", "at most 86400"),
        (1.0, "a.csv", "written as JSONL"),
        (1.0, "missing/a.jsonl", "does not exist"),
        (1.0, ".", "is a directory"),
    ],
)
def test_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seconds: float, out: str, message: str
) -> None:
    target = tmp_path / out
    assert record.main(args(seconds, target, config_file(tmp_path, tmp_path))) == 2
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["appliance.toml"]


def test_bad_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[thermal]\nidle_fps = 3\n")
    assert record.main(args(1.0, tmp_path / "a.jsonl", bad)) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "thermal.idle_fps" in err
