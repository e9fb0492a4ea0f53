"""Logins kept over the setup daemon's idle exit: one file, written at stop, read at start.

The daemon exits after setup.idle_exit_s without use (activation.py); without this a technician
who paused that long would log in again, and a browser would lose its known-device standing
(auth.KnownDevices) at each exit. So at stop the authenticated sessions and the known devices
go to <state_dir>/setup-sessions.json (mode 0600, atomic), and the next start reads them back.

- Only SHA-256 hashes of the cookie tokens are written, never a token: the file lets no one in.
- The stamps are time.monotonic() values. CLOCK_MONOTONIC counts from boot, so they hold across
  processes of one boot and mean nothing after a reboot: the file carries the boot id and is
  read only in the same boot.
- It also carries a digest of the password record (PasswordStore.fingerprint): sessions
  logged in under another password (set or reset while the daemon was stopped) stay out.
- The file is deleted as soon as it is read, and written again only from memory at stop. So a
  crash later, or a stop after a password change (which ends every session in memory),
  never brings back a session that was ended meanwhile.
- A damaged file is a warning, deleted and ignored: losing the logins is the worst it can do.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from appliance.atomic import atomic_write
from appliance.setup.auth import KnownDevices, Sessions

log = logging.getLogger(__name__)

STATE_FILE = "setup-sessions.json"
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
VERSION = 1


def boot_id(path: Path = BOOT_ID_FILE) -> str | None:
    """This boot's id (a new random UUID at every boot), or None where there is none."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def save(
    state_dir: str | os.PathLike[str],
    sessions: Sessions,
    devices: KnownDevices,
    *,
    password: str | None,
    boot_id_file: Path = BOOT_ID_FILE,
) -> bool:
    """Write the live authenticated sessions and the known devices; whether a file was written.

    password: PasswordStore.fingerprint() now. Nothing is written without a password or a boot
    id (stamps that could not be checked would not be read back), or with nothing to keep. OSError
    when the file cannot be written."""
    path = Path(state_dir) / STATE_FILE
    data: dict[str, Any] = {**sessions.to_dict(), **devices.to_dict()}
    boot = boot_id(boot_id_file)
    if password is None or boot is None or not (data["sessions"] or data["devices"]):
        path.unlink(missing_ok=True)
        return False
    record = {"version": VERSION, "boot_id": boot, "password": password, **data}
    atomic_write(path, json.dumps(record) + "\n", mode=0o600)
    return True


def load(
    state_dir: str | os.PathLike[str],
    sessions: Sessions,
    devices: KnownDevices,
    *,
    password: str | None,
    boot_id_file: Path = BOOT_ID_FILE,
) -> int:
    """Add what save() wrote, if written in this boot under this password, then delete the
    file; how many sessions and devices were added. Never raises for the file: a missing one
    is normal, any other problem a warning."""
    path = Path(state_dir) / STATE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("%s: cannot read the saved setup logins (%s): ignored", path, exc.strerror)
        _remove(path)
        return 0
    if not _remove(path):
        return 0  # a file that stays would bring these sessions back after a logout and a crash
    try:
        record = json.loads(raw.decode("utf-8"))
        if not isinstance(record, dict) or record.get("version") != VERSION:
            raise ValueError("not a version 1 record")
        # Into spares first: all or nothing, nothing half added from a damaged file.
        Sessions(clock=sessions.clock).load_dict(record)
        KnownDevices(clock=devices.clock).load_dict(record)
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning(
            "%s: the saved setup logins are damaged (%s): ignored, every login starts anew", path, exc
        )
        return 0
    boot = boot_id(boot_id_file)
    if boot is None or record.get("boot_id") != boot:
        log.info("the saved setup logins are from another boot: not restored")
        return 0
    if password is None or record.get("password") != password:
        log.info("the setup password changed since the logins were saved: not restored")
        return 0
    restored = sessions.load_dict(record) + devices.load_dict(record)
    if restored:
        log.info("restored %d setup logins and known devices from before the idle exit", restored)
    return restored


def _remove(path: Path) -> bool:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("%s: cannot delete the saved setup logins (%s): not restored", path, exc.strerror)
        return False
    return True
