"""The kiosk's room credentials on disk: the device token, the room service's URL, the room.

    <state_dir>/room-credentials.json   mode 0600, written atomically (appliance.atomic)
    <state_dir>/device-id               this kiosk's stable identifier, made once

current_credentials(config) is what another daemon (the publisher) calls to learn where to
connect and with which token; None means unpaired.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import urllib.parse
from pathlib import Path

import msgspec

from appliance.atomic import atomic_write
from appliance.config import AppConfig

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "room-credentials.json"
DEVICE_ID_FILE = "device-id"
MODEL_FILE = Path("/proc/device-tree/model")


class DeviceCredentials(msgspec.Struct, frozen=True, kw_only=True):
    room_url: str  # the room service, e.g. https://rooms.example.org
    token: str  # the device token: Authorization: Bearer <token>
    room_id: str
    room_name: str
    paired_at: float  # Unix time


_decoder = msgspec.json.Decoder(DeviceCredentials)


def normalize_room_url(url: str) -> str:
    """'HTTPS://Rooms.example.org/' -> 'https://rooms.example.org'; ValueError if not http(s)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"a room URL has no query, fragment or user: {url!r}")
    netloc = parts.hostname.lower() if ":" not in parts.hostname else f"[{parts.hostname.lower()}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def credentials_path(state_dir: Path) -> Path:
    return state_dir / CREDENTIALS_FILE


def load_credentials(state_dir: Path) -> DeviceCredentials | None:
    path = credentials_path(state_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror)
        return None
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        # Unusable credentials are no credentials: the kiosk pairs again rather than stopping.
        log.warning("%s is not valid (%s); treating the kiosk as unpaired", path, exc)
        return None


def save_credentials(state_dir: Path, creds: DeviceCredentials) -> None:
    atomic_write(credentials_path(state_dir), msgspec.json.encode(creds), mode=0o600)


def forget_credentials(state_dir: Path) -> bool:
    try:
        os.unlink(credentials_path(state_dir))
    except FileNotFoundError:
        return False
    return True


def current_credentials(config: AppConfig) -> DeviceCredentials | None:
    """The device token and room URL, or None while the kiosk is not paired."""
    return load_credentials(config.paths.state_dir)


def device_id(state_dir: Path) -> str:
    """A random identifier made on first use and kept: it names this kiosk to the room service
    (the hardware serial would do, but it is not on every board and says more than needed)."""
    path = state_dir / DEVICE_ID_FILE
    with contextlib.suppress(OSError):
        existing = path.read_text().strip()
        if existing:
            return existing
    new = "kiosk-" + secrets.token_hex(8)
    atomic_write(path, new + "\n", mode=0o644)
    return new


def device_model(model_file: Path = MODEL_FILE) -> str:
    try:
        model = model_file.read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
    except OSError:
        model = ""
    printable = "".join(c for c in model if c.isprintable())[:120]
    return printable or "appliance kiosk (no device tree: simulated or generic Linux)"
