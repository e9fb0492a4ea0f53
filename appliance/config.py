"""The appliance's configuration: one validated model, loaded from one TOML file.

/etc/appliance/appliance.toml on a device; config/appliance.toml in the repository holds the
shipped defaults with comments. Every section forbids unknown keys, so a typo is an error that
names the file and the key instead of a setting silently ignored.

Paths can be moved for development and tests by APPLIANCE_CONFIG (the file),
APPLIANCE_STATE_DIR and APPLIANCE_RUN_DIR, which win over the file.

The sections are msgspec Structs, not pydantic models: every kiosk daemon imports this module,
and defining the first pydantic model costs a process ~15 MB of RSS. msgspec checks types and
bounds when data is converted (parse_config), not when a section is constructed in Python.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field

from appliance.errors import ConfigError
from appliance.validate import Invalid, convert

DEFAULT_CONFIG_PATH = Path("/etc/appliance/appliance.toml")
DAEMONS = ("bus", "camera", "thermal", "screening", "publisher", "screen", "setup", "room")

# A BCM GPIO number, or "none" in the file for a part that is not fitted (see _none_pins).
Pin = Annotated[int, Meta(ge=0, le=53)] | None


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the sections: frozen, and an unknown key is an error. Each section repeats
    frozen=True (mypy takes a subclass as frozen only when it says so) and kw_only=True (which
    msgspec does not inherit)."""


class PathsConfig(Section, frozen=True, kw_only=True):
    state_dir: Annotated[Path, Meta(description="credentials, events.db, calibration")] = Path(
        "/var/lib/appliance"
    )
    run_dir: Annotated[Path, Meta(description="sockets and shared-memory rings")] = Path("/run/appliance")


class BusConfig(Section, frozen=True, kw_only=True):
    socket: Annotated[Path | None, Meta(description="broker socket; default <run_dir>/bus.sock")] = None
    max_frame_bytes: Annotated[int, Meta(ge=1024, le=64 * 1024 * 1024)] = 4 * 1024 * 1024
    event_queue: Annotated[
        int, Meta(ge=16, le=1_000_000, description="events held for a paused consumer before it is cut off")
    ] = 4096
    socket_mode: Annotated[int, Meta(ge=0, le=0o777)] = 0o660
    allowed_uids: Annotated[
        list[int], Meta(description="peers allowed besides root and the broker's own uid")
    ] = field(default_factory=list)
    allowed_groups: list[str] = field(default_factory=lambda: ["appliance"])


class ThermalConfig(Section, frozen=True, kw_only=True):
    backend: Literal["amg8833", "sim"] = "amg8833"
    i2c_bus: Annotated[int, Meta(ge=0, le=32)] = 1
    address: Literal[0x68, 0x69] = 0x69
    int_pin: Annotated[Pin, Meta(description="BCM GPIO wired to the sensor's INT, or none")] = 4
    active_fps: Literal[10] = 10
    idle_fps: Literal[1, 10] = 1
    idle_after_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    presence_delta_c: Annotated[float, Meta(gt=0, le=20, description="interrupt level above background")] = (
        3.0
    )
    moving_average: bool = False
    warmup_s: Annotated[float, Meta(ge=0, le=120)] = 15.0
    # At least a minute: a person is screened within seconds, and is no fixture before that.
    fixture_after_s: Annotated[
        float, Meta(ge=60, le=86400, description="steady warm pixels stop counting as presence after this")
    ] = 300.0


class ScreeningConfig(Section, frozen=True, kw_only=True):
    threshold_c: Annotated[float, Meta(ge=35.0, le=41.0)] = 38.0
    hysteresis_c: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.2
    units: Literal["C", "F"] = "C"
    distance_min_m: Annotated[float, Meta(gt=0, le=3)] = 0.3
    distance_max_m: Annotated[float, Meta(gt=0, le=3)] = 0.55
    system_warmup_s: Annotated[float, Meta(ge=0, le=3600)] = 30.0
    retention_days: Annotated[int, Meta(ge=1, le=3650)] = 30


