"""The admin flow in a real Chromium (Debian's, driven by Playwright): log in, create a room,
pair a kiosk by its code, create a viewer link. Screenshots go to $APPLIANCE_ARTIFACTS (or the
test's temporary directory)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .process import RoomProcess, add_admin, room_process, write_config

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    base = Path(os.environ.get("APPLIANCE_ARTIFACTS", tmp_path / "artifacts")) / "room-admin"
    base.mkdir(parents=True, exist_ok=True)
    return base


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RoomProcess]:
    config = write_config(tmp_path)
    add_admin(config, "alice", PASSWORD)
    with room_process(config) as running:
        yield running


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_admin_flow_in_chromium(service: RoomProcess, artifacts: Path) -> None:
    grant = requests.post(
        service.url + "/api/v1/device/authorize",
        json={"device_id": "kiosk-7", "model": "Raspberry Pi 5 Model B", "firmware": "0.4.0"},
        timeout=10,
    ).json()
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()  # a phone
            page.goto(service.url + "/rooms")
            assert "/login" in page.url
            # Keyboard only: the username field has the focus, Tab goes on, Enter submits.
            assert page.evaluate("document.activeElement.id") == "username"
            page.keyboard.type("alice")
            page.keyboard.press("Tab")
            page.keyboard.type(PASSWORD)
            page.screenshot(path=artifacts / "1-login.png", full_page=True)
            page.keyboard.press("Enter")
            page.wait_for_url("**/rooms")
            page.keyboard.press("Tab")  # the first stop on every page: skip to the content
            assert page.evaluate("document.activeElement.className") == "skip"

            page.get_by_label("Name").fill("Main entrance")
            page.get_by_role("button", name="Create room").click()
            page.wait_for_url("**/rooms/r*")
            room_url = page.url
            page.screenshot(path=artifacts / "2-room.png", full_page=True)

            # The kiosk's QR code leads here, the code filled in.
            page.goto(grant["verification_uri_complete"])
            assert page.get_by_label("Code").input_value() == grant["user_code"]
            page.get_by_role("button", name="Continue").click()
            page.get_by_text("Raspberry Pi 5 Model B").wait_for()
            page.get_by_text("kiosk-7").wait_for()
            page.get_by_label("Room").select_option(label="Main entrance")
            page.screenshot(path=artifacts / "3-confirm.png", full_page=True)
            page.get_by_role("button", name="Pair with this room").click()
            page.get_by_role("heading", name="Kiosk paired").wait_for()
            page.screenshot(path=artifacts / "4-paired.png", full_page=True)
            token = requests.post(
                service.url + "/api/v1/device/token", json={"device_code": grant["device_code"]}, timeout=10
            ).json()
            assert token["room"]["name"] == "Main entrance"

            page.goto(room_url)
            page.get_by_text("Raspberry Pi 5 Model B").wait_for()
            page.get_by_label("Label (who it is for)").fill("Front desk")
            page.get_by_label("Expires after").select_option(label="7 days")
            page.get_by_role("button", name="Create viewer link").click()
            link = page.get_by_role("textbox", name="Viewer link", exact=True).input_value()
            assert link.startswith(service.url + "/view/")
            page.get_by_role("button", name="Copy link").click()
            page.locator(".copied").filter(has_text="C").wait_for()  # "Copied." or the Ctrl+C hint
            page.screenshot(path=artifacts / "5-invite.png", full_page=True)
            # Nothing sticks out sideways on a phone.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

            invite = link.rsplit("/", 1)[1]
            session = requests.post(
                service.url + "/api/v1/viewer/session", json={"invite": invite}, timeout=10
            )
            assert session.status_code == 200 and session.json()["room"]["name"] == "Main entrance"
        finally:
            browser.close()
    for name in ("1-login", "2-room", "3-confirm", "4-paired", "5-invite"):
        assert (artifacts / f"{name}.png").stat().st_size > 1000
