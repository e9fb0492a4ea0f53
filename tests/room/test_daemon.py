"""`appliance run room` as a process: starts, serves, logs no secrets, stops cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .process import add_admin, room_process, write_config

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"


def test_run_room_serves_and_logs_no_secrets(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    add_admin(config, "alice", PASSWORD)
    with room_process(config) as room:
        http = requests.Session()
        grant = http.post(
            room.url + "/api/v1/device/authorize",
            json={"device_id": "kiosk-1", "model": "Pi", "firmware": "1"},
            timeout=10,
        ).json()
        # The admin: log in, make a room and a viewer link, pair the kiosk.
        admin = requests.Session()
        csrf = _csrf(admin.get(room.url + "/login", timeout=10).text)
        admin.post(
            room.url + "/login", data={"username": "alice", "password": PASSWORD, "csrf": csrf}, timeout=30
        )
        page = admin.post(
            room.url + "/rooms", data={"name": "Lobby", "csrf": _csrf(admin.get(room.url + "/rooms").text)}
        )
        room_id = page.url.rsplit("/", 1)[1]
        page = admin.post(
            f"{room.url}/rooms/{room_id}/invites", data={"label": "x", "csrf": _csrf(page.text)}, timeout=10
        )
        invite = page.text.split("/view/", 1)[1].split('"', 1)[0]
        page = admin.get(room.url + "/activate?code=" + grant["user_code"], timeout=10)
        page = admin.post(room.url + "/activate", data={"code": grant["user_code"], "csrf": _csrf(page.text)})
        admin.post(
            room.url + "/activate/confirm",
            data={"code": grant["user_code"], "room": room_id, "action": "approve", "csrf": _csrf(page.text)},
            timeout=10,
        )
        token = http.post(
            room.url + "/api/v1/device/token", json={"device_code": grant["device_code"]}, timeout=10
        ).json()["access_token"]
        session = http.post(room.url + "/api/v1/viewer/session", json={"invite": invite}, timeout=10).json()[
            "session"
        ]
        assert http.get(room.url + "/api/v1/ws", params={"session": session}, timeout=10).status_code == 400
        assert http.get(room.url + f"/view/{invite}", timeout=10).status_code in (200, 503)
        room.proc.terminate()
        assert room.proc.wait(10) == 0
    log = room.log
    assert "POST /api/v1/device/token 200" in log  # the access log is there...
    assert "/view/<invite>" in log
    for secret in (PASSWORD, token, session, invite, grant["device_code"], grant["user_code"]):
        assert secret not in log  # ...and holds none of these
    assert "Traceback" not in log


def _csrf(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_bad_room_config_exits_1_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "room.toml"
    bad.write_text("[service]\nport = -1\n")
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "room", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert str(bad) in out.stderr and "service.port" in out.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = tmp_path / "room.toml"
        config.write_text(
            f'[service]\nport = {taken.getsockname()[1]}\ndatabase = "{tmp_path / "room.db"}"\n'
        )
        out = subprocess.run(
            [sys.executable, "-m", "appliance", "run", "room", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    assert "service.port: cannot listen" in out.stderr and "Traceback" not in out.stderr
