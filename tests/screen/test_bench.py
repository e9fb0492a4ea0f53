"""`appliance bench screen`: the figures it reports, from a short real run."""

from __future__ import annotations

import json
import subprocess
import sys

from appliance.bench import SUITES, suite_function


def test_bench_screen_reports_render_cost_at_both_sizes() -> None:
    assert "screen" in SUITES
    result = suite_function("screen")(quick=True)
    for size in ("800x480", "1280x720"):
        p50, p99 = result[f"render_{size}_p50_ms"], result[f"render_{size}_p99_ms"]
        assert 0 < p50 <= p99 <= result[f"render_{size}_max_ms"]
        # About one redraw in six or eight changes the words (the script's state changes).
        assert 0.05 < result[f"render_{size}_static_redraw_share"] < 0.3
        assert result["targets"][f"render_{size}_p50_ms"] == "<= 10.0"
    assert result["preview_convert_p50_ms"] > 0


def test_bench_screen_cli_prints_one_json_object() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "screen", "--json", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, lines
    result = json.loads(lines[0])
    assert {
        "render_800x480_p50_ms",
        "render_1280x720_p50_ms",
        "render_800x480_p99_ms",
        "render_1280x720_p99_ms",
    } <= set(result)
    assert result["machine"]["cores"] >= 1
