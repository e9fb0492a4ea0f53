"""The config model and loader: defaults, errors that name file and key, env overrides, and
the atomic writes config and state go through."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import config as config_module
from appliance.atomic import atomic_write
from appliance.cli import main as cli_main
from appliance.config import AppConfig, load_config, replace
from appliance.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("APPLIANCE_CONFIG", "APPLIANCE_STATE_DIR", "APPLIANCE_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", tmp_path / "absent" / "appliance.toml")


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_defaults_when_the_default_file_is_absent() -> None:
    config = load_config()
    assert config == AppConfig()
    assert config.bus_socket == Path("/run/appliance/bus.sock")
    assert config.bus.max_frame_bytes == 4 * 1024 * 1024
    assert config.thermal.backend == "amg8833"


def test_a_file_overrides_some_values(tmp_path: Path) -> None:
    path = write(tmp_path, '[thermal]\nbackend = "sim"\n[bus]\nsocket_mode = 0o600\nallowed_uids = [1001]\n')
    config = load_config(path)
    assert config.thermal.backend == "sim"
    assert config.bus.socket_mode == 0o600 and config.bus.allowed_uids == [1001]
    assert config.screening == AppConfig().screening


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[bus]\nmax_frame = 5\n", "bus.max_frame", "Extra inputs are not permitted"),
        ("[nope]\nx = 1\n", "nope", "Extra inputs are not permitted"),
        ('[bus]\nevent_queue = "lots"\n', "bus.event_queue", "valid integer"),
        ("[thermal]\ni2c_bus = 99\n", "thermal.i2c_bus", "less than or equal to 32"),
        ('[camera]\nbackend = "webcam"\n', "camera.backend", "'picamera2', 'v4l2' or 'sim'"),
        ('[bus]\nallowed_uids = [1, "x"]\n', "bus.allowed_uids.1", "valid integer"),
        ("bus = 3\n", "bus", "valid dictionary"),
        (
            "[screening]\ndistance_min_m = 0.9\ndistance_max_m = 0.5\n",
            "screening.distance_min_m",
            "must be less than screening.distance_max_m",
        ),
    ],
)
def test_bad_key_or_type_names_the_file_and_the_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path)
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    "text",
    ["[bus\nx = 1\n", "[bus]\nevent_queue = \n", "[bus]\n[bus]\n", b"\xff\xfe[bus]\n"],
    ids=["unclosed table", "missing value", "duplicate table", "not utf-8"],
)
def test_toml_syntax_errors(tmp_path: Path, text: str | bytes) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"not valid TOML") as info:
        load_config(path)
    assert info.value.file == str(path)


def test_explicit_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"file not found"):
        load_config(tmp_path / "missing.toml")
    monkeypatch.setenv("APPLIANCE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing.toml: file not found"):
        load_config()


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_config(tmp_path)  # a directory


def test_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[paths]\nrun_dir = "/from/file"\nstate_dir = "/from/file/state"\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(path))
    monkeypatch.setenv("APPLIANCE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("APPLIANCE_STATE_DIR", str(tmp_path / "state"))
    config = load_config()
    assert config.paths.run_dir == tmp_path / "run"
    assert config.paths.state_dir == tmp_path / "state"
    assert config.bus_socket == tmp_path / "run" / "bus.sock"
    untouched = load_config(apply_env=False)
    assert untouched.paths.run_dir == Path("/from/file")


def test_explicit_bus_socket_wins_over_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_RUN_DIR", str(tmp_path / "run"))
    config = load_config(write(tmp_path, '[bus]\nsocket = "/srv/bus.sock"\n'))
    assert config.bus_socket == Path("/srv/bus.sock")


def test_replace_validates_again() -> None:
    config = replace(AppConfig(), thermal={"backend": "sim"})
    assert config.thermal.backend == "sim"
    with pytest.raises(ConfigError) as info:
        replace(AppConfig(), thermal={"i2c_bus": -1})
    assert (info.value.file, info.value.key) == ("<override>", "thermal.i2c_bus")


@pytest.mark.parametrize(
    ("text", "code", "out", "err"),
    [
        ('[gpio]\npin_factory = "mock"\n', 0, ": ok", ""),
        ("[gpio]\npin_factory = 1\n", 1, "", "gpio.pin_factory"),
        ("[gpio\n", 1, "", "not valid TOML"),
    ],
)
def test_config_check_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, code: int, out: str, err: str
) -> None:
    path = write(tmp_path, text)
    assert cli_main(["config", "check", str(path)]) == code
    captured = capsys.readouterr()
    assert out in captured.out and err in captured.err
    if code:
        assert captured.err.startswith(f"error: {path}")


def test_config_check_command_in_a_process(tmp_path: Path) -> None:
    good = write(tmp_path, "")
    bad = tmp_path / "bad.toml"
    bad.write_text("[bus]\nmax_frame_bytes = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    run = [sys.executable, "-m", "appliance", "config", "check"]
    ok = subprocess.run([*run, str(good)], env=env, capture_output=True, text=True, timeout=30)
    assert (ok.returncode, ok.stdout.strip()) == (0, f"{good}: ok")
    fail = subprocess.run([*run, str(bad)], env=env, capture_output=True, text=True, timeout=30)
    assert fail.returncode == 1
    assert f"{bad}: bus.max_frame_bytes:" in fail.stderr and "Traceback" not in fail.stderr
    missing = subprocess.run([*run, str(tmp_path / "nope.toml")], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "file not found" in missing.stderr


# --- atomic writes ---------------------------------------------------------------------------


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "calibration.json"
    atomic_write(target, '{"offset_c": 0.5}')
    atomic_write(target, b'{"offset_c": 0.7}')
    assert target.read_bytes() == b'{"offset_c": 0.7}'
    assert os.listdir(target.parent) == ["calibration.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644])
def test_atomic_write_honours_the_mode_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    old = os.umask(0o077 if mode != 0o600 else 0)
    try:
        atomic_write(tmp_path / "secret", "token", mode=mode)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == mode


def test_atomic_write_of_a_secret_replaces_a_world_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "device_token"
    target.write_text("old")
    target.chmod(0o644)
    atomic_write(target, "new", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "new"


def test_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.mkdir()  # os.replace cannot put a file over a directory
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        atomic_write(target, "data")
    assert sorted(os.listdir(tmp_path)) == ["state"]
    assert (target / "keep").read_text() == "x"
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "bad-mode", "data", mode="0600")  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == ["state"]
    assert len(os.listdir("/proc/self/fd")) == fds  # the temp file's descriptor was closed


def test_a_pin_can_be_marked_not_fitted_in_toml(tmp_path: Path) -> None:
    file = tmp_path / "appliance.toml"
    file.write_text('[gpio]\nbuzzer = "none"\nrelay = 23\n[thermal]\nint_pin = "None"\n')
    config = load_config(file, apply_env=False)
    assert config.gpio.buzzer is None
    assert config.gpio.relay == 23
    assert config.thermal.int_pin is None
    file.write_text('[gpio]\nbuzzer = "off"\n')
    with pytest.raises(ConfigError) as err:
        load_config(file, apply_env=False)
    assert "gpio.buzzer" in str(err.value)


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("10", 10), ("900", 900), ("86400", 86400)])
def test_setup_idle_exit_takes_0_for_never_or_10_to_86400(tmp_path: Path, value: str, expected: int) -> None:
    assert load_config(write(tmp_path, f"[setup]\nidle_exit_s = {value}\n")).setup.idle_exit_s == expected


def test_setup_idle_exit_defaults_to_900() -> None:
    assert AppConfig().setup.idle_exit_s == 900


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        ("5", "setup", "idle_exit_s must be 0 (never) or from 10 to 86400 seconds, not 5"),
        ("-1", "setup.idle_exit_s", "greater than or equal to 0"),
        ("86401", "setup.idle_exit_s", "less than or equal to 86400"),
        ('"soon"', "setup.idle_exit_s", "valid integer"),
    ],
)
def test_setup_idle_exit_out_of_range_names_the_key(
    tmp_path: Path, value: str, key: str, reason: str
) -> None:
    path = write(tmp_path, f"[setup]\nidle_exit_s = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert reason in info.value.reason
    assert "idle_exit_s" in str(info.value)
