"""`appliance doctor`: what a technician runs on a kiosk that misbehaves.

Each check is a function that takes what it looks at (config values, OS paths, a socket) and
returns a CheckResult: ok, warn, fail or skip, with a detail that says what to do about it.
Nothing in a check prints or exits, so hw-tests/ call the same functions on a real Pi and tests
point them at a fake /dev in a temporary directory. `run_checks` runs them in order for one
config; `run_doctor` is the command's shell around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import importlib
import json
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance import daemons
from appliance.bus.client import BusClient
from appliance.bus.topics import EchoParams
from appliance.config import AppConfig, config_path, load_config
from appliance.errors import ApplianceError, BusError
from appliance.pairing.credentials import host_name_problem
from appliance.thermal import registers as reg

DEV = Path("/dev")
# sd_booted(3): systemd is the init system exactly when this directory exists.
SYSTEMD_RUN = Path("/run/systemd/system")

# linux/i2c-dev.h: bind this file descriptor to one slave address for read()/write().
I2C_SLAVE = 0x0703

MIN_FREE_BYTES = 100 * 1024 * 1024
# A round trip through the broker takes well under a millisecond when it is healthy.
SLOW_RTT_MS = 50.0
ROOM_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"

    @property
    def label(self) -> str:
        # Failures shout so they stand out in a column of oks.
        return "FAIL" if self is Status.FAIL else self.value


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    # Measurements a program may want without parsing the detail (the bus round trip...).
    data: Mapping[str, float | int | str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "data": dict(self.data),
        }


def _ok(name: str, detail: str, **data: float | int | str) -> CheckResult:
    return CheckResult(name, Status.OK, detail, data)


def _warn(name: str, detail: str, **data: float | int | str) -> CheckResult:
    return CheckResult(name, Status.WARN, detail, data)


def _fail(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.FAIL, detail)


def _skip(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.SKIP, detail)


# --- config ---------------------------------------------------------------------------------


def check_config(path: str | os.PathLike[str] | None) -> tuple[CheckResult, AppConfig | None]:
    """Load the config as the daemons do (environment overrides included)."""
    file = config_path(path)
    try:
        config = load_config(path)
    except ApplianceError as exc:
        return _fail("config", f"{exc}; fix it, then `appliance config check {file}`"), None
    if not file.exists():
        return _warn(
            "config", f"no {file}: running on built-in defaults (install config/appliance.toml)"
        ), config
    return _ok("config", f"{file} is valid"), config


# --- thermal sensor on I2C ------------------------------------------------------------------


def check_i2c_adapter(bus: int, dev: Path = DEV) -> CheckResult:
    name = "i2c adapter"
    path = dev / f"i2c-{bus}"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        others = sorted(p.name for p in dev.glob("i2c-*"))
        found = f" (present: {', '.join(others)}; see thermal.i2c_bus)" if others else ""
        return _fail(
            name,
            f"{path} does not exist{found}: enable I2C (raspi-config nonint do_i2c 0, or "
            "dtparam=i2c_arm=on in /boot/firmware/config.txt) and reboot",
        )
    except OSError as exc:
        return _fail(name, f"cannot stat {path}: {exc.strerror}")
    if not stat.S_ISCHR(mode):
        return _fail(name, f"{path} is not a character device: not an I2C adapter (is i2c-dev loaded?)")
    return _ok(name, f"{path} present")


def read_i2c_register(device: Path, address: int, register: int) -> int:
    """One byte from a register: the pointer write and the read as two plain transfers."""
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, I2C_SLAVE, address)
        os.write(fd, bytes([register]))
        data = os.read(fd, 1)
    finally:
        os.close(fd)
    if len(data) != 1:
        raise OSError(errno.EIO, "short read")
    return data[0]


RegisterReader = Callable[[Path, int, int], int]

_PCTL_MODES = {0x00: "normal mode", 0x10: "sleep mode", 0x20: "stand-by, 60 s", 0x21: "stand-by, 10 s"}
_NO_ACK = (errno.ENXIO, errno.EREMOTEIO)


def check_amg8833(
    bus: int, address: int, dev: Path = DEV, read: RegisterReader = read_i2c_register
) -> CheckResult:
    """Read PCTL (0x00) at the configured address: proof that the sensor answers on the wire."""
    name = "thermal sensor"
    path = dev / f"i2c-{bus}"
    try:
        pctl = read(path, address, reg.PCTL)
    except OSError as exc:
        return _fail(name, _i2c_failure(exc, path, address, read))
    mode = _PCTL_MODES.get(pctl)
    if mode is None:
        return _warn(
            name,
            f"a device answers at 0x{address:02x} on {path} but PCTL reads 0x{pctl:02x}, not an AMG8833 "
            "power mode: another chip at this address, or the thermal daemon read in between (run again)",
            pctl=pctl,
        )
    return _ok(name, f"AMG8833 answers at 0x{address:02x} on {path} (PCTL 0x{pctl:02x}: {mode})", pctl=pctl)


def _i2c_failure(exc: OSError, path: Path, address: int, read: RegisterReader) -> str:
    at = f"0x{address:02x} on {path}"
    if isinstance(exc, FileNotFoundError):
        return f"{path} does not exist: enable I2C and check thermal.i2c_bus"
    if isinstance(exc, PermissionError):
        return f"cannot open {path}: permission denied; run as root or add the user to group i2c"
    if exc.errno in _NO_ACK:
        other = reg.ADDRESS_ALT if address == reg.ADDRESS_DEFAULT else reg.ADDRESS_DEFAULT
        with contextlib.suppress(OSError):
            read(path, other, reg.PCTL)
            return (
                f"nothing answers at {at}, but a device answers at 0x{other:02x}: an AMG8833 with "
                f"AD_SELECT {'low' if other == reg.ADDRESS_ALT else 'high'} (set thermal.address = "
                f"0x{other:02x}) or another chip there"
            )
        return (
            f"nothing answers at {at}: check the sensor's wiring (SDA to pin 3, SCL to pin 5, 3V3, "
            "GND) and power; `i2cdetect -y` lists the addresses that answer"
        )
    if exc.errno == errno.EBUSY:
        return f"{at} is claimed by a kernel driver (a dtoverlay for the sensor?): remove the overlay"
    if exc.errno == errno.ETIMEDOUT:
        return f"{path} timed out: a device may be holding SDA low; power-cycle the kiosk, check for shorts"
    if exc.errno in (errno.ENOTTY, errno.EINVAL):
        return f"{path} is not an I2C adapter (the I2C_SLAVE ioctl was refused)"
    return f"I2C error at {at}: {exc.strerror or exc}"


# --- camera and GPIO ------------------------------------------------------------------------


def check_camera(
    backend: str,
    device: str | os.PathLike[str],
    dev: Path = DEV,
    modules: Iterable[str] = ("libcamera", "picamera2"),
) -> CheckResult:
    name = "camera"
    if backend == "sim":
        return _skip(name, "camera.backend is sim: no camera to look for")
    if backend == "picamera2":
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:
                return _fail(
                    name,
                    f"cannot import {module} ({type(exc).__name__}: {exc}): install python3-picamera2 "
                    "with apt and create the venv with --system-site-packages",
                )
        nodes = sorted(p.name for p in [*dev.glob("media*"), *dev.glob("video*")])
        if not nodes:
            return _fail(
                name,
                f"no {dev}/media* or {dev}/video*: the camera is not detected; check the ribbon cable "
                "(contacts, both ends) and camera_auto_detect=1 in /boot/firmware/config.txt, then reboot",
            )
        return _ok(name, f"picamera2 importable; {len(nodes)} device nodes ({', '.join(nodes[:4])}...)")
    path = Path(device)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return _fail(
            name, f"{path} does not exist: plug the camera in or fix camera.device (v4l2-ctl --list-devices)"
        )
    except OSError as exc:
        return _fail(name, f"cannot stat {path}: {exc.strerror}")
    if not stat.S_ISCHR(mode):
        return _fail(name, f"{path} is not a character device: camera.device must name a V4L2 device")
    if not os.access(path, os.R_OK | os.W_OK):
        return _fail(name, f"no access to {path}: add the user to group video")
    return _ok(name, f"{path} is a character device")


def check_gpio(pin_factory: str, dev: Path = DEV) -> CheckResult:
    name = "gpio"
    if pin_factory == "mock":
        return _skip(name, "gpio.pin_factory is mock: pins are simulated")
    chips = sorted(dev.glob("gpiochip*"))
    if not chips:
        return _fail(
            name,
            f"no {dev}/gpiochip*: no GPIO controller visible (not a Pi, or a container without the "
            'device passed through); on a development machine set gpio.pin_factory = "mock"',
        )
    denied = [c.name for c in chips if not os.access(c, os.R_OK | os.W_OK)]
    if len(denied) == len(chips):
        return _fail(name, f"no access to {', '.join(denied)}: add the user to group gpio")
    return _ok(name, ", ".join(c.name for c in chips))


# --- display, audio, H.264 encoder ------------------------------------------------------------


def check_display(driver: str, dev: Path = DEV) -> CheckResult:
    """A KMS display device for the screen daemon (pygame on kmsdrm)."""
    name = "display"
    if driver != "kmsdrm" and not (driver == "auto" and not _desktop_session()):
        return _skip(name, f"screen.driver is {driver}: no KMS display to look for")
    cards = sorted((dev / "dri").glob("card*"))
    if not cards:
        return _fail(
            name,
            f"no {dev}/dri/card*: no KMS display driver; set dtoverlay=vc4-kms-v3d in "
            "/boot/firmware/config.txt and check the display cable",
        )
    if not any(os.access(c, os.R_OK | os.W_OK) for c in cards):
        return _fail(name, f"no access to {', '.join(c.name for c in cards)}: add the user to group video")
    return _ok(name, ", ".join(c.name for c in cards))


def _desktop_session() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def check_audio(backend: str, dev: Path = DEV) -> CheckResult:
    """ALSA playback (speaker: prompts, remote staff) and capture (microphone: calls)."""
    name = "audio"
    if backend == "sim":
        return _skip(name, "publisher.audio_backend is sim: no sound devices to look for")
    playback = sorted((dev / "snd").glob("pcmC*D*p"))
    capture = sorted((dev / "snd").glob("pcmC*D*c"))
    if not playback and not capture:
        return _fail(
            name,
            f"no sound devices in {dev}/snd: plug in the USB sound card or set dtparam=audio=on; "
            "`aplay -l` and `arecord -l` list them",
        )
    if not capture:
        return _warn(name, "no microphone (no capture device): remote staff cannot hear the person")
    if not playback:
        return _warn(name, "no speaker (no playback device): no prompts, remote staff cannot be heard")
    return _ok(name, f"{len(playback)} playback, {len(capture)} capture device(s)")


SYS_V4L = Path("/sys/class/video4linux")


def check_h264_encoder(backend: str, sys_v4l: Path = SYS_V4L) -> CheckResult:
    """The SoC's V4L2 memory-to-memory H.264 encoder (bcm2835-codec on a Pi 4 and earlier)."""
    name = "h264 encoder"
    if backend == "sim":
        return _skip(name, "camera.backend is sim: no encoder to look for")
    for node in sorted(sys_v4l.glob("video*")):
        try:
            label = (node / "name").read_text().strip()
        except OSError:
            continue
        if "encode" in label.lower():
            return _ok(name, f"hardware H.264 encoder /dev/{node.name} ({label})")
    return _warn(
        name,
        "no hardware H.264 encoder (a Pi 5 has none): video is encoded in software, which costs CPU; "
        "keep camera.width, camera.height and camera.fps modest",
    )


