"""The appliance.toml the thermal tests start the daemon (or load the config) with."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# [thermal] for the daemon tests: the sim backend, a short warm-up, idle after a second.
DAEMON_THERMAL: Mapping[str, object] = {
    "backend": '"sim"',
    "warmup_s": 0.5,
    "idle_after_s": 1.0,
    "idle_fps": 1,
}


def config_toml(
    run_dir: Path, scenario: str | Path, *, base: Mapping[str, object] = DAEMON_THERMAL, **thermal: object
) -> str:
    """paths in run_dir, [thermal] = base updated with `thermal` (values as TOML text, so a
    string comes quoted; a bool is lowercased), mock GPIO pins, and the sim playing `scenario`
    (a scenario file, or a built-in scenario's name)."""
    values = dict(base)
    values.update({k: repr(v).lower() if isinstance(v, bool) else v for k, v in thermal.items()})
    lines = "\n".join(f"{k} = {v}" for k, v in values.items())
    return f"""
[paths]
state_dir = "{run_dir}"
run_dir = "{run_dir}"

[bus]
allowed_groups = []

[thermal]
{lines}

[gpio]
pin_factory = "mock"

[sim]
scenario = "{scenario}"
seed = 5
"""
