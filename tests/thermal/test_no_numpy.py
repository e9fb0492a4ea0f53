"""numpy stays out of the thermal daemon's process: it cost the AMG8833 sampler about 12 MB of RSS
(issue 8's memory budget) for 64 numbers ten times a second.

Each test runs in a fresh interpreter, as `appliance run thermal` does (appliance.daemons.prepare
first), and asserts that numpy was never imported: on import, while sampling the simulated sensor
(scene, register-level fake, driver, policy) for a few frames, on the real backend's path, and in the
recorder. That the plain-Python code computes what the numpy code did is test_golden.py's job."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from thermal_toml import config_toml  # tests/thermal/thermal_toml.py

REPO = Path(__file__).resolve().parents[2]


def run_fresh(script: str) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\nfrom appliance.daemons import prepare\nprepare('thermal')\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NUMPY-FREE" in result.stdout, result.stdout + result.stderr


def test_importing_the_thermal_daemon_does_not_import_numpy() -> None:
    assert_ok(
        run_fresh(
            """
            import appliance.thermal.daemon
            assert "numpy" not in sys.modules, "importing the thermal daemon imported numpy"
            print("NUMPY-FREE")
            """
        )
    )


def test_sampling_the_simulated_sensor_does_not_import_numpy(tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text(config_toml(tmp_path, "demo", base={}, backend='"sim"', warmup_s=0.0, idle_fps=10))
    script = f"""
        import asyncio
        from appliance.config import load_config
        from appliance.thermal.daemon import ThermalSampler
        from appliance.thermal.backend import open_hardware

        class Bus:
            def __init__(self):
                self.frames = []
                self.topics = set()

            async def publish(self, topic, msg, ts=None):
                self.topics.add(topic)
                if topic == "thermal.frame":
                    self.frames.append(msg)

        async def main():
            config = load_config({str(config)!r})
            bus = Bus()
            hardware = open_hardware(config)
            sampler = ThermalSampler(bus, hardware, config.thermal)
            sampler.attach_interrupt()
            clock = asyncio.create_task(sampler.run_sim_clock(hardware.tick))
            await sampler.start()
            run = asyncio.create_task(sampler.run())
            async with asyncio.timeout(60):
                while len(bus.frames) < 5:
                    await asyncio.sleep(0.05)
            run.cancel()
            clock.cancel()
            sampler.close()
            hardware.close()
            frame = bus.frames[-1]
            assert len(frame.pixels) == 64 and all(type(v) is float for v in frame.pixels), frame
            assert -20.0 <= min(frame.pixels) and max(frame.pixels) <= 100.0, frame.pixels
            sampler.status_text()

        asyncio.run(main())
        assert "numpy" not in sys.modules, "sampling the simulated sensor imported numpy"
        print("NUMPY-FREE")
    """
    assert_ok(run_fresh(script))


def test_the_real_backend_and_the_recorder_do_not_import_numpy(tmp_path: Path) -> None:
    """The amg8833 backend up to the bus (there is no chip here), and the recorder's file format."""
    config = tmp_path / "appliance.toml"
    config.write_text(config_toml(tmp_path, "demo", base={}, backend='"amg8833"', warmup_s=0.0, idle_fps=10))
    out = tmp_path / "rec.jsonl"
    script = f"""
        import io
        from appliance.config import load_config
        from appliance.errors import SensorFault
        from appliance.thermal import record
        from appliance.thermal.jsonl import FrameWriter
        from appliance.thermal.backend import open_hardware
        from appliance.thermal.amg8833 import AMG8833
        import appliance.thermal.daemon

        hardware = open_hardware(load_config({str(config)!r}))
        try:
            hardware.connect()
        except SensorFault:
            pass  # no /dev/i2c-1 here
        hardware.close()
        with record.atomic_stream(__import__("pathlib").Path({str(out)!r})) as stream:
            writer = FrameWriter(stream)
            writer.write(0.0, 24.0625, [22.0 + i * 0.1 for i in range(64)])
        assert "numpy" not in sys.modules, "the real backend or the recorder imported numpy"
        print("NUMPY-FREE")
    """
    assert_ok(run_fresh(script))
