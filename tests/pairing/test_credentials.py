"""The kiosk's credentials on disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance.config import AppConfig, PathsConfig
from appliance.pairing.credentials import (
    DeviceCredentials,
    credentials_path,
    current_credentials,
    device_id,
    device_model,
    forget_credentials,
    load_credentials,
    normalize_room_url,
    save_credentials,
)

CREDS = DeviceCredentials(
    room_url="https://rooms.example.org", token="rdt_secret", room_id="r1", room_name="Lobby", paired_at=1.0
)


def test_saved_0600_and_read_back(tmp_path: Path) -> None:
    save_credentials(tmp_path, CREDS)
    assert stat.S_IMODE(credentials_path(tmp_path).stat().st_mode) == 0o600
    assert load_credentials(tmp_path) == CREDS
    config = AppConfig(paths=PathsConfig(state_dir=tmp_path))
    assert current_credentials(config) == CREDS
    assert forget_credentials(tmp_path) and load_credentials(tmp_path) is None
    assert not forget_credentials(tmp_path)


def test_a_damaged_file_means_unpaired(tmp_path: Path) -> None:
    credentials_path(tmp_path).write_text('{"room_url": "x"')
    assert load_credentials(tmp_path) is None
    credentials_path(tmp_path).write_text('{"room_url": 5}')
    assert load_credentials(tmp_path) is None


def test_device_id_is_made_once(tmp_path: Path) -> None:
    first = device_id(tmp_path)
    assert first.startswith("kiosk-") and device_id(tmp_path) == first
    assert device_id(tmp_path / "other") != first


def test_device_model_from_the_device_tree(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert device_model(model) == "Raspberry Pi 4 Model B Rev 1.4"
    assert "simulated" in device_model(tmp_path / "missing")


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTPS://Rooms.Example.org/", "https://rooms.example.org"),
        ("http://127.0.0.1:8443", "http://127.0.0.1:8443"),
        ("https://example.org/rooms/", "https://example.org/rooms"),
        ("http://[::1]:80", "http://[::1]:80"),
    ],
)
def test_room_urls_are_normalized(url: str, normal: str) -> None:
    assert normalize_room_url(url) == normal


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "rooms.example.org",
        "https://",
        "https://u:p@x",
        "https://x/?a=1",
        "https://rooms..example.org",  # a doubled dot: no DNS name (the IDNA codec refuses it)
        "https://" + "a" * 64 + ".example.org",  # a label over 63 characters
    ],
)
def test_bad_room_urls(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        normalize_room_url(url)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can save for another user")
def test_saved_as_root_the_file_belongs_to_the_state_dirs_owner(tmp_path: Path) -> None:
    """`sudo appliance pair` on a kiosk: the publisher runs as the appliance user and reads the
    token from its StateDirectory. A root-owned 0600 file there would be unreadable to it, and
    the kiosk would stay unpaired after a pairing that said it succeeded."""
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 12345, 23456)
    save_credentials(state, CREDS)
    info = credentials_path(state).stat()
    assert (info.st_uid, info.st_gid) == (12345, 23456)
    assert stat.S_IMODE(info.st_mode) == 0o600


def test_a_token_file_readable_by_others_is_made_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A restored backup or a hand copy can leave the token world-readable: the kiosk keeps its
    pairing but closes the file to other users, and says so."""
    save_credentials(tmp_path, CREDS)
    path = credentials_path(tmp_path)
    path.chmod(0o644)
    assert load_credentials(tmp_path) == CREDS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "0644" in caplog.text and CREDS.token not in caplog.text


def test_a_damaged_file_is_reported_once_not_at_every_look(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pairing loop looks at the file every few seconds while unpaired: a damaged file must
    not put a warning in the journal each time, for weeks."""
    path = credentials_path(tmp_path)
    path.write_text('{"room_url": "x", "token": "rdt_sec')
    for _ in range(5):
        assert load_credentials(tmp_path) is None
    assert len([r for r in caplog.records if "not valid" in r.getMessage()]) == 1
    assert "rdt_sec" not in caplog.text
    # Fixed, then damaged again: that is news, said again.
    save_credentials(tmp_path, CREDS)
    assert load_credentials(tmp_path) == CREDS
    path.write_text("{")
    assert load_credentials(tmp_path) is None
    assert len([r for r in caplog.records if "not valid" in r.getMessage()]) == 2


@pytest.mark.parametrize(
    "token, room_url",
    [
        ("rdt_secret\r\nX-Evil: 1", "https://rooms.example.org"),  # a header of its own
        ("", "https://rooms.example.org"),
        ("rdt secret", "https://rooms.example.org"),
        ("rdt_secret", "ftp://rooms.example.org"),
        ("rdt_secret", "https://rooms..example.org"),
    ],
)
def test_credentials_that_parse_but_cannot_be_used_mean_unpaired(
    tmp_path: Path, token: str, room_url: str
) -> None:
    """A hand-edited or damaged file that is still valid JSON: a token with a line break would
    make every request raise ValueError in the HTTP client (no network error: it would end the
    pairing task, and the publisher with it, at each start); an empty one or a URL that is no
    room service's would be sent as is. Such a file is treated as damaged: unpaired, pair again."""
    bad = DeviceCredentials(room_url=room_url, token=token, room_id="r1", room_name="Lobby", paired_at=1.0)
    save_credentials(tmp_path, bad)
    assert load_credentials(tmp_path) is None
