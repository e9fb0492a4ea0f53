"""The room service's configuration: one validated model, loaded from config/room.toml.

The hosted service has its own file (/etc/appliance/room.toml on a server, APPLIANCE_ROOM_CONFIG
to move it), separate from a kiosk's appliance.toml: the two run on different machines.
Every section forbids unknown keys, so a typo is an error naming the file and the key.

The TURN secret is the one secret in this file's reach: it may be inline (the file must then
be 0600) or in a file of its own (which must be 0600); anything readable by others is refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from appliance.config import read_toml
from appliance.errors import ConfigError

DEFAULT_ROOM_CONFIG_PATH = Path("/etc/appliance/room.toml")
ENV_ROOM_CONFIG = "APPLIANCE_ROOM_CONFIG"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceConfig(Section):
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8443, ge=0, le=65535, description="0 picks a free port (tests, the demo)")
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="how browsers and kiosks reach this service; default: from each request",
    )
    database: Path = Field(Path("/var/lib/appliance-room/room.db"))
    tls_cert: Path | None = None
    tls_key: Path | None = None
    behind_proxy: bool = Field(False, description="take the client address from X-Forwarded-For")
    bus_socket: Path | None = Field(None, description="publish health.room on a kiosk's bus (the demo)")

    @model_validator(mode="after")
    def _tls_pair(self) -> ServiceConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class AccountsConfig(Section):
    session_ttl_s: int = Field(43200, ge=60, le=30 * 86400)
    login_per_address_per_min: int = Field(10, ge=1, le=100_000)
    login_overall_per_min: int = Field(60, ge=1, le=1_000_000)
    login_failures_per_user: int = Field(5, ge=1, le=1000, description="per 15 minutes")


class RoomsConfig(Section):
    max_devices_per_room: int = Field(1, ge=1, le=100)
    viewer_session_ttl_s: int = Field(3600, ge=60, le=7 * 86400)
    viewer_session_per_address_per_min: int = Field(30, ge=1, le=1_000_000)
    viewer_session_overall_per_min: int = Field(600, ge=1, le=10_000_000)
    ws_connect_per_address_per_min: int = Field(120, ge=1, le=1_000_000)
    ws_connect_overall_per_min: int = Field(3000, ge=1, le=10_000_000)


class PairingConfig(Section):
    code_ttl_s: int = Field(600, ge=10, le=3600)
    interval_s: int = Field(5, ge=1, le=60)
    wrong_codes_per_admin: int = Field(5, ge=1, le=100, description="per code lifetime")
    authorize_per_address_per_min: int = Field(10, ge=1, le=1_000_000)
    authorize_overall_per_min: int = Field(120, ge=1, le=10_000_000)
    token_per_address_per_min: int = Field(120, ge=1, le=1_000_000)
    token_overall_per_min: int = Field(1200, ge=1, le=10_000_000)
    activate_per_address_per_min: int = Field(30, ge=1, le=1_000_000)


class TurnConfig(Section):
    secret: str | None = Field(None, min_length=16, description="coturn's static-auth-secret")
    secret_file: Path | None = None
    ttl_s: int = Field(86400, ge=60, le=30 * 86400)

    @model_validator(mode="after")
    def _one_secret(self) -> TurnConfig:
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("set secret or secret_file, not both")
        return self


class IceServerConfig(Section):
    urls: Annotated[list[str], Field(min_length=1)]
    turn_credentials: bool = Field(False, description="mint TURN REST credentials for each session")
    username: str | None = None
    credential: str | None = None


class RoomConfig(Section):
    service: ServiceConfig = ServiceConfig()
    accounts: AccountsConfig = AccountsConfig()
    rooms: RoomsConfig = RoomsConfig()
    pairing: PairingConfig = PairingConfig()
    turn: TurnConfig = TurnConfig()
    ice_servers: list[IceServerConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _turn_needs_secret(self) -> RoomConfig:
        if any(s.turn_credentials for s in self.ice_servers) and not (
            self.turn.secret or self.turn.secret_file
        ):
            raise ValueError("an ice server has turn_credentials = true: set turn.secret or turn.secret_file")
        return self


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def parse_room_config(data: dict[str, Any], source: str = "<room config>") -> RoomConfig:
    try:
        return RoomConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(source, _key(err["loc"]), err["msg"] + more) from None


def room_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(ENV_ROOM_CONFIG)
    return Path(env) if env else DEFAULT_ROOM_CONFIG_PATH


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def load_room_config(path: str | os.PathLike[str] | None = None) -> RoomConfig:
    """Load and validate; a missing default file means all defaults."""
    file = room_config_path(path)
    data = read_toml(file, required=path is not None or ENV_ROOM_CONFIG in os.environ)
    config = parse_room_config(data, str(file))
    if config.turn.secret is not None and not _private(file):
        raise ConfigError(str(file), "turn.secret", "the file holds a secret: make it mode 0600")
    return config


def turn_secret(config: RoomConfig, source: str = "<room config>") -> bytes | None:
    """The TURN secret, read from its file if so configured; the file must be 0600."""
    if config.turn.secret is not None:
        return config.turn.secret.encode()
    path = config.turn.secret_file
    if path is None:
        return None
    try:
        if not _private(path):
            raise ConfigError(source, "turn.secret_file", f"{path} is readable by others: make it mode 0600")
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(source, "turn.secret_file", f"cannot read {path}: {exc.strerror}") from None
    if len(secret) < 16:
        raise ConfigError(source, "turn.secret_file", "the secret must be at least 16 bytes")
    return secret
