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
# The kiosk's daemons; appliance-recover@ and appliance-control run systemctl, they are no daemons.
HELPERS = ("appliance-recover@.service", "appliance-control.service")
DAEMON_UNITS = sorted(p for p in UNITS.glob("appliance-*.service") if p.name not in HELPERS)
RECOVER = UNITS / "appliance-recover@.service"
CONTROL = UNITS / "appliance-control.service"
ALL_UNITS = sorted(p for p in UNITS.rglob("*") if p.suffix in (".service", ".socket", ".target", ".path"))

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
    assert {"appliance-bus.socket", "appliance-setup.socket", "appliance.target"} <= names
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
    assert len(DAEMON_UNITS) == 7
    for unit in DAEMON_UNITS:
        text = unit.read_text()
        assert "\nUser=appliance\n" in text and "\nGroup=appliance\n" in text, unit.name
        assert "\nCapabilityBoundingSet=\n" in text, unit.name


def unit_lines(unit: Path) -> list[str]:
    return [ln.strip() for ln in unit.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def test_every_daemon_has_the_recovery_hook() -> None:
    """Past StartLimitBurst= a unit stays failed for good unless something starts it again: every
    daemon hands itself to appliance-recover@ when it fails, in [Unit] where OnFailure= belongs."""
    assert RECOVER.is_file()
    for unit in DAEMON_UNITS:
        lines = unit_lines(unit)
        unit_section = lines[lines.index("[Unit]") : lines.index("[Service]")]
        assert "OnFailure=appliance-recover@%n.service" in unit_section, unit.name
        # The recovery only acts on start-limit-hit: it needs Restart= to handle every other crash.
        assert any(ln in ("Restart=on-failure", "Restart=always") for ln in lines), unit.name
        assert "StartLimitBurst=10" in unit_section and "StartLimitIntervalSec=60" in unit_section


def test_the_screen_restarts_after_a_clean_exit() -> None:
    """The screen exits 0 when its window is closed: Restart=on-failure would leave it dark."""
    assert "Restart=always" in unit_lines(UNITS / "appliance-screen.service")


def test_the_recovery_unit_is_the_documented_exception() -> None:
    """appliance-recover@ runs as root (only root may reset and start units over PID 1's private
    socket): no User=appliance, no PrivateUsers=. Everything else stays locked down, and
    SECURITY.md lists it with the reason."""
    lines = unit_lines(RECOVER)
    assert "User=root" in lines and "CapabilityBoundingSet=" in lines
    assert not any(ln.startswith(("PrivateUsers=yes", "OnFailure=")) for ln in lines)
    locked = (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateNetwork=yes",
        "RestrictAddressFamilies=AF_UNIX",
    )
    for key in locked:
        assert key in lines, key
    assert "Type=oneshot" in lines and "PartOf=appliance.target" in lines
    assert "appliance-recover@.service" in (UNITS / "SECURITY.md").read_text()


def test_the_control_unit_is_the_other_documented_exception() -> None:
    """appliance-control runs as root, as appliance-recover@ does, for the setup page's restart and
    reboot (the page's daemon cannot reach PID 1: no D-Bus or polkit on the kiosk). It acts only on
    request names it knows: restart-<one of the appliance's daemons>, or reboot."""
    from appliance import daemons

    lines = unit_lines(CONTROL)
    assert "User=root" in lines and "CapabilityBoundingSet=" in lines
    # No capabilities: root is "other" to /run/appliance (0750), so it lists it as the group.
    assert "Group=appliance" in lines
    assert not any(ln.startswith(("PrivateUsers=yes", "OnFailure=")) for ln in lines)
    for key in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateNetwork=yes",
        "RestrictAddressFamilies=AF_UNIX",
    ):
        assert key in lines, key
    assert "ReadWritePaths=/run/appliance/control" in lines
    script = CONTROL.read_text()
    known = set(re.findall(r"restart-([a-z]+)[|)]", script))
    assert known == set(daemons.START_ORDER), known
    path = unit_lines(UNITS / "appliance-control.path")
    assert "DirectoryNotEmpty=/run/appliance/control" in path and "Unit=appliance-control.service" in path
    assert "Wants=appliance-control.path" in unit_lines(UNITS / "appliance.target")
    tmpfiles = (UNITS / "tmpfiles.d/appliance.conf").read_text()
    assert re.search(r"^d /run/appliance/control\s+0770 appliance appliance", tmpfiles, re.M)
    assert "ReadWritePaths=/run/appliance/control" in unit_lines(UNITS / "appliance-setup.service")
    assert "appliance-control.service" in (UNITS / "SECURITY.md").read_text()


def _seconds(unit: Path, key: str) -> float:
    """A [Service] time setting in seconds ("5", "5s", "500ms", "1min 30s")."""
    values = [ln.split("=", 1)[1] for ln in unit_lines(unit) if ln.startswith(f"{key}=")]
    assert values, f"{unit.name}: no {key}="
    total = 0.0
    for number, suffix in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|s)?", values[-1]):
        total += float(number) * {"ms": 0.001, "min": 60.0}.get(suffix, 1.0)
    return total


