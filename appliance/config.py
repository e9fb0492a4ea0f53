"""The appliance's configuration: one validated model, loaded from one TOML file.

/etc/appliance/appliance.toml on a device; config/appliance.toml in the repository holds the
shipped defaults with comments. Every section forbids unknown keys, so a typo is an error that
names the file and the key instead of a setting silently ignored.

Paths can be moved for development and tests by APPLIANCE_CONFIG (the file),
APPLIANCE_STATE_DIR and APPLIANCE_RUN_DIR, which win over the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from appliance.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/appliance/appliance.toml")
DAEMONS = ("bus", "camera", "thermal", "screening", "publisher", "screen", "setup", "room")


def _pin_or_none(value: Any) -> Any:
    # TOML has no null: "none" marks a part that is not fitted (no INT wire, no buzzer).
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    return value


# A BCM GPIO number, or "none" in the file for a part that is not fitted.
Pin = Annotated[Annotated[int, Field(ge=0, le=53)] | None, BeforeValidator(_pin_or_none)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(Section):
    state_dir: Path = Field(Path("/var/lib/appliance"), description="credentials, events.db, calibration")
    run_dir: Path = Field(Path("/run/appliance"), description="sockets and shared-memory rings")


class BusConfig(Section):
    socket: Path | None = Field(None, description="broker socket; default <run_dir>/bus.sock")
    max_frame_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    event_queue: int = Field(
        4096, ge=16, le=1_000_000, description="events held for a paused consumer before it is cut off"
    )
    socket_mode: int = Field(0o660, ge=0, le=0o777)
    allowed_uids: list[int] = Field(
        default_factory=list, description="peers allowed besides root and the broker's own uid"
    )
    allowed_groups: list[str] = Field(default_factory=lambda: ["appliance"])


class ThermalConfig(Section):
    backend: Literal["amg8833", "sim"] = "amg8833"
    i2c_bus: int = Field(1, ge=0, le=32)
    address: Literal[0x68, 0x69] = 0x69
    int_pin: Pin = Field(4, description="BCM GPIO wired to the sensor's INT, or none")
    active_fps: Literal[10] = 10
    idle_fps: Literal[1, 10] = 1
    idle_after_s: float = Field(10.0, gt=0, le=3600)
    presence_delta_c: float = Field(3.0, gt=0, le=20, description="interrupt level above background")
    moving_average: bool = False
    warmup_s: float = Field(15.0, ge=0, le=120)


class ScreeningConfig(Section):
    threshold_c: float = Field(38.0, ge=35.0, le=41.0)
    hysteresis_c: float = Field(0.2, ge=0.0, le=1.0)
    units: Literal["C", "F"] = "C"
    distance_min_m: float = Field(0.3, gt=0, le=3)
    distance_max_m: float = Field(0.55, gt=0, le=3)
    system_warmup_s: float = Field(30.0, ge=0, le=3600)
    retention_days: int = Field(30, ge=1, le=3650)


class GpioConfig(Section):
    pin_factory: Literal["auto", "lgpio", "rpigpio", "mock"] = "auto"
    green_led: Pin = 17
    red_led: Pin = 27
    buzzer: Pin = 22
    relay: Pin = None
    relay_enabled: bool = False
    relay_open_s: float = Field(3.0, gt=0, le=60)


class CameraConfig(Section):
    backend: Literal["picamera2", "v4l2", "sim"] = "picamera2"
    device: str = "/dev/video0"
    width: int = Field(640, ge=160, le=1920)
    height: int = Field(480, ge=120, le=1080)
    fps: int = Field(30, ge=1, le=60)
    bitrate: int = Field(1_500_000, ge=100_000, le=20_000_000)
    keyframe_interval_s: float = Field(1.0, gt=0, le=10)
    rotation: Literal[0, 90, 180, 270] = 0
    hflip: bool = False
    vflip: bool = False
    preview_width: int = Field(320, ge=80, le=1280)
    preview_height: int = Field(240, ge=60, le=720)


class PublisherConfig(Section):
    room_url: str | None = None
    max_viewers: int = Field(4, ge=1, le=32)
    audio_backend: Literal["alsa", "sim"] = "alsa"
    mic_device: str = Field("default", min_length=1, description="ALSA capture device")
    speaker_device: str = Field("default", min_length=1, description="ALSA playback device")
    remote_video: bool = Field(True, description="show a viewer's camera on the kiosk screen")


class ScreenConfig(Section):
    driver: Literal["auto", "kmsdrm", "x11", "wayland", "dummy"] = "auto"
    width: int = Field(800, ge=320, le=3840)
    height: int = Field(480, ge=240, le=2160)
    fullscreen: bool = True
    language: Literal["en", "de", "fr", "es"] = "en"
    sounds: bool = True
    hide_elevated_reading: bool = False


class SetupConfig(Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    tls: bool = False
    log_dir: Path | None = Field(None, description="daemon log files (<daemon>.log) shown off systemd")


class SimConfig(Section):
    scenario: str = Field("demo", description="a bundled scenario name or a path to a scenario file")
    seed: int = 1


class AppConfig(Section):
    paths: PathsConfig = PathsConfig()
    bus: BusConfig = BusConfig()
    thermal: ThermalConfig = ThermalConfig()
    screening: ScreeningConfig = ScreeningConfig()
    gpio: GpioConfig = GpioConfig()
    camera: CameraConfig = CameraConfig()
    publisher: PublisherConfig = PublisherConfig()
    screen: ScreenConfig = ScreenConfig()
    setup: SetupConfig = SetupConfig()
    sim: SimConfig = SimConfig()

    @property
    def bus_socket(self) -> Path:
        return self.bus.socket or self.paths.run_dir / "bus.sock"


AnyDict = Annotated[dict[str, Any], "parsed TOML"]


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def parse_config(data: AnyDict, source: str = "<config>") -> AppConfig:
    try:
        config = AppConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(source, _key(err["loc"]), err["msg"] + more) from None
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
        paths = paths.model_copy(update={"state_dir": Path(state)})
    if run := os.environ.get("APPLIANCE_RUN_DIR"):
        paths = paths.model_copy(update={"run_dir": Path(run)})
    return config.model_copy(update={"paths": paths})


def replace(config: AppConfig, **sections: dict[str, Any]) -> AppConfig:
    """A copy with some section fields changed, validated again (for tests and the demo)."""
    data = config.model_dump()
    for name, values in sections.items():
        data[name].update(values)
    return parse_config(data, "<override>")
