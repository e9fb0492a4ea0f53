"""`appliance bench SUITE`: benchmarks. Each suite prints one JSON object with --json."""

from __future__ import annotations

import json
import platform
from typing import Any


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def run_bench(suite: str, *, as_json: bool, quick: bool = False) -> int:
    if suite == "bus":
        from appliance.bench.bus import bench_bus

        result = bench_bus(quick=quick)
    elif suite == "screening":
        from appliance.bench.screening import bench_screening

        result = bench_screening(quick=quick)
    else:
        raise SystemExit(f"unknown suite {suite}")
    result["machine"] = machine()
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")
    return 0
