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
import re
import secrets
import stat
import urllib.parse
from pathlib import Path

import msgspec

from appliance.atomic import atomic_open, atomic_write
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
# RFC 6750's b64token, loosely: visible ASCII, no space. Anything else cannot be sent as a
# bearer token (a line break makes the HTTP client raise ValueError, not a network error).
_TOKEN = re.compile(r"[\x21-\x7e]+")


def credentials_problem(creds: DeviceCredentials) -> str | None:
    """Why these credentials cannot be used to reach the room service, or None."""
    if not _TOKEN.fullmatch(creds.token):
        return "the device token is empty or not printable ASCII"
    try:
        normalize_room_url(creds.room_url)
    except ValueError as exc:
        return str(exc)
    return None


def host_name_problem(host: str) -> str | None:
    """Why `host` can never be looked up, or None. Python's IDNA codec refuses an empty label
    (a doubled dot) or one over 63 characters with a UnicodeError, which is no OSError: callers
    that catch network errors would let it through as a crash."""
    try:
        host.encode("idna")
    except UnicodeError:
        return f"{host!r} is not a host name (an empty label, or one over 63 characters)"
    return None


def normalize_room_url(url: str) -> str:
    """'HTTPS://Rooms.example.org/' -> 'https://rooms.example.org'; ValueError if not http(s)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if problem := host_name_problem(parts.hostname):
        raise ValueError(f"not a usable room URL: {url!r}: {problem}")
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
        data = _read_private(path)
    except FileNotFoundError:
        _reported.pop(path, None)
        return None
    except OSError as exc:
        _report(path, f"cannot read {path}: {exc.strerror}")
        return None
    try:
        creds = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        # Unusable credentials are no credentials: the kiosk pairs again rather than stopping.
        _report(path, f"{path} is not valid ({exc}); treating the kiosk as unpaired")
        return None
    if problem := credentials_problem(creds):
        # Valid JSON all the same (a hand edit, a damaged block): never the token itself here.
        _report(path, f"{path} is not usable ({problem}); treating the kiosk as unpaired")
        return None
    _reported.pop(path, None)
    return creds


# The last problem said about each credentials file. The pairing loop reads the file every few
# seconds while unpaired: a damaged or unreadable file is said once, not into the journal each
# time for weeks. One entry per state directory, so this stays as small as it starts.
_reported: dict[Path, str] = {}


def _report(path: Path, problem: str) -> None:
    if _reported.get(path) != problem:
        _reported[path] = problem
        log.warning("%s", problem)


def _read_private(path: Path) -> bytes:
    """The file's bytes; a file others can read (a restored backup, a hand copy) is made 0600
    first: the token in it is as good as a password to the room."""
    with open(path, "rb") as fh:
        mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
        if mode & 0o077:
            try:
                os.fchmod(fh.fileno(), 0o600)
            except OSError as exc:
                _report(path, f"{path} is mode {mode:04o}, open to other users; cannot fix: {exc.strerror}")
            else:
                log.warning("%s was mode %04o, open to other users; made it 0600", path, mode)
        return fh.read()


def save_credentials(state_dir: Path, creds: DeviceCredentials) -> None:
    path = credentials_path(state_dir)
    with atomic_open(path, 0o600, text=False) as fh:
        _give_to_directory_owner(fh.fileno(), path.parent)
        fh.write(msgspec.json.encode(creds))


def _give_to_directory_owner(fd: int, directory: Path) -> None:
    """Root saving (`sudo appliance pair`) into the daemons' state directory: the file goes to
    the directory's owner, else the publisher (User=appliance) could not read its own 0600 token."""
    if os.geteuid() != 0:
        return
    info = os.stat(directory)
    if (info.st_uid, info.st_gid) != (0, 0):
        os.fchown(fd, info.st_uid, info.st_gid)


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
