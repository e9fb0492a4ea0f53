"""End to end in a real Chromium (Debian's, driven by Playwright) against `appliance demo`.

The demo runs the room service and every kiosk daemon with simulated hardware, and pairs its
kiosk itself. In the browser an admin logs in, creates a room and pairs a second kiosk by the
code it got from the device flow (/activate, as the kiosk's QR code leads there); then the
demo's viewer link shows the kiosk's video, whose stamped frame counter advances, and the sim
scenario's feverish visitor raises a live fever alert on the page within 150 ms of the
screening daemon publishing it (its wall_ts against the page's Date.now(): one machine, one
clock). Screenshots of the admin and viewer pages go to $APPLIANCE_ARTIFACTS (or the test's
temporary directory).

The scenario loops every 180 s on the monotonic clock; APPLIANCE_SIM_EPOCH (passed through
the demo to its sims) places the feverish visitor (bob, enters at scene time 16 s) just after
the screening daemon's 30 s warm-up lockout, so the test does not wait for the loop to come
round.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("/usr/bin/chromium") is None, reason="Debian's chromium is not installed"
    ),
]

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # Real host addresses in ICE candidates instead of mDNS names: no multicast needed.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
# The demo's screening daemon gives no result for system_warmup_s (30 s) after it starts, which
# is a few seconds after the demo starts. Bob enters at scene time 16 s and his alert follows
# about 2 s later: with the scene's zero this far after the demo's start, he enters at about
# 16 + 26 = 42 s, past the lockout with room to spare on a slow machine.
SCENE_ZERO_AFTER_START_S = 26.0
BOB_ENTERS_S = 16.0
ALERT_BUDGET_MS = 150.0

# Records every message on the events data channel with its receive time, before the page's
# own handler runs: the page sets `channel.onmessage`, so wrap that setter.
RECEIVE_HOOK = """
(() => {
  window.__rx = [];
  const desc = Object.getOwnPropertyDescriptor(RTCDataChannel.prototype, "onmessage");
  Object.defineProperty(RTCDataChannel.prototype, "onmessage", {
    configurable: true,
    enumerable: desc.enumerable,
    get() { return desc.get.call(this); },
    set(handler) {
      const label = this.label;
      desc.set.call(this, handler && function (e) {
        const t = Date.now();
        if (label === "events") {
          try { window.__rx.push({ t, msg: JSON.parse(e.data) }); } catch (_) {}
        }
        return handler.call(this, e);
      });
    },
  });
})();
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    base = Path(os.environ.get("APPLIANCE_ARTIFACTS", tmp_path / "artifacts")) / "room-end-to-end"
    base.mkdir(parents=True, exist_ok=True)
    return base


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    started: float
    url: str
    admin: str
    password: str
    viewer_link: str
    lines: list[str]


