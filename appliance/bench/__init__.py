"""`appliance bench SUITE`: benchmarks. Each suite prints one JSON object with --json.

A suite is a function `bench_<name>(quick: bool) -> dict` returning its figures under the
issue's JSON keys, plus "targets": {key: ">= 50000" | "<= 1.0" | ...} for the figures that
have one. `appliance bench all` runs every suite and writes one report (appliance.bench.report).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
from collections.abc import Callable
from typing import Any

# name -> "module:function"; the order is the report's.
SUITES: dict[str, str] = {
    "bus": "appliance.bench.bus:bench_bus",
    "screening": "appliance.bench.screening:bench_screening",
    "video": "appliance.bench.video:bench_video",
    "room": "appliance.bench.room:bench_room",
    "screen": "appliance.bench.screen:bench_screen",
    "system": "appliance.bench.system:bench_system",
    "network": "appliance.bench.network:bench_network",
}


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
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def suite_function(name: str) -> Callable[..., dict[str, Any]]:
    module_name, _, func = SUITES[name].partition(":")
    module = importlib.import_module(module_name)
    result: Callable[..., dict[str, Any]] = getattr(module, func)
    return result


def run_bench(suite: str, *, as_json: bool, quick: bool = False, report: str | None = None) -> int:
    if suite == "all":
        from appliance.bench.report import run_all

        return run_all(as_json=as_json, quick=quick, report=report)
    if suite not in SUITES:
        raise SystemExit(f"unknown suite {suite}; known: {', '.join(SUITES)}, all")
    result = suite_function(suite)(quick=quick)
    result["machine"] = machine()
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")
    return 0