class GpioConfig(Section, frozen=True, kw_only=True):
    pin_factory: Literal["auto", "lgpio", "rpigpio", "mock"] = "auto"
    green_led: Pin = 17
    red_led: Pin = 27
    buzzer: Pin = 22
    relay: Pin = None
    relay_enabled: bool = False
    relay_open_s: Annotated[float, Meta(gt=0, le=60)] = 3.0


class CameraConfig(Section, frozen=True, kw_only=True):
    backend: Literal["picamera2", "v4l2", "sim"] = "picamera2"
    device: str = "/dev/video0"
    width: Annotated[int, Meta(ge=160, le=1920)] = 640
    height: Annotated[int, Meta(ge=120, le=1080)] = 480
    fps: Annotated[int, Meta(ge=1, le=60)] = 30
    bitrate: Annotated[int, Meta(ge=100_000, le=20_000_000)] = 1_500_000
    keyframe_interval_s: Annotated[float, Meta(gt=0, le=10)] = 1.0
    rotation: Literal[0, 90, 180, 270] = 0
    hflip: bool = False
    vflip: bool = False
    preview_width: Annotated[int, Meta(ge=80, le=1280)] = 320
    preview_height: Annotated[int, Meta(ge=60, le=720)] = 240


class PublisherConfig(Section, frozen=True, kw_only=True):
    room_url: str | None = None
    max_viewers: Annotated[int, Meta(ge=1, le=32)] = 4
    audio_backend: Literal["alsa", "sim"] = "alsa"
    mic_device: Annotated[str, Meta(min_length=1, description="ALSA capture device")] = "default"
    speaker_device: Annotated[str, Meta(min_length=1, description="ALSA playback device")] = "default"
    remote_video: Annotated[bool, Meta(description="show a viewer's camera on the kiosk screen")] = True


class ScreenConfig(Section, frozen=True, kw_only=True):
    driver: Literal["auto", "kmsdrm", "x11", "wayland", "dummy"] = "auto"
    width: Annotated[int, Meta(ge=320, le=3840)] = 800
    height: Annotated[int, Meta(ge=240, le=2160)] = 480
    fullscreen: bool = True
    language: Literal["en", "de", "fr", "es"] = "en"
    sounds: bool = True
    hide_elevated_reading: bool = False


class SetupConfig(Section, frozen=True, kw_only=True):
    host: str = "0.0.0.0"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8080
    tls: bool = False
    log_dir: Annotated[Path | None, Meta(description="daemon log files (<daemon>.log) shown off systemd")] = (
        None
    )
    # Only a daemon started by its socket (appliance-setup.socket, or the demo) exits: one that
    # bound its own port would leave nobody listening. 0..9 is checked in __post_init__, as a
    # Meta bound cannot leave out 1..9 (and a union of Literal[0] and int takes 0 for the int).
    idle_exit_s: Annotated[
        int,
        Meta(
            ge=0, le=86400, description="quiet seconds before a socket-activated setup daemon exits; 0: never"
        ),
    ] = 900

    def __post_init__(self) -> None:
        if 0 < self.idle_exit_s < 10:
            raise ValueError(
                f"idle_exit_s must be 0 (never) or from 10 to 86400 seconds, not {self.idle_exit_s}"
            )


class SimConfig(Section, frozen=True, kw_only=True):
    scenario: Annotated[str, Meta(description="a bundled scenario name or a path to a scenario file")] = (
        "demo"
    )
    seed: int = 1


