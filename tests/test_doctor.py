"""`appliance doctor`: each check against a real broker, real sockets and a fake /dev tree."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from appliance import doctor
from appliance.bus.broker import Broker
from appliance.config import load_config, replace
from appliance.doctor import CheckResult, Host, Status

SIM_CONFIG = """\
[paths]
state_dir = "{state}"
run_dir = "{run}"

[thermal]
backend = "sim"

[camera]
backend = "sim"

[gpio]
pin_factory = "mock"

[publisher]
audio_backend = "sim"

[screen]
driver = "dummy"
"""


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("APPLIANCE_CONFIG", "APPLIANCE_STATE_DIR", "APPLIANCE_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "state").mkdir()
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can come close.
    run = Path(f"/tmp/doctor-{os.getpid()}-{tmp_path.name}")
    path = tmp_path / "appliance.toml"
    path.write_text(SIM_CONFIG.format(state=tmp_path / "state", run=run))
    yield path
    for leftover in run.glob("*"):
        leftover.unlink()
    if run.exists():
        run.rmdir()


@pytest.fixture
async def broker(config_file: Path) -> AsyncIterator[Path]:
    sock = load_config(config_file).bus_socket
    b = Broker()
    await b.start(sock)
    try:
        yield sock
    finally:
        await b.close()


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """Nothing of this machine's /dev or systemd: a tree of our own."""
    (tmp_path / "dev").mkdir()
    return Host(dev=tmp_path / "dev", systemd_run=tmp_path / "no-systemd", bus_timeout=2.0)


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


# --- the bus against a real broker ----------------------------------------------------------


async def test_bus_check_passes_with_a_measured_round_trip(broker: Path) -> None:
    result = await doctor.check_bus(broker, timeout=2.0)
    assert result.status is Status.OK, result.detail
    rtt = result.data["rtt_ms"]
    assert isinstance(rtt, float) and 0 < rtt < 1000
    assert f"{rtt:.2f} ms" in result.detail


async def test_bus_check_fails_without_a_broker(config_file: Path) -> None:
    sock = load_config(config_file).bus_socket
    result = await doctor.check_bus(sock, timeout=1.0)
    assert result.status is Status.FAIL
    assert f"no socket at {sock}" in result.detail
    assert "appliance-bus.socket" in result.detail


async def test_bus_check_names_a_socket_nobody_listens_on(tmp_path: Path) -> None:
    path = tmp_path / "bus.sock"
    # What a crashed broker leaves behind: the file of a socket that no longer listens.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    result = await doctor.check_bus(path, timeout=1.0)
    assert result.status is Status.FAIL
    assert "connection refused" in result.detail


async def test_bus_check_refuses_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "bus.sock"
    path.write_text("")
    result = await doctor.check_bus(path, timeout=1.0)
    assert result.status is Status.FAIL
    assert "not a socket" in result.detail


async def test_a_sim_kiosk_with_its_broker_has_no_failures(
    config_file: Path, broker: Path, host: Host
) -> None:
    results = await doctor.diagnose(config_file, host)
    statuses = {r.name: r.status for r in results}
    assert statuses == {
        "config": Status.OK,
        "i2c adapter": Status.SKIP,
        "thermal sensor": Status.SKIP,
        "camera": Status.SKIP,
        "h264 encoder": Status.SKIP,
        "gpio": Status.SKIP,
        "display": Status.SKIP,
        "audio": Status.SKIP,
        "bus": Status.OK,
        "units": Status.SKIP,
        "state dir": Status.OK,
        "room service": Status.SKIP,
    }
    assert "thermal.backend is sim" in by_name(results)["thermal sensor"].detail


async def test_an_invalid_config_fails_naming_file_and_key(tmp_path: Path, host: Host) -> None:
    bad = tmp_path / "appliance.toml"
    bad.write_text("[thermal]\naddress = 0x70\n")
    results = await doctor.diagnose(bad, host)
    assert [r.status for r in results] == [Status.FAIL]
    assert f"{bad}: thermal.address" in results[0].detail


# --- the command, as a technician runs it ---------------------------------------------------


