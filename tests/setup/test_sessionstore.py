"""Sessions and known devices kept over the daemon's idle exit (sessionstore.py): written at
stop, read back (and the file deleted) at the next start of the same boot."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from appliance.setup import auth, sessionstore
from appliance.setup.auth import KnownDevices, Sessions

BOOT = "0b1f6a3e-5c2d-4e7f-9a8b-1c2d3e4f5a6b"
PASSWORD_TAG = "p" * 64


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def boot_file(tmp_path: Path, boot: str = BOOT) -> Path:
    path = tmp_path / "boot_id"
    path.write_text(boot + "\n")
    return path


def save(tmp_path: Path, sessions: Sessions, devices: KnownDevices, *, boot: str = BOOT) -> None:
    sessionstore.save(
        tmp_path, sessions, devices, password=PASSWORD_TAG, boot_id_file=boot_file(tmp_path, boot)
    )


def load(
    tmp_path: Path,
    sessions: Sessions,
    devices: KnownDevices,
    *,
    boot: str = BOOT,
    password: str = PASSWORD_TAG,
) -> int:
    return sessionstore.load(
        tmp_path, sessions, devices, password=password, boot_id_file=boot_file(tmp_path, boot)
    )


def store_path(tmp_path: Path) -> Path:
    return tmp_path / sessionstore.STATE_FILE


def test_sessions_and_devices_round_trip_through_a_0600_file_without_tokens(tmp_path: Path) -> None:
    clock = Clock()
    sessions, devices = Sessions(clock=clock), KnownDevices(clock=clock)
    token, session = sessions.new(authenticated=True)
    anonymous, _ = sessions.new()
    device = devices.issue()
    clock.t += 60
    sessions.get(token)  # seen later than created

    save(tmp_path, sessions, devices)
    path = store_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for secret in (token, anonymous, device):
        assert secret not in text, "only hashes are stored, never a cookie token"
    record = json.loads(text)
    assert record["boot_id"] == BOOT and len(record["sessions"]) == 1 and len(record["devices"]) == 1

    clock.t += 30
    fresh, fresh_devices = Sessions(clock=clock), KnownDevices(clock=clock)
    assert load(tmp_path, fresh, fresh_devices) == 2
    assert not path.exists(), "deleted once read: a crash later cannot bring these back"
    restored = fresh.get(token)
    assert restored is not None and restored.authenticated
    assert (restored.csrf, restored.created) == (session.csrf, session.created)
    assert fresh.get(anonymous) is None, "an unauthenticated session is not kept"
    assert fresh_devices.key(device) == devices.key(device) is not None


def test_unauthenticated_sessions_alone_write_no_file(tmp_path: Path) -> None:
    sessions = Sessions(clock=Clock())
    sessions.new()
    save(tmp_path, sessions, KnownDevices(clock=Clock()))
    assert not store_path(tmp_path).exists()


def test_another_boot_is_ignored_and_the_file_deleted(tmp_path: Path) -> None:
    """Monotonic stamps count from boot: another boot's mean nothing here."""
    clock = Clock()
    sessions, devices = Sessions(clock=clock), KnownDevices(clock=clock)
    token, _ = sessions.new(authenticated=True)
    device = devices.issue()
    save(tmp_path, sessions, devices, boot=BOOT)
    fresh, fresh_devices = Sessions(clock=clock), KnownDevices(clock=clock)
    assert load(tmp_path, fresh, fresh_devices, boot="another-boot") == 0
    assert fresh.get(token) is None and fresh_devices.key(device) is None
    assert not store_path(tmp_path).exists()


def test_no_boot_id_means_nothing_is_kept(tmp_path: Path) -> None:
    sessions, devices = Sessions(clock=Clock()), KnownDevices(clock=Clock())
    sessions.new(authenticated=True)
    missing = tmp_path / "no-such-boot-id"
    sessionstore.save(tmp_path, sessions, devices, password=PASSWORD_TAG, boot_id_file=missing)
    assert not store_path(tmp_path).exists()


def test_expired_entries_are_dropped_by_the_usual_rules(tmp_path: Path) -> None:
    clock = Clock()
    sessions, devices = Sessions(clock=clock), KnownDevices(clock=clock)
    idle, _ = sessions.new(authenticated=True)
    clock.t += auth.SESSION_IDLE_S - 100
    busy, _ = sessions.new(authenticated=True)
    save(tmp_path, sessions, devices)
    clock.t += 200  # while the daemon was gone: idle is past SESSION_IDLE_S, busy is not
    fresh = Sessions(clock=clock)
    assert load(tmp_path, fresh, KnownDevices(clock=clock)) == 1
    assert fresh.get(idle) is None and fresh.get(busy) is not None

    old_device = devices.issue()
    clock.t += auth.DEVICE_TTL_S - 100
    new_device = devices.issue()
    save(tmp_path, Sessions(clock=clock), devices)
    clock.t += 200
    fresh_devices = KnownDevices(clock=clock)
    assert load(tmp_path, Sessions(clock=clock), fresh_devices) == 1
    assert fresh_devices.key(old_device) is None and fresh_devices.key(new_device) is not None


