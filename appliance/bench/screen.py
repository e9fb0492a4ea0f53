"""`appliance bench screen`: what one redraw of the status screen costs, at two sizes.

Each redraw is what the daemon does on a new frame: compose the view from the inputs, then
render it (static layer when the words changed, camera picture, thermal overlay, face
guide) into an off-screen surface of the display's size. Presenting it (flip) is the
display driver's cost and is left out; so is reading the ring (reported apart, as
preview_convert_p50_ms: the copy from the ring's BGR layout to RGB).

The script is a kiosk at 30 fps with people coming and going: a new 320x240 camera frame on
every redraw, a new thermal frame on every third (the sensor's 10 fps), and the screening
state moving through idle, the positioning prompts, measuring (progress in steps) and a
result, so about one redraw in six also redraws the words.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.bus.topics import ResultName, ScreeningState, ScreeningStateName, ThermalFrame
from appliance.screen.frames import to_rgb
from appliance.screen.model import Inputs
from appliance.screen.render import Frames, Renderer, offscreen
from appliance.screen.view import DisplaySettings, compose

SIZES = ((800, 480), (1280, 720))
TARGET_P50_MS = 10.0
PREVIEW = (320, 240)


def _visit(result: ResultName, estimate: float) -> list[ScreeningState]:
    """One person's visit at 30 redraws a second: a state per redraw."""
    states: list[tuple[ScreeningStateName, int]] = [
        ("idle", 45),
        ("approaching", 15),
        ("too-far", 20),
        ("hold-still", 15),
    ]
    out = [ScreeningState(state=name) for name, n in states for _ in range(n)]
    for step in range(11):
        out += [ScreeningState(state="measuring", progress=step / 10)] * 3
    out += [ScreeningState(state="result", result=result, estimate_c=estimate)] * 45
    return out


def _script() -> list[ScreeningState]:
    return _visit("normal", 36.6) + _visit("elevated", 38.7) + _visit("retry", 0.0)


def _camera_frames(n: int, rng: np.random.Generator) -> list[npt.NDArray[np.uint8]]:
    w, h = PREVIEW
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=2).astype(np.uint8)
    return [
        np.ascontiguousarray(np.roll(base, 7 * i, axis=1) ^ rng.integers(0, 8, base.shape, dtype=np.uint8))
        for i in range(n)
    ]


def _thermal_frames(n: int, rng: np.random.Generator) -> list[list[float]]:
    frames = []
    for i in range(n):
        grid = 22.0 + rng.normal(0.0, 0.2, (8, 8))
        col = 2 + i % 4
        grid[2:6, col : col + 3] = 35.0 + rng.normal(0.0, 0.3, (4, 3))
        frames.append([float(v) for v in grid.ravel()])
    return frames


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_size(size: tuple[int, int], redraws: int, warmup: int = 30) -> dict[str, float]:
    rng = np.random.default_rng(1)
    renderer = Renderer(size)
    target = offscreen(size)
    cameras = _camera_frames(16, rng)
    thermals = _thermal_frames(16, rng)
    script = _script()
    settings = DisplaySettings()
    inputs = Inputs()
    times: list[float] = []
    static = 0
    clock = 1000.0
    for i in range(warmup + redraws):
        clock += 1.0 / 30.0
        inputs.apply("screening.state", script[i % len(script)], clock)
        if i % 3 == 0:
            pixels = thermals[(i // 3) % len(thermals)]
            frame = ThermalFrame(pixels=pixels, thermistor=24.0, rate_hz=10.0, frame_seq=i)
            inputs.apply("thermal.frame", frame, clock)
        inputs.note_camera(clock)
        frames = Frames(camera=cameras[i % len(cameras)], thermal=inputs.thermal_pixels)
        start = time.perf_counter()
        view = compose(inputs, settings, 0.0, clock)
        report = renderer.render(view, frames, target)
        elapsed = (time.perf_counter() - start) * 1000.0
        if i >= warmup:
            times.append(elapsed)
            static += report.static_redrawn
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(_percentile(times, 0.99), 3),
        "max_ms": round(max(times), 3),
        "static_redraw_share": round(static / len(times), 3),
    }


def bench_convert(repeats: int = 200) -> float:
    w, h = PREVIEW
    ring_bytes = np.random.default_rng(2).integers(0, 255, (h, w, 3), dtype=np.uint8)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        to_rgb(ring_bytes, "RGB888", w, h)
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 3)


def bench_screen(*, quick: bool = False) -> dict[str, Any]:
    redraws = 120 if quick else 900
    result: dict[str, Any] = {}
    for w, h in SIZES:
        figures = bench_size((w, h), redraws)
        result[f"render_{w}x{h}_p50_ms"] = figures["p50_ms"]
        result[f"render_{w}x{h}_p99_ms"] = figures["p99_ms"]
        result[f"render_{w}x{h}_max_ms"] = figures["max_ms"]
        result[f"render_{w}x{h}_static_redraw_share"] = figures["static_redraw_share"]
    result["preview_convert_p50_ms"] = bench_convert(40 if quick else 200)
    result["redraws_per_size"] = redraws
    result["targets"] = {f"render_{w}x{h}_p50_ms": f"<= {TARGET_P50_MS}" for w, h in SIZES}
    return result