class AppConfig(Section, frozen=True, kw_only=True):
    # A factory each: a frozen Struct still holds mutable lists (bus.allowed_uids), which a
    # shared default instance would share between configs.
    paths: PathsConfig = field(default_factory=PathsConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    setup: SetupConfig = field(default_factory=SetupConfig)
    sim: SimConfig = field(default_factory=SimConfig)

    @property
    def bus_socket(self) -> Path:
        return self.bus.socket or self.paths.run_dir / "bus.sock"


AnyDict = Annotated[dict[str, Any], "parsed TOML"]


def _dec_hook(type_: type, value: Any) -> Any:
    # msgspec has no Path type of its own: a path is a string in the file (or a Path already,
    # passed to replace()).
    if type_ is Path:
        if isinstance(value, str | os.PathLike):
            return Path(value)
        raise ValueError(f"Input should be a path, written as a string, not {value!r}")
    raise NotImplementedError(type_)


@functools.cache
def _pin_keys() -> dict[str, frozenset[str]]:
    """{section: its Pin fields}, read off the model so a new Pin needs no list kept."""
    out = {}
    for section in msgspec.structs.fields(AppConfig):
        keys = frozenset(f.name for f in msgspec.structs.fields(section.type) if _is_pin(f.type))
        if keys:
            out[section.encode_name] = keys
    return out


def _is_pin(type_: Any) -> bool:
    # A Pin with a description is Annotated[Pin, Meta(...)]: look through the Annotated.
    return type_ == Pin or getattr(type_, "__origin__", None) == Pin


def _is_none_word(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "none"


def _none_pins(data: AnyDict) -> AnyDict:
    """data with "none" (any case) in a Pin field made None; TOML has no null to write."""
    out = dict(data)
    for section, keys in _pin_keys().items():
        table = out.get(section)
        if isinstance(table, dict) and any(_is_none_word(table.get(k)) for k in keys):
            out[section] = {k: None if k in keys and _is_none_word(v) else v for k, v in table.items()}
    return out


def validate_config(data: AnyDict) -> AppConfig:
    """AppConfig from parsed TOML, each value checked; raises appliance.validate.Invalid (the
    key path and what is wrong). No checks across keys: parse_config adds those."""
    return convert(_none_pins(data), AppConfig, dec_hook=_dec_hook)


def parse_config(data: AnyDict, source: str = "<config>") -> AppConfig:
    try:
        config = validate_config(data)
    except Invalid as exc:
        raise ConfigError(source, ".".join(map(str, exc.loc)), exc.message) from None
    if config.screening.distance_min_m >= config.screening.distance_max_m:
        raise ConfigError(source, "screening.distance_min_m", "must be less than screening.distance_max_m")
    return config


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("APPLIANCE_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def read_toml(file: Path, *, required: bool) -> AnyDict:
    """A config file's table; {} for a missing file that was not asked for by name."""
    try:
        with open(file, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise ConfigError(str(file), "", "file not found") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(file), "", f"not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(str(file), "", f"cannot read: {exc.strerror}") from None


def load_config(path: str | os.PathLike[str] | None = None, *, apply_env: bool = True) -> AppConfig:
    """Load and validate the config file; a missing default file means all defaults."""
    file = config_path(path)
    data = read_toml(file, required=path is not None or "APPLIANCE_CONFIG" in os.environ)
    config = parse_config(data, str(file))
    return with_env_overrides(config) if apply_env else config


def with_env_overrides(config: AppConfig) -> AppConfig:
    paths = config.paths
    if state := os.environ.get("APPLIANCE_STATE_DIR"):
        paths = msgspec.structs.replace(paths, state_dir=Path(state))
    if run := os.environ.get("APPLIANCE_RUN_DIR"):
        paths = msgspec.structs.replace(paths, run_dir=Path(run))
    return msgspec.structs.replace(config, paths=paths)


def replace(config: AppConfig, **sections: dict[str, Any]) -> AppConfig:
    """A copy with some section fields changed, validated again (for tests and the demo)."""
    data: AnyDict = msgspec.to_builtins(config, enc_hook=str)  # str: a Path, back to the file's form
    for name, values in sections.items():
        data[name].update(values)
    return parse_config(data, "<override>")