# --- the bus --------------------------------------------------------------------------------


async def check_bus(path: Path, timeout: float = 3.0, echoes: int = 3) -> CheckResult:
    """Connect to the broker and time `bus.echo` round trips; reports the best one."""
    name = "bus"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return _fail(
            name,
            f"no socket at {path}: the broker is not listening; systemctl start appliance-bus.socket "
            "(or check bus.socket and paths.run_dir)",
        )
    except OSError as exc:
        return _fail(name, f"cannot stat {path}: {exc.strerror}; run as root or a member of group appliance")
    if not stat.S_ISSOCK(mode):
        return _fail(name, f"{path} is not a socket: remove it, then systemctl restart appliance-bus.socket")
    # A plain connect first: its errno says more than the client's retry loop would.
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_unix_connection(path)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except ConnectionRefusedError:
        return _fail(
            name,
            f"connection refused at {path}: nothing listens (a socket left by a crashed broker?); "
            "systemctl restart appliance-bus.socket",
        )
    except PermissionError:
        return _fail(name, f"permission denied at {path}: run as root or a member of the socket's group")
    except TimeoutError:
        return _fail(name, f"connect to {path} timed out after {timeout:g} s: the broker is stuck")
    except OSError as exc:
        return _fail(name, f"cannot connect to {path}: {exc.strerror or exc}")

    client = BusClient(path, "doctor", backoff_max=0.2)
    token = os.urandom(16)
    rtts: list[float] = []
    try:
        await client.connect(timeout)
        for _ in range(echoes):
            start = time.perf_counter()
            reply = await client.request("bus.echo", EchoParams(data=token), timeout=timeout)
            rtts.append((time.perf_counter() - start) * 1000.0)
            if reply.data != token:
                return _fail(name, "bus.echo came back altered: the broker is corrupting frames")
    except BusError as exc:
        refused = client.last_error
        if refused is not None:
            return _fail(name, f"the broker refused this connection: {refused.message} ({refused.code})")
        return _fail(name, f"no echo from the broker at {path}: {exc}")
    finally:
        await client.close()
    best, first = round(min(rtts), 3), round(rtts[0], 3)
    detail = f"bus.echo round trip {best:.2f} ms at {path}"
    if first > 10 * best and first > 100:
        detail += f" (first {first:.0f} ms: the broker was probably started on demand)"
    if best > SLOW_RTT_MS:
        return _warn(
            name, f"{detail}: slow; the broker or the CPU is overloaded", rtt_ms=best, first_rtt_ms=first
        )
    return _ok(name, detail, rtt_ms=best, first_rtt_ms=first)