def test_a_session_still_live_at_load_is_kept_and_one_past_its_lifetime_is_not(tmp_path: Path) -> None:
    clock = Clock()
    sessions, devices = Sessions(clock=clock), KnownDevices(clock=clock)
    live, _ = sessions.new(authenticated=True)
    clock.t += auth.SESSION_MAX_S - 100
    sessions.get(live)  # still in use, close to its 12 h
    kept, _ = sessions.new(authenticated=True)
    save(tmp_path, sessions, devices)
    clock.t += 200  # past the first one's absolute lifetime, not the second one's idle limit
    fresh = Sessions(clock=clock)
    assert load(tmp_path, fresh, KnownDevices(clock=clock)) == 1
    assert fresh.get(live) is None and fresh.get(kept) is not None


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe not utf-8",
        b"[]",
        json.dumps({"version": 2, "boot_id": BOOT, "sessions": [], "devices": []}).encode(),
        json.dumps({"version": 1, "boot_id": BOOT, "password": PASSWORD_TAG, "sessions": {}}).encode(),
        json.dumps(
            {
                "version": 1,
                "boot_id": BOOT,
                "password": PASSWORD_TAG,
                "sessions": [{"hash": "zz", "csrf": "c", "created": 1.0, "seen": 1.0}],
                "devices": [],
            }
        ).encode(),
        json.dumps(
            {
                "version": 1,
                "boot_id": BOOT,
                "password": PASSWORD_TAG,
                "sessions": [],
                "devices": [{"hash": "a" * 64, "issued": "yesterday"}],
            }
        ).encode(),
    ],
)
def test_a_malformed_file_is_a_warning_then_ignored_and_deleted(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = store_path(tmp_path)
    path.write_bytes(content)
    sessions, devices = Sessions(clock=Clock()), KnownDevices(clock=Clock())
    with caplog.at_level(logging.WARNING):
        assert load(tmp_path, sessions, devices) == 0
    assert len(sessions) == 0
    assert not path.exists()
    assert any(r.levelno == logging.WARNING and str(path) in r.getMessage() for r in caplog.records)


def test_a_missing_file_is_normal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert load(tmp_path, Sessions(clock=Clock()), KnownDevices(clock=Clock())) == 0
    assert not caplog.records


def test_sessions_of_another_password_are_not_restored(tmp_path: Path) -> None:
    """The password was changed (or reset) while the daemon was stopped: what was logged in
    under the old one stays out."""
    clock = Clock()
    sessions, devices = Sessions(clock=clock), KnownDevices(clock=clock)
    token, _ = sessions.new(authenticated=True)
    device = devices.issue()
    save(tmp_path, sessions, devices)
    fresh, fresh_devices = Sessions(clock=clock), KnownDevices(clock=clock)
    assert load(tmp_path, fresh, fresh_devices, password="q" * 64) == 0
    assert fresh.get(token) is None and fresh_devices.key(device) is None
    assert not store_path(tmp_path).exists()
    save(tmp_path, sessions, devices)
    assert (
        sessionstore.load(tmp_path, fresh, fresh_devices, password=None, boot_id_file=boot_file(tmp_path))
        == 0
    )


def test_a_password_change_cannot_be_undone_by_the_file(tmp_path: Path) -> None:
    """The file is deleted when read at start and written only from memory at stop, so
    sessions a password change dropped (drop_all, forget_all) are in no file to come back from."""
    clock = Clock()
    sessions, devices = Sessions(clock=clock), KnownDevices(clock=clock)
    old, _ = sessions.new(authenticated=True)
    old_device = devices.issue()
    save(tmp_path, sessions, devices)  # an idle exit
    running, running_devices = Sessions(clock=clock), KnownDevices(clock=clock)
    load(tmp_path, running, running_devices)  # the next start
    assert not store_path(tmp_path).exists()
    running.drop_all()  # the password is changed
    running_devices.forget_all()
    new, _ = running.new(authenticated=True)
    save(tmp_path, running, running_devices)  # the next stop
    after, after_devices = Sessions(clock=clock), KnownDevices(clock=clock)
    load(tmp_path, after, after_devices)
    assert after.get(old) is None and after_devices.key(old_device) is None
    assert after.get(new) is not None


def test_to_dict_and_load_dict_are_plain_data() -> None:
    clock = Clock()
    sessions, devices = Sessions(clock=clock), KnownDevices(clock=clock)
    token, session = sessions.new(authenticated=True)
    sessions.new()
    device = devices.issue()
    data = json.loads(json.dumps({**sessions.to_dict(), **devices.to_dict()}))
    assert data["sessions"] == [
        {"hash": Sessions._key(token), "csrf": session.csrf, "created": 1000.0, "seen": 1000.0}
    ]
    assert data["devices"] == [{"hash": KnownDevices._hash(device), "issued": 1000.0}]
    fresh, fresh_devices = Sessions(clock=clock), KnownDevices(clock=clock)
    assert fresh.load_dict(data) == 1 and fresh_devices.load_dict(data) == 1
    assert fresh.get(token) is not None and fresh_devices.key(device) is not None
    with pytest.raises(ValueError):
        fresh.load_dict({"sessions": [{"hash": "a" * 64, "csrf": 5, "created": 1.0, "seen": 1.0}]})
    with pytest.raises(ValueError):
        fresh_devices.load_dict({"devices": [{"hash": "a" * 64, "issued": True}]})
