"""`appliance demo` runs the room service, pairs its simulated kiosk and prints working links."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow


def test_demo_room_admin_viewer_link_and_paired_kiosk(tmp_path: Path) -> None:
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "demo",
            "--headless",
            "--for",
            "15",
            "--workdir",
            str(work),
            "--report",
            str(tmp_path / "r.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while not any(line.lstrip().startswith("kiosk:") for line in lines):
            assert time.monotonic() < deadline, lines
            line = proc.stdout.readline()
            assert line, f"the demo ended early: {lines}"
            lines.append(line.rstrip())
        text = "\n".join(lines)
        admin = re.search(r"room admin:\s+(http://\S+)/\s+user (\S+)\s+password (\S+)", text)
        viewer = re.search(r"viewer link:\s+(http://\S+)/view/(\S+)", text)
        assert admin is not None and viewer is not None, text
        assert "kiosk:        paired with 'Demo entrance'" in text
        url, user, password = admin.groups()

        http = requests.Session()
        page = http.get(url + "/login", timeout=10)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        page = http.post(url + "/login", data={"username": user, "password": password, "csrf": csrf.group(1)})
        assert page.url.endswith("/rooms") and "Demo entrance" in page.text
        devices = http.get(url + "/devices", timeout=10).text
        assert "Demo entrance" in devices
        session = http.post(url + "/api/v1/viewer/session", json={"invite": viewer.group(2)}, timeout=10)
        assert session.status_code == 200 and session.json()["room"]["name"] == "Demo entrance"

        creds = work / "state" / "room-credentials.json"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert json.loads(creds.read_text())["room_url"] == url
        assert stat.S_IMODE((work / "state" / "room" / "room.db").stat().st_mode) == 0o600
        # Printed once, written nowhere: not in a config, a log or the report.
        for file in work.rglob("*"):
            if file.is_file() and file.suffix != ".db" and "-wal" not in file.name:
                assert password.encode() not in file.read_bytes(), file
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["room"] == {"url": url, "kiosk_paired": True}
    assert report["daemons"]["room"]["restarts"] == 0 and report["daemons"]["room"]["ready_s"] is not None
    assert report["topics"].get("health.room", 0) >= 1
    assert password not in (tmp_path / "r.json").read_text()