# --- systemd units --------------------------------------------------------------------------


# Services started by their socket on the first connection: inactive is their normal state
# while the socket listens (the setup page's daemon also exits again when unused).
SOCKETS = {
    "appliance-bus.service": "appliance-bus.socket",
    "appliance-setup.service": "appliance-setup.socket",
}


def appliance_units() -> list[str]:
    """The units of a kiosk: a service per daemon in start order, each socket-activated one
    after its socket."""
    units = []
    for daemon in daemons.START_ORDER:
        service = f"appliance-{daemon}.service"
        if service in SOCKETS:
            units.append(SOCKETS[service])
        units.append(service)
    return units


def recovery_unit(unit: str) -> str:
    """The instance of systemd/appliance-recover@.service that every daemon unit's OnFailure= starts."""
    return f"appliance-recover@{unit}.service"


def unit_result(
    unit: str,
    props: Mapping[str, str],
    *,
    in_build: bool,
    socket_active: bool,
    recovery: Mapping[str, str] | None = None,
) -> CheckResult:
    """What one unit's LoadState/ActiveState/SubState (and NRestarts, and the state of its
    recovery unit) mean for a technician."""
    result = _unit_state(unit, props, in_build=in_build, socket_active=socket_active)
    if result.status is not Status.FAIL or recovery is None or props.get("ActiveState") != "failed":
        return result
    # A daemon at its start limit is started again by its recovery unit after a wait; say which
    # of the two the technician is looking at: a recovery on its way, or one that failed too.
    rec = recovery_unit(unit)
    state = recovery.get("ActiveState", "")
    if state in ("activating", "active"):
        return _fail(result.name, f"{result.detail}; {rec} starts it again shortly")
    if state == "failed":
        return _fail(result.name, f"{result.detail}; its automatic recovery failed too: journalctl -u {rec}")
    return result


