"""`appliance bench room --quick` runs end to end and reports its figures (the targets are the
benchmark's business, not this test's)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_room_quick_reports_every_key() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "room", "--json", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("viewers", "devices", "relay_rtt_p50_ms", "relay_rtt_p99_ms"):
        assert key in result, key
    assert set(result["targets"]) == {"viewers", "devices", "relay_rtt_p99_ms"}
    # Every socket held through the run, every probe answered.
    assert (result["viewers"], result["devices"]) == (200, 50)
    assert result["round_trips"] > 0 and result["round_trips_lost"] == 0
    assert 0 < result["relay_rtt_p50_ms"] <= result["relay_rtt_p99_ms"]
