"""The thermal daemon's path run end to end on a fixed seed and scenario, for the golden comparison.

`compute()` drives what the daemon drives, without its event loop: the sim scene (ThermalScene) renders
the scenario, the register-level FakeAMG8833 samples it, the real AMG8833 driver reads it twice per frame
period, SamplingPolicy decides rates and interrupt levels, the driver applies them, and each new frame
goes through the recorder's JSONL formatting. It also records one session of the screening corpus
(appliance/sim/suite.py). test_golden.py compares the result with tests/thermal/data/golden.json, which
was written by this module from the numpy implementation these modules had before they became plain
Python: exact equality proves the rewrite changed no number.

How the file was made (before the change, with the numpy modules): compute() with
`lambda scenario, seed: ThermalScene(scenario, seed=seed)` and `FakeAMG8833` as the factories (each
seeded its own numpy Generator then), `make_frame(t, thermistor, np.reshape(pixels, (8, 8))).to_json()`
as the line, and suite.record_session(plan_suite("test", min_people=1)[0]) as the corpus session,
dumped with json.dump(..., separators=(",", ":")).

The random streams (the scene's texture, the fake's offsets and noise) come from numpy's Generator here,
injected, so that they are the streams the numpy implementation drew; the daemon's sim uses a pure-Python
source of the same distributions instead (see fake_amg8833.py).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable
from importlib import resources
from typing import Any

from appliance.errors import SensorFault
from appliance.sim.scenario import Scenario, parse_scenario
from appliance.thermal import registers as reg
from appliance.thermal.amg8833 import AMG8833, InterruptConfig, InterruptMode
from appliance.thermal.fake_amg8833 import FakeAMG8833, FakeI2C, ManualClock
from appliance.thermal.sampler import SamplingPolicy

SEED = 3
POLL_S = 0.05
DURATION_S = 185.0
FIELD_EVERY = 100  # polls: a rendered field every 5 s


def scenario() -> Scenario:
    """The demo, plus a radiator that never cools (a fixture) and every kind of sensor fault."""
    ref = resources.files("appliance.sim") / "scenarios" / "demo.toml"
    data: dict[str, Any] = tomllib.loads(ref.read_text(encoding="utf-8"))
    data["object"] = [
        *data.get("object", []),
        {
            "name": "radiator",
            "enter": 75.0,
            "exit": 170.0,
            "distance": 1.5,
            "lateral": -0.9,
            "height": -0.6,
            "width": 0.4,
            "tall": 0.3,
            "temperature": 45.0,
            "cooling_minutes": None,
        },
    ]
    data["fault"] = [
        {"kind": "i2c_error", "start": 70.0, "duration": 0.3},
        {"kind": "stuck_frames", "start": 100.0, "duration": 2.0},
        {"kind": "out_of_range", "start": 140.0, "duration": 0.25},
    ]
    return parse_scenario(data, "golden")


def flat(values: Any) -> list[float]:
    """64 floats, row-major, from whatever the code under test returned (an 8x8 array or 64 values)."""
    if hasattr(values, "reshape"):
        values = values.reshape(-1)
    out: list[float] = []
    for v in values:
        if isinstance(v, list | tuple):
            out.extend(float(x) for x in v)
        else:
            out.append(float(v))
    return out


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()


def compute(
    make_scene: Callable[[Scenario, int], Any],
    make_device: Callable[..., FakeAMG8833],
    to_json: Callable[[float, float, list[float]], str],
    record_suite_session: Callable[[], list[tuple[float, float, list[float]]]],
) -> dict[str, Any]:
    sc = scenario()
    clock = ManualClock(0.0)
    scene = make_scene(sc, SEED)
    device = make_device(scene, clock=clock, seed=SEED, faults=scene)
    bus = FakeI2C(devices={reg.ADDRESS_DEFAULT: device})
    driver = AMG8833(bus, clock=clock)
    driver.set_moving_average(True)
    policy = SamplingPolicy(
        idle_fps=1, active_fps=10, idle_after_s=10.0, presence_delta_c=2.0, fixture_after_s=20.0
    )
    levels: Any = None
    last: list[float] | None = None
    broken = False
    fields: list[list[float]] = []
    frames: list[list[Any]] = []
    events: list[list[Any]] = []
    lines: list[str] = []
    for k in range(1, round(DURATION_S / POLL_S) + 1):
        t = k * POLL_S
        clock.now = t
        device.tick()  # the daemon's sim clock: INT edges come between reads, as on the chip
        if k % FIELD_EVERY == 0:
            image, ambient = scene.field(t)
            fields.append([*flat(image), float(ambient)])
        try:
            if broken:
                driver.reinit()  # what the daemon does after a fault
                broken = False
            if device.int_asserted:
                status = driver.read_interrupt()
                driver.clear_interrupt()
                mask = reg.grid_to_mask(status.pixels)
                events.append(["int", k, status.flagged, status.mask, mask, status.count])
                plan = policy.on_interrupt(t, mask)
            else:
                pixels = flat(driver.read_frame())
                if pixels == last:
                    plan = policy.plan(t)
                else:
                    last = pixels
                    thermistor = driver.read_thermistor()
                    plan = policy.on_frame(t, pixels)
                    frames.append([k, thermistor, pixels])
                    lines.append(to_json(round(t, 4), thermistor, pixels))
                    events.append(["frame", k, policy.fixture_count, policy.fixture_mask, policy.background])
            events.append(
                [
                    "plan",
                    k,
                    plan.fps,
                    plan.present,
                    None
                    if plan.interrupt is None
                    else [plan.interrupt.upper_c, plan.interrupt.lower_c, plan.interrupt.hysteresis_c],
                ]
            )
            if plan.fps != driver.frame_rate:
                driver.set_frame_rate(plan.fps)
            if plan.interrupt != levels:
                if plan.interrupt is None:
                    driver.disable_interrupt()
                else:
                    i = plan.interrupt
                    driver.configure_interrupt(
                        InterruptConfig(i.upper_c, i.lower_c, i.hysteresis_c, InterruptMode.ABSOLUTE)
                    )
                levels = plan.interrupt
            if k % 20 == 0:
                events.append(["settings", k, driver.settings_lost()])
        except SensorFault as exc:
            events.append(["fault", k, str(exc)])
            broken = True
    suite = record_suite_session()
    return {
        "offset_c": device.offset_c,
        "pixel_offsets_c": flat(device.pixel_offsets_c),
        "fields": fields,
        "frames": digest(frames),
        "frame_count": len(frames),
        "first_frames": frames[:3],
        "events": digest(events),
        "event_count": len(events),
        "faults": [e for e in events if e[0] == "fault"],
        "interrupts": [e for e in events if e[0] == "int"][:20],
        "jsonl": digest(lines),
        "first_lines": lines[:2],
        "registers": list(device.regs),
        "suite": digest([[t, th, px] for t, th, px in suite]),
        "suite_count": len(suite),
        "suite_first": [list(x) for x in suite[:2]],
    }