def _unit_state(unit: str, props: Mapping[str, str], *, in_build: bool, socket_active: bool) -> CheckResult:
    name = f"unit {unit}"
    load = props.get("LoadState", "")
    active = props.get("ActiveState", "")
    sub = props.get("SubState", "")
    logs = f"journalctl -u {unit} -n 50"
    if load == "not-found":
        if not in_build:
            return _skip(name, "not installed; its daemon is not part of this build")
        return _fail(name, "not installed: install the image's unit files, then systemctl daemon-reload")
    if load == "masked":
        return _fail(name, f"masked: systemctl unmask {unit}")
    if load not in ("loaded", ""):
        return _fail(name, f"cannot be loaded ({load}): systemctl status {unit}")
    if active == "active":
        # Restart= brings a crashed or watchdog-killed daemon back within seconds, so a kiosk can
        # look healthy while one of its daemons keeps dying; systemd counts those restarts.
        restarts = props.get("NRestarts", "0")
        if restarts.isdigit() and int(restarts) > 0:
            return _warn(
                name,
                f"active ({sub}), but systemd restarted it {restarts} times (crashes or watchdog): {logs}",
                restarts=int(restarts),
            )
        return _ok(name, f"active ({sub})")
    if sub == "auto-restart":
        return _fail(name, f"crashing and being restarted: {logs}")
    if active == "failed":
        return _fail(name, f"failed ({sub}): {logs}, then systemctl restart {unit}")
    if active in ("activating", "reloading", "deactivating"):
        return _warn(name, f"{active} ({sub}); if it stays so: {logs}")
    if unit in SOCKETS and socket_active:
        return _ok(name, f"inactive; {SOCKETS[unit]} starts it on the first connection")
    return _fail(name, f"{active or 'unknown'} ({sub}): systemctl start {unit}; if it stops again: {logs}")


