"""`appliance bench all --json --report FILE.md`: every suite, one table.

Each suite runs in its own subprocess (`appliance bench NAME --json`), one after the other, so a
suite that crashes or hangs costs its own row and nothing else, and no suite measures another's
leftovers. A figure passes when it meets the target its suite declared; a suite that failed to
run shows as such, never as a pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.atomic import atomic_write
from appliance.bench import SUITES, machine

_TARGET = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")
# The system suite soaks for an hour when not --quick.
SUITE_TIMEOUT_S = 2 * 3600


@dataclass(frozen=True)
class Row:
    suite: str
    figure: str
    target: str
    measured: Any
    passed: bool | None  # None: no number to judge


def judge(target: str, measured: Any) -> bool | None:
    """Whether `measured` meets a target written as ">= 50000", "<= 1.0", "== 0"."""
    m = _TARGET.match(target)
    if m is None or isinstance(measured, bool) or not isinstance(measured, int | float):
        return None
    op, value = m.group(1), float(m.group(2))
    return {
        ">=": measured >= value,
        "<=": measured <= value,
        "==": measured == value,
        ">": measured > value,
        "<": measured < value,
    }[op]


def rows_for(suite: str, result: dict[str, Any]) -> list[Row]:
    """Targets are either ">= 50000" or {"target": ">= 50000", "value": ..., "pass": ...}; the
    verdict is always recomputed here from the figure itself."""
    rows = []
    for key, spec in (result.get("targets") or {}).items():
        target = str(spec.get("target")) if isinstance(spec, dict) else str(spec)
        rows.append(Row(suite, key, target, result.get(key), judge(target, result.get(key))))
    return rows


def run_suite(name: str, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "appliance", "bench", name, "--json", *(["--quick"] if quick else [])]
    started = time.monotonic()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {SUITE_TIMEOUT_S} s"}
    elapsed = round(time.monotonic() - started, 1)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: {' | '.join(tail)}", "elapsed_s": elapsed}
    try:
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": "no JSON on stdout", "elapsed_s": elapsed}
    result["elapsed_s"] = elapsed
    return result


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def markdown(results: dict[str, dict[str, Any]], host: dict[str, Any]) -> str:
    lines = [
        f"Machine: {host['cpu']}, {host['cores']} cores, Python {host['python']}, {host['system']}",
        "",
        "| suite | figure | target | measured | result |",
        "|---|---|---|---|---|",
    ]
    for suite, result in results.items():
        if "error" in result:
            lines.append(f"| {suite} | (suite) | runs | {result['error']} | fail |")
            continue
        if "skipped" in result:
            # Not run here (no root, say): neither a pass nor a failure.
            lines.append(f"| {suite} | (suite) | runs | skipped: {result['skipped']} | n/a |")
            continue
        for row in rows_for(suite, result):
            verdict = {True: "pass", False: "fail", None: "n/a"}[row.passed]
            lines.append(f"| {suite} | `{row.figure}` | {row.target} | {_cell(row.measured)} | {verdict} |")
    return "\n".join(lines) + "\n"


def run_all(*, as_json: bool, quick: bool, report: str | None, suites: list[str] | None = None) -> int:
    host = machine()
    results: dict[str, dict[str, Any]] = {}
    for name in suites or list(SUITES):
        print(f"bench {name} ...", file=sys.stderr, flush=True)
        results[name] = run_suite(name, quick)
    table = markdown(results, host)
    if report:
        atomic_write(Path(report), table)
    failed = [
        r
        for suite, res in results.items()
        if "error" not in res
        for r in rows_for(suite, res)
        if r.passed is False
    ]
    errors = [s for s, res in results.items() if "error" in res]
    summary = {"machine": host, "suites": results, "failed": [f"{r.suite}.{r.figure}" for r in failed]}
    summary["errors"] = errors
    if as_json:
        print(json.dumps(summary))
    else:
        print(table)
    return 1 if errors else 0
