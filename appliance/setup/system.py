"""The machine around the daemons: unit states, restart, reboot, factory reset, identity.

Maintenance acts only on a kiosk: systemd is PID 1, this daemon runs as one of its units,
and the appliance's units are installed. Anywhere else (the demo, a development machine)
each action says what it would do and does nothing, so trying the page cannot reboot a
laptop or wipe a developer's state directory.

Commands run with `systemctl --no-block`: restarting the setup daemon itself, or
rebooting, must not cut off the reply that says it is happening. On a kiosk this daemon runs as
the appliance user, and with no D-Bus or polkit there, systemctl run by it cannot reach PID 1:
a restart or a reboot is a request file in the control directory (/run/appliance/control),
named for what it asks, which appliance-control.service (root, started by
appliance-control.path) acts on. Where that directory does not exist, systemctl is run directly.

Unit states, for the same reason, cannot come from `systemctl show` on a kiosk. Where it fails,
each unit's cgroup says whether the unit has processes: a file any user may read, even with
ProtectControlGroups= (read-only, not hidden). systemd removes a unit's cgroup when the unit
stops, so a missing one means "no processes". The Status page adds the daemon's health
heartbeat to that (appliance.setup.live) and says the state came from there.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance import daemons
from appliance.runtime import under_systemd

SYSTEMD_RUN = Path("/run/systemd/system")
UNIT_PREFIX = "appliance-"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where the units' cgroups are, under CGROUP_ROOT: cgroup v2 (unified), the hybrid layout's
# v2 mount, the legacy named systemd hierarchy (v1). The first that exists is read.
CGROUP_SLICES = ("system.slice", "unified/system.slice", "systemd/system.slice")


@dataclass(frozen=True, slots=True)
class Outcome:
    done: bool
    message: str
    command: tuple[str, ...] = ()


def unit_name(daemon: str) -> str:
    return f"{UNIT_PREFIX}{daemon}.service"


class SystemControl:
    def __init__(
        self,
        *,
        systemctl: str | None = None,
        active: bool | None = None,
        state_dir: Path,
        config_path: Path,
        control_dir: Path | None = None,
        cgroup_root: Path = CGROUP_ROOT,
    ) -> None:
        self.systemctl = systemctl or shutil.which("systemctl")
        self.cgroup_root = cgroup_root
        self.state_dir = state_dir
        self.config_path = config_path
        self.control_dir = control_dir
        if active is None:
            active = SYSTEMD_RUN.is_dir() and under_systemd() and self.systemctl is not None
        self.active = active

    # --- reading ------------------------------------------------------------------------------

    def unit_states(self) -> dict[str, dict[str, str]]:
        """Per daemon: ActiveState, SubState, LoadState from `systemctl show`; where systemctl
        cannot reach PID 1, {"Source": "cgroup", "Processes": "yes" | "no" | "unknown"} from
        the units' cgroups; {} off a kiosk or where neither can be read."""
        if not self.active:
            return {}
        states = self._systemctl_states()
        return states if states is not None else self._cgroup_states()

    def _systemctl_states(self) -> dict[str, dict[str, str]] | None:
        if self.systemctl is None:
            return None
        names = [unit_name(d) for d in daemons.START_ORDER]
        try:
            out = subprocess.run(
                [self.systemctl, "show", "--property=Id,LoadState,ActiveState,SubState", "--", *names],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            # "Failed to connect to bus": the appliance user on a kiosk.
            return None
        states: dict[str, dict[str, str]] = {}
        for block in out.stdout.strip().split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            unit = props.get("Id", "")
            if unit.startswith(UNIT_PREFIX) and unit.endswith(".service"):
                states[unit.removeprefix(UNIT_PREFIX).removesuffix(".service")] = props
        return states or None

    def _cgroup_states(self) -> dict[str, dict[str, str]]:
        slice_dir = next(
            (self.cgroup_root / s for s in CGROUP_SLICES if (self.cgroup_root / s).is_dir()), None
        )
        if slice_dir is None:
            return {}  # no cgroup tree we know: claim nothing rather than "not running"
        return {
            d: {"Source": "cgroup", "Processes": _cgroup_processes(slice_dir / unit_name(d))}
            for d in daemons.START_ORDER
        }

    # --- acting -------------------------------------------------------------------------------

    def _run(self, args: Sequence[str], what: str) -> Outcome:
        cmd = (self.systemctl or "systemctl", *args)
        if not self.active:
            shown = " ".join(["systemctl", *args])
            return Outcome(
                False,
                f"Not a kiosk under systemd (the demo or a development machine): would run `{shown}` "
                f"to {what}. Nothing was done.",
                cmd,
            )
        try:
            subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            return Outcome(False, f"Could not {what}: {detail[-1] if detail else exc}", cmd)
        except (OSError, subprocess.SubprocessError) as exc:
            return Outcome(False, f"Could not {what}: {exc}", cmd)
        return Outcome(True, f"Asked systemd to {what}.", cmd)

    def _request(self, name: str, what: str) -> Outcome | None:
        """Leave the request for appliance-control; None where there is no control directory."""
        if not self.active or self.control_dir is None or not self.control_dir.is_dir():
            return None
        path = self.control_dir / name
        try:
            # Empty: the name is the whole request. Asked twice before it is acted on, once.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o660))
        except OSError as exc:
            return Outcome(False, f"Could not {what}: cannot write {path}: {exc.strerror}", ("request", name))
        return Outcome(True, f"Asked systemd to {what}.", ("request", name))

    def restart(self, daemon: str) -> Outcome:
        if daemon not in daemons.START_ORDER:
            return Outcome(False, f"No daemon named {daemon!r}.")
        what = f"restart the {daemon} daemon"
        requested = self._request(f"restart-{daemon}", what)
        return requested or self._run(["--no-block", "restart", unit_name(daemon)], what)

    def reboot(self) -> Outcome:
        requested = self._request("reboot", "reboot the kiosk")
        return requested or self._run(["--no-block", "reboot"], "reboot the kiosk")

    def reset_targets(self) -> list[Path]:
        """What a factory reset deletes: the state directory's contents and the config file."""
        targets = sorted(self.state_dir.iterdir()) if self.state_dir.is_dir() else []
        if self.config_path.exists():
            targets.append(self.config_path)
        return targets

    def factory_reset(self) -> Outcome:
        targets = self.reset_targets()
        listing = ", ".join(str(p) for p in targets) or "nothing"
        if not self.active:
            return Outcome(
                False,
                "Not a kiosk under systemd (the demo or a development machine): a factory reset would "
                f"delete {listing} (calibration, events, pairing, the setup password; the config goes "
                "back to the shipped defaults), then reboot. Nothing was done.",
            )
        for path in targets:
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                return Outcome(False, f"Factory reset stopped: cannot delete {path}: {exc.strerror}")
        rebooted = self.reboot()
        return Outcome(rebooted.done, f"Deleted {listing}. {rebooted.message}", rebooted.command)


def _cgroup_processes(unit_dir: Path) -> str:
    """ "yes" if the cgroup has processes, "no" if not (or there is no such cgroup), else "unknown"."""
    try:
        try:
            events = (unit_dir / "cgroup.events").read_text()
        except FileNotFoundError:
            # cgroup v1 has no cgroup.events: the processes themselves, one PID a line.
            return "yes" if (unit_dir / "cgroup.procs").read_text().strip() else "no"
    except FileNotFoundError:
        return "no"  # systemd removed the cgroup: the unit has stopped
    except (OSError, UnicodeDecodeError):
        return "unknown"
    for line in events.splitlines():
        key, _, value = line.partition(" ")
        if key == "populated":
            return "yes" if value.strip() == "1" else "no"
    return "unknown"


# --- identity ---------------------------------------------------------------------------------


def device_id() -> str:
    """The Raspberry Pi's serial number, else a hash of the machine id (never the id itself:
    systemd asks applications not to expose it)."""
    for source in (Path("/proc/device-tree/serial-number"),):
        try:
            serial = source.read_text().strip("\0\n ")
        except OSError:
            continue
        if serial:
            return serial
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("Serial") and ":" in line:
                serial = line.split(":", 1)[1].strip()
                if serial.strip("0"):
                    return serial
    except OSError:
        pass
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        return "unknown"
    return hashlib.sha256(f"appliance:{machine}".encode()).hexdigest()[:16]


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def pi_model() -> str | None:
    try:
        return Path("/proc/device-tree/model").read_text().rstrip("\0") or None
    except OSError:
        return None


def kernel() -> str:
    return os.uname().release