@pytest.fixture
def demo(tmp_path: Path, artifacts: Path) -> Iterator[Demo]:
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS")}
    env.pop("APPLIANCE_DEMO_ROOM_PORT", None)
    env.update(
        APPLIANCE_SIM_EPOCH=repr(started + SCENE_ZERO_AFTER_START_S),
        APPLIANCE_DEMO_SETUP_PORT=str(free_port()),
    )
    log = open(artifacts / "demo.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "demo",
            "--headless",
            "--for",
            "120",
            "--workdir",
            str(tmp_path / "work"),
            "--report",
            str(tmp_path / "report.json"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
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
        viewer = re.search(r"viewer link:\s+(http://\S+/view/\S+)", text)
        assert admin is not None and viewer is not None, text
        assert "kiosk:        paired with 'Demo entrance'" in text, text
        url, user, password = admin.groups()
        yield Demo(proc, started, url, user, password, viewer.group(1), lines)
        # Ctrl-C's path: every daemon stops in order and the demo exits cleanly.
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        work = tmp_path / "work" / "logs"
        if work.is_dir():
            for each in work.glob("*.log"):
                shutil.copy(each, artifacts / f"daemon-{each.name}")


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def test_admin_pairs_a_kiosk_and_a_viewer_sees_video_and_a_live_fever_alert(
    demo: Demo, browser: Any, artifacts: Path
) -> None:
    # --- the admin: log in, make a room, pair a second kiosk by its code ----------------------
    grant = requests.post(
        demo.url + "/api/v1/device/authorize",
        json={"device_id": "kiosk-back-door", "model": "Raspberry Pi 4 Model B", "firmware": "0.9.0"},
        timeout=10,
    )
    assert grant.status_code == 200, grant.text
    code = grant.json()
    admin = browser.new_context(viewport={"width": 1024, "height": 800}).new_page()
    admin.goto(demo.url + "/rooms")
    assert "/login" in admin.url
    admin.get_by_label("Username").fill(demo.admin)
    admin.get_by_label("Password").fill(demo.password)
    admin.get_by_role("button", name="Log in").click()
    admin.wait_for_url("**/rooms")
    assert "Demo entrance" in admin.content()  # the demo's room, its kiosk paired by the demo
    admin.get_by_label("Name").fill("Back door")
    admin.get_by_role("button", name="Create room").click()
    admin.wait_for_url("**/rooms/r*")

    # The kiosk's QR code leads to the activation page with the code filled in.
    admin.goto(code["verification_uri_complete"])
    assert admin.get_by_label("Code").input_value() == code["user_code"]
    admin.get_by_role("button", name="Continue").click()
    assert "kiosk-back-door" in admin.content()
    # The demo's room has its kiosk: only the new room can be picked.
    assert admin.locator("#room option[disabled]").inner_text().startswith("Demo entrance")
    admin.select_option("#room", label="Back door")
    admin.get_by_role("button", name="Pair with this room").click()
    admin.wait_for_selector("text=Kiosk paired")
    assert "Back door" in admin.inner_text("main")
    admin.screenshot(path=artifacts / "1-admin-activated.png", full_page=True)
    # The kiosk's next poll gets its token; interval_s is 1 in the demo's room config.
    token = None
    for _ in range(20):
        answer = requests.post(
            demo.url + "/api/v1/device/token", json={"device_code": code["device_code"]}, timeout=10
        )
        if answer.status_code == 200:
            token = answer.json()["access_token"]
            break
        assert answer.json().get("error") in ("authorization_pending", "slow_down"), answer.text
        time.sleep(code.get("interval", 1))
    assert token, "the paired kiosk got no token"
    me = requests.get(
        demo.url + "/api/v1/device/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert me.status_code == 200 and "Back door" in me.text, me.text
    admin.goto(demo.url + "/devices")
    devices = admin.content()
    assert "kiosk-back-door" in devices and "Demo entrance" in devices and "Back door" in devices
    admin.screenshot(path=artifacts / "2-admin-devices.png", full_page=True)

    # --- the viewer: the demo's link, the kiosk's video ----------------------------------------
    viewer = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors: list[str] = []
    viewer.on("pageerror", lambda exc: errors.append(str(exc)))
    viewer.add_init_script(RECEIVE_HOOK)
    viewer.goto(demo.viewer_link)
    viewer.wait_for_function("window.viewer && window.viewer.firstFrameAt !== null", timeout=30000)
    viewer.wait_for_function("window.__rx.some(r => r.msg.type === 'hello')", timeout=10000)
    # Chromium caches a getStats() report for a moment: wait for the codec's entry to be in it.
    viewer.wait_for_function("window.viewer.stats().then(s => s && s.codec !== null)", timeout=5000)
    stats = viewer.evaluate("window.viewer.stats()")
    assert stats["codec"] == "video/H264", stats

    def stamp() -> dict[str, int]:
        # A frame's stamp can be unreadable (mid-update, compression): take the next good one.
        viewer.wait_for_function("window.viewer.readStamp() !== null", timeout=5000, polling=50)
        got: dict[str, int] = viewer.evaluate("window.viewer.readStamp()") or stamp()
        return got

    first, frames_before = stamp(), viewer.evaluate("window.viewer.stats()")["framesDecoded"]
    viewer.wait_for_timeout(1000)
    second, frames_after = stamp(), viewer.evaluate("window.viewer.stats()")["framesDecoded"]
    # The demo's camera runs at 30 fps: in a second the counter moves on by about that much.
    assert 5 <= second["counter"] - first["counter"] <= 90, (first, second)
    assert frames_after - frames_before >= 5, (frames_before, frames_after)
    now_ms = int(time.time() * 1000) & 0xFFFFFFFF
    assert 0 <= (now_ms - second["ms"]) % 2**32 < 5000  # a picture from just now
    viewer.screenshot(path=artifacts / "3-viewer-live.png", full_page=True)

    # --- the feverish visitor: a live alert on the page within 150 ms --------------------------
    assert not any(r["msg"].get("topic") == "alert.fever" for r in viewer.evaluate("window.__rx")), (
        "an alert before bob's visit: the scene is not where the test put it"
    )
    bob_due = demo.started + SCENE_ZERO_AFTER_START_S + BOB_ENTERS_S
    wait_ms = max(0.0, bob_due + 25 - time.monotonic()) * 1000
    viewer.wait_for_function(
        "window.__rx.some(r => r.msg.topic === 'alert.fever')", timeout=wait_ms, polling=100
    )
    viewer.wait_for_selector("#alert-banner:not([hidden])", timeout=5000)
    received = viewer.evaluate("window.__rx.filter(r => r.msg.topic === 'alert.fever')")
    assert len(received) == 1, received
    alert, at_ms = received[0]["msg"], received[0]["t"]
    assert alert["live"] is True and alert["estimate_c"] >= alert["threshold_c"], alert
    latency_ms = at_ms - alert["wall_ts"] * 1000
    print(
        f"fever alert seq {alert['seq']} at {alert['estimate_c']:.1f} °C: {latency_ms:.1f} ms kiosk to page"
    )
    assert -5.0 <= latency_ms <= ALERT_BUDGET_MS, (latency_ms, alert)
    assert "Fever alert" in viewer.inner_text("#alert-text")
    assert viewer.locator("#alerts li").count() == 1
    viewer.screenshot(path=artifacts / "4-viewer-fever-alert.png", full_page=True)
    # The screening result of the same visit came first, with the same seq.
    results = [
        r["msg"] for r in viewer.evaluate("window.__rx") if r["msg"].get("topic") == "screening.result"
    ]
    assert any(r["seq"] == alert["seq"] and r["result"] == "elevated" for r in results), results
    assert errors == [], errors
