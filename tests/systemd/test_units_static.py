"""The unit files, checked without booting anything: `systemd-analyze verify` and `security`.

verify exits 0 on a misspelt key or an option this systemd does not know (it only prints a
warning), so its output is the check: it must print nothing at all. It runs on the host's
systemd, 252 on Debian 12 as on Raspberry Pi OS Bookworm, in a private mount namespace where
/opt/appliance/venv is this checkout's .venv, so the ExecStart= paths exist as on a device.

security --offline=yes scores each service's sandbox; every one must stay at or under 2.0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
MAX_EXPOSURE = 2.0
VENV = Path(sys.prefix)

SERVICES = sorted([*UNITS.glob("*.service"), *UNITS.glob("server/*.service")])
ALL_UNITS = sorted(p for p in UNITS.rglob("*") if p.suffix in (".service", ".socket", ".target"))

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (package systemd)"
)


def verify(units: list[Path], cwd: Path) -> str:
    """`systemd-analyze verify` output (stdout and stderr together) for these unit files."""
    names = " ".join(shlex.quote(str(u)) for u in units)
    cmd = f"systemd-analyze verify --man=no {names} 2>&1"
    if not Path("/opt/appliance/venv/bin/appliance").exists():
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("needs root and unshare to put the venv at /opt/appliance/venv for verify")
        # A tmpfs on /opt in a mount namespace of our own: the host's /opt is untouched.
        cmd = (
            "mount -t tmpfs tmpfs /opt && mkdir -p /opt/appliance && "
            f"ln -s {shlex.quote(str(VENV))} /opt/appliance/venv && {cmd}"
        )
        argv = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", cmd]
    else:
        argv = ["/bin/sh", "-c", cmd]
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    return (result.stdout + result.stderr).strip()


@needs_analyze
def test_the_units_exist() -> None:
    names = {p.name for p in UNITS.iterdir()}
    daemons = ("bus", "thermal", "camera", "screening", "publisher", "screen", "setup")
    assert {f"appliance-{d}.service" for d in daemons} <= names
    assert {"appliance-bus.socket", "appliance.target"} <= names
    assert (UNITS / "sysusers.d/appliance.conf").is_file()
    assert (UNITS / "tmpfiles.d/appliance.conf").is_file()


@needs_analyze
def test_verify_prints_nothing() -> None:
    out = verify(ALL_UNITS, UNITS)
    assert out == "", f"systemd-analyze verify complained:\n{out}"


@needs_analyze
def test_verify_would_catch_a_misspelt_key(tmp_path: Path) -> None:
    """The check above is only worth something if verify does print on a bad unit."""
    good = (UNITS / "appliance-thermal.service").read_text()
    bad = tmp_path / "appliance-thermal.service"
    bad.write_text(good.replace("ProtectKernelLogs=yes", "ProtectKernelLog=yes"))
    out = verify([bad], tmp_path)
    assert "ProtectKernelLog" in out


def exposure(unit: Path) -> float:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit.parent,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout + out.stderr)
    assert m, f"no exposure level in the output:\n{out.stdout}{out.stderr}"
    return float(m.group(1))


@needs_analyze
@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_exposure_at_most_2(unit: Path) -> None:
    level = exposure(unit)
    assert level <= MAX_EXPOSURE, f"{unit.name}: exposure {level} > {MAX_EXPOSURE}"


@needs_analyze
def test_exposure_check_can_fail(tmp_path: Path) -> None:
    """An unhardened service scores far above the limit, so the check above can fail."""
    plain = tmp_path / "plain.service"
    plain.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(plain) > MAX_EXPOSURE


@needs_analyze
def test_every_daemon_runs_as_appliance_with_its_group() -> None:
    """The broker checks SO_PEERCRED against the primary gid: Group=appliance on every kiosk unit."""
    for unit in UNITS.glob("appliance-*.service"):
        text = unit.read_text()
        assert "\nUser=appliance\n" in text and "\nGroup=appliance\n" in text, unit.name
        assert "\nCapabilityBoundingSet=\n" in text, unit.name