async def run_cli(*args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance", "doctor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli_exits_zero_with_a_broker(config_file: Path, broker: Path) -> None:
    code, out = await run_cli("--config", str(config_file))
    assert code == 0, out
    bus_line = next(line for line in out.splitlines() if line.startswith("ok    bus"))
    assert "round trip" in bus_line and " ms" in bus_line
    assert "0 FAIL" in out


async def test_cli_exits_one_without_a_broker(config_file: Path) -> None:
    code, out = await run_cli("--config", str(config_file))
    assert code == 1, out
    assert any(line.startswith("FAIL  bus") and "no socket at" in line for line in out.splitlines()), out
    # The client's reconnect warnings must not clutter the report.
    assert "retrying" not in out


async def test_cli_json(config_file: Path, broker: Path) -> None:
    code, out = await run_cli("--config", str(config_file), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    bus = next(c for c in report["checks"] if c["name"] == "bus")
    assert bus["status"] == "ok" and bus["data"]["rtt_ms"] > 0


async def test_cli_json_without_a_broker(config_file: Path) -> None:
    code, out = await run_cli("--config", str(config_file), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert {c["name"]: c["status"] for c in report["checks"]}["bus"] == "fail"


# --- I2C and the thermal sensor -------------------------------------------------------------


def test_i2c_adapter_missing_lists_the_ones_present(host: Host) -> None:
    (host.dev / "i2c-20").touch()
    result = doctor.check_i2c_adapter(1, host.dev)
    assert result.status is Status.FAIL
    assert "i2c-1 does not exist" in result.detail and "i2c-20" in result.detail
    assert "dtparam=i2c_arm=on" in result.detail


def test_i2c_adapter_must_be_a_character_device(host: Host) -> None:
    (host.dev / "i2c-1").touch()
    result = doctor.check_i2c_adapter(1, host.dev)
    assert result.status is Status.FAIL and "not a character device" in result.detail
    (host.dev / "i2c-1").unlink()
    (host.dev / "i2c-1").symlink_to("/dev/null")  # a real character device
    assert doctor.check_i2c_adapter(1, host.dev).status is Status.OK


def test_the_real_register_read_refuses_a_device_that_is_not_i2c(host: Host) -> None:
    # The real open/ioctl path: /dev/null refuses I2C_SLAVE, as anything but an adapter does.
    (host.dev / "i2c-1").symlink_to("/dev/null")
    with pytest.raises(OSError) as info:
        doctor.read_i2c_register(host.dev / "i2c-1", 0x69, 0x00)
    assert info.value.errno in (errno.ENOTTY, errno.EINVAL)
    result = doctor.check_amg8833(1, 0x69, host.dev)
    assert result.status is Status.FAIL and "not an I2C adapter" in result.detail


class FakeI2CBus:
    """Devices by address, each a register map; absent addresses do not acknowledge."""

    def __init__(self, devices: dict[int, dict[int, int]], error: int | None = None) -> None:
        self.devices = devices
        self.error = error
        self.reads: list[tuple[int, int]] = []

    def __call__(self, path: Path, address: int, register: int) -> int:
        self.reads.append((address, register))
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        if address not in self.devices:
            raise OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))
        return self.devices[address].get(register, 0xFF)


def test_amg8833_answers_at_its_address(host: Host) -> None:
    result = doctor.check_amg8833(1, 0x69, host.dev, read=FakeI2CBus({0x69: {0x00: 0x00}}))
    assert result.status is Status.OK
    assert "answers at 0x69" in result.detail and "normal mode" in result.detail


def test_amg8833_at_the_other_address_is_named(host: Host) -> None:
    bus = FakeI2CBus({0x68: {0x00: 0x00}})
    result = doctor.check_amg8833(1, 0x69, host.dev, read=bus)
    assert result.status is Status.FAIL
    assert "nothing answers at 0x69" in result.detail and "thermal.address = 0x68" in result.detail
    assert bus.reads == [(0x69, 0x00), (0x68, 0x00)]


def test_amg8833_absent_points_at_the_wiring(host: Host) -> None:
    result = doctor.check_amg8833(1, 0x69, host.dev, read=FakeI2CBus({}))
    assert result.status is Status.FAIL and "wiring" in result.detail


def test_amg8833_claimed_by_a_kernel_driver(host: Host) -> None:
    result = doctor.check_amg8833(1, 0x69, host.dev, read=FakeI2CBus({}, error=errno.EBUSY))
    assert result.status is Status.FAIL and "kernel driver" in result.detail


def test_another_chip_at_the_address_is_a_warning(host: Host) -> None:
    result = doctor.check_amg8833(1, 0x69, host.dev, read=FakeI2CBus({0x69: {0x00: 0x5A}}))
    assert result.status is Status.WARN and "0x5a" in result.detail


async def test_runner_skips_the_sensor_without_an_adapter(config_file: Path, host: Host) -> None:
    config = replace(load_config(config_file), thermal={"backend": "amg8833"})
    results = by_name(await doctor.run_checks(config, host))
    assert results["i2c adapter"].status is Status.FAIL
    assert results["thermal sensor"].status is Status.SKIP


# --- camera and GPIO ------------------------------------------------------------------------


def test_gpio(host: Host) -> None:
    assert doctor.check_gpio("mock", host.dev).status is Status.SKIP
    missing = doctor.check_gpio("auto", host.dev)
    assert missing.status is Status.FAIL and "gpiochip" in missing.detail
    (host.dev / "gpiochip0").touch()
    (host.dev / "gpiochip4").touch()
    present = doctor.check_gpio("lgpio", host.dev)
    assert present.status is Status.OK and present.detail == "gpiochip0, gpiochip4"


def test_camera_picamera2(host: Host) -> None:
    missing_lib = doctor.check_camera("picamera2", "", host.dev, modules=["no_such_module_for_doctor"])
    assert missing_lib.status is Status.FAIL and "--system-site-packages" in missing_lib.detail
    no_nodes = doctor.check_camera("picamera2", "", host.dev, modules=["json"])
    assert no_nodes.status is Status.FAIL and "ribbon cable" in no_nodes.detail
    (host.dev / "media0").touch()
    (host.dev / "video0").touch()
    assert doctor.check_camera("picamera2", "", host.dev, modules=["json"]).status is Status.OK


def test_camera_v4l2(host: Host) -> None:
    assert doctor.check_camera("sim", "/dev/video0", host.dev).status is Status.SKIP
    absent = doctor.check_camera("v4l2", host.dev / "video0", host.dev)
    assert absent.status is Status.FAIL and "does not exist" in absent.detail
    (host.dev / "video0").touch()
    plain = doctor.check_camera("v4l2", host.dev / "video0", host.dev)
    assert plain.status is Status.FAIL and "not a character device" in plain.detail
    assert doctor.check_camera("v4l2", "/dev/null", host.dev).status is Status.OK


# --- systemd units --------------------------------------------------------------------------


FAKE_SYSTEMCTL = """\
#!{python}
import sys
table = {table!r}
units = sys.argv[sys.argv.index("--") + 1:]
blocks = []
for unit in units:
    # A template's instances load on demand: one never started shows as loaded, inactive.
    default = ("loaded", "inactive", "dead") if "@" in unit else ("not-found", "inactive", "dead")
    load, active, sub, *restarts = table.get(unit, default)
    blocks.append(
        f"Id={{unit}}\\nLoadState={{load}}\\nActiveState={{active}}\\nSubState={{sub}}"
        f"\\nNRestarts={{restarts[0] if restarts else 0}}"
    )
print("\\n\\n".join(blocks))
"""


def make_systemctl(path: Path, table: dict[str, tuple[str, ...]]) -> Path:
    """A systemctl that answers `show` from a table, as the real one prints it."""
    path.write_text(FAKE_SYSTEMCTL.format(python=sys.executable, table=table))
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_systemctl(tmp_path: Path) -> Iterator[Path]:
    yield make_systemctl(
        tmp_path / "systemctl",
        {
            "appliance-bus.socket": ("loaded", "active", "listening"),
            "appliance-bus.service": ("loaded", "inactive", "dead"),
            "appliance-thermal.service": ("loaded", "active", "running"),
            "appliance-camera.service": ("loaded", "failed", "failed"),
            "appliance-screening.service": ("loaded", "activating", "auto-restart"),
            "appliance-screen.service": ("loaded", "active", "running", "3"),
            "appliance-setup.socket": ("loaded", "active", "listening"),
            "appliance-setup.service": ("loaded", "failed", "failed"),
            "appliance-recover@appliance-camera.service.service": ("loaded", "activating", "start-pre"),
            "appliance-recover@appliance-setup.service.service": ("loaded", "failed", "failed"),
        },
    )


def test_units_skipped_without_systemd(host: Host) -> None:
    results = doctor.check_units(systemd_run=host.systemd_run)
    assert [r.status for r in results] == [Status.SKIP]


def test_units_from_systemctl(tmp_path: Path, fake_systemctl: Path) -> None:
    (tmp_path / "systemd").mkdir()
    results = doctor.check_units(
        systemctl=str(fake_systemctl),
        systemd_run=tmp_path / "systemd",
        in_build=["bus", "thermal", "camera", "screening", "setup"],
    )
    got = {r.name.removeprefix("unit "): (r.status, r.detail) for r in results}
    assert list(got) == doctor.appliance_units()  # one line per unit; the recoveries fold into theirs
    assert got["appliance-bus.socket"][0] is Status.OK
    assert got["appliance-bus.service"][0] is Status.OK  # socket-activated, starts on demand
    assert got["appliance-thermal.service"][0] is Status.OK
    # Failed at its start limit, its recovery waiting to start it again.
    camera = got["appliance-camera.service"]
    assert camera[0] is Status.FAIL
    assert "journalctl -u appliance-camera.service" in camera[1]
    assert "appliance-recover@appliance-camera.service.service starts it again" in camera[1]
    assert got["appliance-screening.service"][0] is Status.FAIL
    assert "crashing" in got["appliance-screening.service"][1]
    # Running, but systemd has had to restart it: a daemon that crashes now and then.
    assert got["appliance-screen.service"][0] is Status.WARN
    assert "restarted it 3 times" in got["appliance-screen.service"][1]
    # Failed, and the recovery that should have started it again failed too.
    setup = got["appliance-setup.service"]
    assert setup[0] is Status.FAIL
    assert "recovery failed" in setup[1]
    assert "journalctl -u appliance-recover@appliance-setup.service.service" in setup[1]
    assert got["appliance-publisher.service"][0] is Status.SKIP  # not part of this build, not installed


@pytest.mark.parametrize(
    ("socket", "expected"),
    [(("loaded", "active", "listening"), Status.OK), (("loaded", "failed", "failed"), Status.FAIL)],
)
def test_the_setup_page_waits_on_its_socket(
    tmp_path: Path, socket: tuple[str, ...], expected: Status
) -> None:
    """The setup daemon is socket-activated: inactive is its normal state while its socket
    listens, and a failure when nothing listens for the technician."""
    (tmp_path / "systemd").mkdir()
    systemctl = make_systemctl(
        tmp_path / "systemctl",
        {"appliance-setup.socket": socket, "appliance-setup.service": ("loaded", "inactive", "dead")},
    )
    results = doctor.check_units(
        ["appliance-setup.service"],  # its socket is read with it
        systemctl=str(systemctl),
        systemd_run=tmp_path / "systemd",
        in_build=["setup"],
    )
    got = {r.name.removeprefix("unit "): r for r in results}
    assert got["appliance-setup.service"].status is expected
    if expected is Status.OK:
        assert (
            "appliance-setup.socket starts it on the first connection"
            in got["appliance-setup.service"].detail
        )
    assert "appliance-setup.socket" in doctor.appliance_units()


def test_a_unit_of_this_build_not_installed_fails(tmp_path: Path, fake_systemctl: Path) -> None:
    (tmp_path / "systemd").mkdir()
    results = doctor.check_units(
        ["appliance-bus.socket", "appliance-room.service"],
        systemctl=str(fake_systemctl),
        systemd_run=tmp_path / "systemd",
        in_build=["bus", "room"],
    )
    got = {r.name.removeprefix("unit "): r for r in results}
    assert got["appliance-bus.socket"].status is Status.OK
    assert got["appliance-room.service"].status is Status.FAIL
    assert "not installed" in got["appliance-room.service"].detail


def test_no_appliance_units_at_all_is_a_warning(tmp_path: Path, fake_systemctl: Path) -> None:
    (tmp_path / "systemd").mkdir()
    results = doctor.check_units(
        ["appliance-other.service"], systemctl=str(fake_systemctl), systemd_run=tmp_path / "systemd"
    )
    assert [r.status for r in results] == [Status.WARN]


# --- state dir and network ------------------------------------------------------------------


def test_state_dir(tmp_path: Path) -> None:
    missing = doctor.check_state_dir(tmp_path / "nope")
    assert missing.status is Status.FAIL and "does not exist" in missing.detail
    (tmp_path / "file").touch()
    assert doctor.check_state_dir(tmp_path / "file").status is Status.FAIL
    ok = doctor.check_state_dir(tmp_path)
    assert ok.status is Status.OK and "MB free" in ok.detail
    assert list(tmp_path.glob(".doctor-*")) == []  # the write probe cleans up after itself
    tight = doctor.check_state_dir(tmp_path, min_free_bytes=2**62)
    assert tight.status is Status.WARN and "MB free" in tight.detail


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_state_dir_not_writable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = doctor.check_state_dir(locked)
    assert result.status is Status.FAIL and "not writable" in result.detail


async def test_room_service() -> None:
    assert (await doctor.check_room_service(None)).status is Status.SKIP
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        ok = await doctor.check_room_service(f"https://127.0.0.1:{port}/rooms")
    assert ok.status is Status.OK and f"127.0.0.1:{port} reachable" in ok.detail
    # The server is gone: nothing listens on that port now.
    refused = await doctor.check_room_service(f"http://127.0.0.1:{port}")
    assert refused.status is Status.FAIL and "cannot connect" in refused.detail


async def test_room_service_bad_url_and_unknown_host(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = await doctor.check_room_service("rooms.example.org")
    assert bad.status is Status.FAIL and "publisher.room_url" in bad.detail

    def no_such_host(host: object, *args: object, **kwargs: object) -> object:
        # The resolver's answer for a name that does not exist, without asking a real resolver.
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    unknown = await doctor.check_room_service("https://no-such-host.invalid", timeout=3.0)
    assert unknown.status is Status.FAIL and "cannot resolve no-such-host.invalid" in unknown.detail


# --- display, audio, H.264 encoder ----------------------------------------------------------


def test_display(host: Host) -> None:
    assert doctor.check_display("dummy", host.dev).status is Status.SKIP
    missing = doctor.check_display("kmsdrm", host.dev)
    assert missing.status is Status.FAIL and "vc4-kms-v3d" in missing.detail
    (host.dev / "dri").mkdir()
    (host.dev / "dri" / "card1").touch()
    assert doctor.check_display("kmsdrm", host.dev).status is Status.OK


def test_audio(host: Host) -> None:
    assert doctor.check_audio("sim", host.dev).status is Status.SKIP
    assert doctor.check_audio("alsa", host.dev).status is Status.FAIL
    (host.dev / "snd").mkdir()
    (host.dev / "snd" / "pcmC0D0p").touch()
    speaker_only = doctor.check_audio("alsa", host.dev)
    assert speaker_only.status is Status.WARN and "microphone" in speaker_only.detail
    (host.dev / "snd" / "pcmC1D0c").touch()
    assert doctor.check_audio("alsa", host.dev).status is Status.OK


def test_h264_encoder(tmp_path: Path) -> None:
    sys_v4l = tmp_path / "video4linux"
    assert doctor.check_h264_encoder("sim", sys_v4l).status is Status.SKIP
    (sys_v4l / "video0").mkdir(parents=True)
    (sys_v4l / "video0" / "name").write_text("unicam-image\n")
    assert doctor.check_h264_encoder("picamera2", sys_v4l).status is Status.WARN
    (sys_v4l / "video11").mkdir()
    (sys_v4l / "video11" / "name").write_text("bcm2835-codec-encode\n")
    found = doctor.check_h264_encoder("picamera2", sys_v4l)
    assert found.status is Status.OK and "/dev/video11" in found.detail


@pytest.mark.parametrize("url", ["https://rooms..example.org", "https://" + "a" * 64 + ".example.org"])
async def test_room_service_host_with_an_empty_or_long_label(url: str) -> None:
    """A typo such as a doubled dot: Python's IDNA codec refuses the name before any DNS query,
    with a UnicodeError that is not an OSError. The doctor reports it instead of a traceback."""
    bad = await doctor.check_room_service(url)
    assert bad.status is Status.FAIL and "publisher.room_url" in bad.detail