def _parse_show(output: str) -> dict[str, dict[str, str]]:
    """`systemctl show` prints one block of Key=Value lines per unit, blank-line separated."""
    units: dict[str, dict[str, str]] = {}
    for block in output.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            units[props["Id"]] = props
    return units


def check_units(
    units: Iterable[str] | None = None,
    systemctl: str | None = None,
    systemd_run: Path = SYSTEMD_RUN,
    in_build: Iterable[str] | None = None,
) -> list[CheckResult]:
    """State of each appliance unit; skipped where systemd is not the init system."""
    if not systemd_run.is_dir():
        return [_skip("units", "systemd is not PID 1 here (a container or a development machine)")]
    systemctl = systemctl or shutil.which("systemctl")
    if systemctl is None:
        return [_skip("units", "systemctl not found")]
    names = list(units) if units is not None else appliance_units()
    built = set(in_build) if in_build is not None else set(daemons.available())
    recoveries = [recovery_unit(u) for u in names if u.endswith(".service")]
    # A socket-activated service's state is read with its socket's, asked for or not.
    sockets = [SOCKETS[u] for u in names if u in SOCKETS and SOCKETS[u] not in names]
    # `is-active` cannot tell a stopped unit from one that is not installed; `show` can.
    try:
        out = subprocess.run(
            [
                systemctl,
                "show",
                "--property=Id,LoadState,ActiveState,SubState,NRestarts",
                "--",
                *names,
                *recoveries,
                *sockets,
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return [_fail("units", f"systemctl show failed: {exc}")]
    states = _parse_show(out.stdout)
    if all(states.get(u, {}).get("LoadState", "not-found") == "not-found" for u in names):
        return [_warn("units", "no appliance units installed here (a development machine?)")]
    results = []
    for unit in names:
        daemon = unit.removeprefix("appliance-").rsplit(".", 1)[0]
        props = states.get(unit, {"LoadState": "not-found"})
        recovery = states.get(recovery_unit(unit))
        socket_active = states.get(SOCKETS.get(unit, ""), {}).get("ActiveState") == "active"
        results.append(
            unit_result(unit, props, in_build=daemon in built, socket_active=socket_active, recovery=recovery)
        )
    return results


# --- state and network ----------------------------------------------------------------------


def check_state_dir(path: Path, min_free_bytes: int = MIN_FREE_BYTES) -> CheckResult:
    name = "state dir"
    if not path.exists():
        return _fail(
            name, f"{path} does not exist: create it (the units' StateDirectory= does) or fix paths.state_dir"
        )
    if not path.is_dir():
        return _fail(name, f"{path} is not a directory: fix paths.state_dir")
    user = _user()
    try:
        # A real write: os.access() says yes on a read-only file system and to root.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-") as probe:
            probe.write(b"doctor")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        hint = (
            "a read-only file system (dmesg: SD card errors?)"
            if exc.errno == errno.EROFS
            else "check its owner"
        )
        return _fail(name, f"{path} is not writable by {user} ({exc.strerror}): {hint}")
    vfs = os.statvfs(path)
    free = vfs.f_bavail * vfs.f_frsize
    free_mb = free / (1024 * 1024)
    if free < min_free_bytes:
        return _warn(
            name,
            f"{path}: only {free_mb:.0f} MB free (under {min_free_bytes // (1024 * 1024)} MB); free space "
            "(journalctl --vacuum-size=50M) or lower screening.retention_days",
            free_bytes=free,
        )
    return _ok(name, f"{path} writable by {user}, {free_mb:.0f} MB free", free_bytes=free)


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


async def check_room_service(room_url: str | None, timeout: float = 3.0) -> CheckResult:
    """Resolve the room service's host and open a TCP connection to it (no TLS, no HTTP)."""
    name = "room service"
    if not room_url:
        return _skip(name, "publisher.room_url is not set: this kiosk does not publish to a room service")
    parts = urlsplit(room_url)
    try:
        port = parts.port or ROOM_DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    host = parts.hostname
    if parts.scheme not in ROOM_DEFAULT_PORTS or not host or port is None:
        return _fail(name, f"publisher.room_url = {room_url!r} is not an http(s) or ws(s) URL with a host")
    if problem := host_name_problem(host):
        return _fail(name, f"publisher.room_url = {room_url!r}: {problem}")
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        return _fail(
            name, f"cannot resolve {host}: no DNS answer in {timeout:g} s; check DNS (resolvectl status)"
        )
    except OSError as exc:
        return _fail(name, f"cannot resolve {host} ({exc.strerror or exc}): check DNS and publisher.room_url")
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, happy_eyeballs_delay=0.25)
    except TimeoutError:
        return _fail(
            name,
            f"no TCP connection to {host}:{port} in {timeout:g} s: a firewall may drop outgoing port {port}",
        )
    except OSError as exc:
        tried = ", ".join(dict.fromkeys(str(i[4][0]) for i in infos))
        return _fail(name, f"cannot connect to {host}:{port} ({tried}): {exc.strerror or exc}")
    ms = (time.perf_counter() - start) * 1000.0
    peer = writer.get_extra_info("peername")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return _ok(
        name, f"{host}:{port} reachable at {peer[0]} (TCP connect {ms:.0f} ms)", connect_ms=round(ms, 1)
    )


# --- the runner -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """Where the checks look on this machine; tests point it at a temporary directory."""

    dev: Path = DEV
    systemd_run: Path = SYSTEMD_RUN
    systemctl: str | None = None
    sys_v4l: Path = SYS_V4L
    bus_timeout: float = 3.0
    net_timeout: float = 3.0


async def run_checks(config: AppConfig, host: Host | None = None) -> list[CheckResult]:
    """Every check but the config's, in the order a technician would look."""
    host = host or Host()
    results: list[CheckResult] = []
    thermal = config.thermal
    if thermal.backend == "sim":
        reason = "thermal.backend is sim: no sensor to look for"
        results += [_skip("i2c adapter", reason), _skip("thermal sensor", reason)]
    else:
        adapter = check_i2c_adapter(thermal.i2c_bus, host.dev)
        results.append(adapter)
        if adapter.status is Status.FAIL:
            results.append(_skip("thermal sensor", "no I2C adapter to look on"))
        else:
            results.append(check_amg8833(thermal.i2c_bus, thermal.address, host.dev))
    results.append(check_camera(config.camera.backend, config.camera.device, host.dev))
    results.append(check_h264_encoder(config.camera.backend, host.sys_v4l))
    results.append(check_gpio(config.gpio.pin_factory, host.dev))
    results.append(check_display(config.screen.driver, host.dev))
    results.append(check_audio(config.publisher.audio_backend, host.dev))
    results.append(await check_bus(config.bus_socket, host.bus_timeout))
    results += check_units(systemctl=host.systemctl, systemd_run=host.systemd_run)
    results.append(check_state_dir(config.paths.state_dir))
    results.append(await check_room_service(config.publisher.room_url, host.net_timeout))
    return results


async def diagnose(path: str | os.PathLike[str] | None, host: Host | None = None) -> list[CheckResult]:
    result, config = check_config(path)
    if config is None:
        return [result]
    return [result, *await run_checks(config, host)]


def render_text(results: Iterable[CheckResult]) -> str:
    results = list(results)
    width = max((len(r.name) for r in results), default=0)
    lines = [f"{r.status.label:<5} {r.name:<{width}}  {r.detail}" for r in results]
    counts = {s: sum(r.status is s for r in results) for s in Status}
    summary = ", ".join(f"{counts[s]} {s.label}" for s in (Status.FAIL, Status.WARN, Status.OK, Status.SKIP))
    if len(results) == 1 and counts[Status.FAIL]:
        summary += " (the other checks need a valid config)"
    return "\n".join([*lines, summary])


def render_json(results: Iterable[CheckResult]) -> str:
    results = list(results)
    ok = not any(r.status is Status.FAIL for r in results)
    return json.dumps({"ok": ok, "checks": [r.to_json() for r in results]}, indent=2)


def run_doctor(config_path: str | None, as_json: bool) -> int:
    # The bus client logs its reconnect attempts; here the check's one line says it better.
    logging.getLogger("appliance").addHandler(logging.NullHandler())
    results = asyncio.run(diagnose(config_path))
    print(render_json(results) if as_json else render_text(results))
    return 1 if any(r.status is Status.FAIL for r in results) else 0