def test_the_camera_may_stop_the_way_it_was_written_to() -> None:
    """On SIGTERM the camera daemon waits up to its STOP_TIMEOUT_S for a start still running,
    then as long again for the backend to stop (a stuck V4L2 or libcamera call), then the runtime
    gives stuck threads EXIT_GRACE_S. A TimeoutStopSec= shorter than that SIGKILLs it before
    it has said why: the unit ends failed (Result=timeout) on a plain `systemctl stop`, and its
    OnFailure= recovery starts again the camera a technician just stopped."""
    from appliance.camera import daemon as camera
    from appliance.runtime import EXIT_GRACE_S

    needs = 2 * camera.STOP_TIMEOUT_S + EXIT_GRACE_S
    assert _seconds(UNITS / "appliance-camera.service", "TimeoutStopSec") > needs


def test_the_publisher_may_close_its_calls_before_it_is_killed() -> None:
    """On SIGTERM the publisher hangs up on every viewer at once, each close bounded by
    CLOSE_TIMEOUT_S (a peer whose DTLS or SCTP shutdown hangs on a dead network), then the
    runtime gives stuck threads EXIT_GRACE_S. Killed before, the unit ends failed on a plain
    stop and its OnFailure= recovery starts the publisher again."""
    from appliance.publisher.peer import CLOSE_TIMEOUT_S
    from appliance.runtime import EXIT_GRACE_S

    needs = CLOSE_TIMEOUT_S + EXIT_GRACE_S
    assert _seconds(UNITS / "appliance-publisher.service", "TimeoutStopSec") > needs


def test_every_daemon_outlasts_the_runtimes_exit_grace() -> None:
    """A thread stuck in a driver call keeps a daemon EXIT_GRACE_S after its loop ends."""
    from appliance.runtime import EXIT_GRACE_S

    for unit in DAEMON_UNITS:
        assert _seconds(unit, "TimeoutStopSec") > EXIT_GRACE_S, unit.name


SETUP_SOCKET = UNITS / "appliance-setup.socket"
SETUP_SERVICE = UNITS / "appliance-setup.service"
TARGET = UNITS / "appliance.target"


def shipped_setup_port() -> int:
    import tomllib

    with (REPO / "config/appliance.toml").open("rb") as f:
        port = tomllib.load(f)["setup"]["port"]
    assert isinstance(port, int)
    return port


def ip_allow_list(unit: Path) -> tuple[list[str], list[str]]:
    """IPAddressDeny= and IPAddressAllow= entries, in order, as systemd combines repeated lines."""
    deny: list[str] = []
    allow: list[str] = []
    for ln in unit_lines(unit):
        key, _, value = ln.partition("=")
        if key == "IPAddressDeny":
            deny += value.split()
        elif key == "IPAddressAllow":
            allow += value.split()
    return deny, allow


def test_the_setup_page_is_socket_activated_on_the_shipped_port() -> None:
    """The setup page is used a few times in a kiosk's life: appliance-setup.socket holds the port
    and the first connection starts the daemon (about 40 MB that would otherwise sit idle). Under
    systemd the socket decides the port, so it must be the one the shipped config documents."""
    lines = unit_lines(SETUP_SOCKET)
    assert f"ListenStream={shipped_setup_port()}" in lines
    # setup.host = "0.0.0.0" by default: IPv4 and IPv6 on one socket, as the daemon's own bind.
    assert "BindIPv6Only=both" in lines
    # One listening socket handed to one daemon (listen_fds() takes exactly one), not one
    # service instance per connection.
    assert "Accept=no" in lines
    assert any(ln.startswith("Documentation=") for ln in lines)
    assert "systemctl edit appliance-setup.socket" in SETUP_SOCKET.read_text()


def test_the_target_wants_the_setup_socket_not_the_service() -> None:
    """A socket-activated daemon started eagerly by the target would hold its 40 MB from boot;
    and stopping the target must stop the socket and the daemon both."""
    target = unit_lines(TARGET)
    wanted = {name for ln in target if ln.startswith("Wants=") for name in ln[len("Wants=") :].split()}
    assert "appliance-setup.socket" in wanted
    assert "appliance-setup.service" not in wanted
    assert "PartOf=appliance.target" in unit_lines(SETUP_SOCKET)
    assert "WantedBy=appliance.target" in unit_lines(SETUP_SOCKET)
    service = unit_lines(SETUP_SERVICE)
    assert "PartOf=appliance.target" in service
    # Enabling the service must not make the target start it either.
    assert not any(ln.startswith(("WantedBy=", "RequiredBy=")) for ln in service)
    assert "Requires=appliance-setup.socket" in service and "After=appliance-setup.socket" in service
    # An idle exit (status 0) is no failure: the daemon stays down and the socket waits.
    assert "Restart=on-failure" in service


def test_the_setup_sockets_traffic_has_the_services_ip_allow_list() -> None:
    """systemd applies a service's IPAddressAllow/Deny= to sockets the service makes, not to one
    passed in by socket activation: the socket unit needs the same list for its own traffic."""
    service = ip_allow_list(SETUP_SERVICE)
    assert service[0] == ["any"] and "localhost" in service[1]
    assert ip_allow_list(SETUP_SOCKET) == service
