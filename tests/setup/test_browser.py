"""End to end in a real headless Chromium (Debian's /usr/bin/chromium through Playwright; never
a downloaded browser): first use with the code from the kiosk's screen, the password, the
threshold, the calibration wizard, the live heatmap, the status page's live fields, logout.

The setup daemon runs on the real Runtime with a real broker. The test plays the other
daemons on the bus: it reads setup.code as the screen would, serves screening.calibrate
(storing the result with the real calibration store, as the screening daemon does), and
publishes thermal frames and health. Screenshots go to $APPLIANCE_ARTIFACTS/setup.
Any browser console error fails the test: that includes Content-Security-Policy violations.
"""

from __future__ import annotations

import asyncio
import os
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.bus.framering import FrameRingWriter, ring_path
from appliance.bus.topics import (
    CalibrateParams,
    CalibrateResult,
    Health,
    SetupCode,
    ThermalFrame,
    ThermalInterrupt,
)
from appliance.camera import PREVIEW_FORMAT, PREVIEW_RING
from appliance.screening import calstore
from appliance.screening.events import Draft, EventStore, path_in

from .conftest import PASSWORD, Rig

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
MEASURED_C = 36.2

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt install chromium)"
)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


def serve_fake_calibration(rig: Rig, calls: list[CalibrateParams]) -> None:
    async def calibrate(params: CalibrateParams) -> CalibrateResult:
        calls.append(params)
        await asyncio.sleep(0.3)  # a capture takes a moment
        rec = calstore.save(
            rig.state_dir,
            offset_c=params.reference_c - MEASURED_C,
            reference_c=params.reference_c,
            measured_c=MEASURED_C,
            frames=params.frames,
            spread_c=0.05,
            source="bus",
        )
        return CalibrateResult(offset_c=rec.offset_c, measured_c=rec.measured_c, frames=rec.frames)

    rig.bus.serve("screening.calibrate", calibrate)


def frame(seq: int, hot: float) -> ThermalFrame:
    pixels = [22.0] * 64
    for i in (27, 28, 35, 36):  # the middle four
        pixels[i] = hot
    return ThermalFrame(pixels=pixels, thermistor=24.5, rate_hz=10.0, frame_seq=seq)


async def test_technician_end_to_end(rig: Rig, browser: Any, artifacts: Path) -> None:
    errors: list[str] = []
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    page.on(
        "console",
        lambda m: (
            errors.append(f"console {m.type}: {m.text} at {m.location.get('url')}")
            if m.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

    async def shot(name: str) -> None:
        await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)

    codes = rig.bus.subscribe("setup.code")
    calls: list[CalibrateParams] = []
    serve_fake_calibration(rig, calls)
    try:
        # --- first use: the code appears on the kiosk's screen (setup.code) -----------------------
        await page.goto(rig.url + "/")
        assert page.url.endswith("/first-use")
        await shot("01-first-use")
        await page.click("#ask-code")
        await page.wait_for_selector("#code")
        code = None
        async with asyncio.timeout(5):
            while code is None:
                msg = (await codes.get()).msg
                assert isinstance(msg, SetupCode)
                code = msg.code
        await shot("02-enter-code")
        await page.fill("#code", code)
        await page.fill("#password", PASSWORD)
        await page.fill("#confirm", PASSWORD)
        await page.click("#set-password")
        await page.wait_for_url("**/status")
        await shot("03-status")

        # --- status: live fields over the WebSocket ------------------------------------------------
        await page.wait_for_function("() => document.body.dataset.socket === 'open'")
        health = Health(
            daemon="thermal", state="ready", pid=42, started_ts=time.monotonic() - 30, status="10 fps"
        )
        rig.bus.publish_nowait("health.thermal", health)
        await page.wait_for_function(
            "() => document.querySelector('[data-field=\"daemon.thermal.status\"]').textContent === '10 fps'"
        )
        assert await page.text_content('[data-field="daemon.thermal.state"]') == "ready"

        # --- settings: a bad threshold is refused, a good one saved ---------------------------------
        await page.click("nav >> text=Settings")
        await page.wait_for_url("**/settings")
        before = rig.config_file.read_bytes()
        await page.fill("#screening-threshold-c", "44")
        await page.click("#save-settings")
        await page.wait_for_selector('[data-error="screening.threshold_c"]')
        assert "less than or equal to 41" in (
            await page.text_content('[data-error="screening.threshold_c"]') or ""
        )
        assert rig.config_file.read_bytes() == before
        await shot("04-settings-refused")
        await page.fill("#screening-threshold-c", "37.7")
        await page.click("#save-settings")
        await page.wait_for_selector("text=Saved: screening.threshold_c.")
        assert tomllib.loads(rig.config_file.read_text())["screening"]["threshold_c"] == 37.7
        assert await page.input_value("#screening-threshold-c") == "37.7"
        await shot("05-settings-saved")

        # --- calibration wizard -------------------------------------------------------------------
        await page.click("nav >> text=Calibration")
        await page.wait_for_url("**/calibration")
        assert "Never calibrated" in (await page.content())
        await page.fill("#reference", "36.9")
        await page.fill("#frames", "20")
        await page.click("#calibrate")
        await page.wait_for_selector("#calibration-result")
        result_text = await page.text_content("#calibration-result") or ""
        assert "+0.70 °C" in result_text and "36.20" in result_text and "20 frames" in result_text
        assert [(c.reference_c, c.frames) for c in calls] == [(36.9, 20)]
        assert await page.text_content("#current-offset") == "+0.70 °C"
        assert await page.locator("#calibration-history tbody tr").count() == 1
        await shot("06-calibrated")

        # --- live view: the heatmap follows thermal.frame, with the interrupt mask ------------------
        ring = FrameRingWriter.create(ring_path(PREVIEW_RING, rig.run_dir), 320, 240, PREVIEW_FORMAT)
        picture = np.zeros((240, 320, 3), np.uint8)
        picture[:, :, 1] = 180  # green, in the ring's B, G, R order
        ring.write(picture, time.monotonic())
        await page.click("nav >> text=Live view")
        await page.wait_for_url("**/live")
        await page.wait_for_function("() => document.body.dataset.socket === 'open'")
        rig.bus.publish_nowait(
            "thermal.interrupt", ThermalInterrupt(mask=1 << 27, mode="absolute", upper_c=30.0, lower_c=0.0)
        )
        rig.bus.publish_nowait("thermal.frame", frame(101, 34.5))
        await page.wait_for_function("() => document.getElementById('heatmap').dataset.frameSeq === '101'")
        assert await page.text_content("#readings tr:nth-child(4) td:nth-child(4)") == "34.5"
        assert await page.text_content("#readings tr:nth-child(1) td:nth-child(1)") == "22.0"
        assert await page.get_attribute("#heatmap", "data-mask") == "27"
        assert await page.locator("#readings td.masked").count() == 1

        async def brightness(cell: int) -> float:
            return float(
                await page.evaluate(
                    """(i) => { const c = document.getElementById('heatmap'); const s = c.width / 8;
                       const x = (i % 8) * s + 4, y = Math.floor(i / 8) * s + s / 2;
                       const d = c.getContext('2d').getImageData(x, y, 1, 1).data;
                       return 0.2126 * d[0] + 0.7152 * d[1] + 0.0722 * d[2]; }""",
                    cell,
                )
            )

        assert await brightness(28) > await brightness(0) + 100, "hot pixels drawn bright, cold dark"
        await page.wait_for_function("() => document.getElementById('snapshot').naturalWidth === 320")
        await shot("07-live-view")
        ring.close()
        rig.bus.publish_nowait("thermal.frame", frame(102, 36.1))
        await page.wait_for_function("() => document.getElementById('heatmap').dataset.frameSeq === '102'")
        assert await page.text_content("#readings tr:nth-child(4) td:nth-child(4)") == "36.1"

        # --- events ------------------------------------------------------------------------------------
        with EventStore.open(path_in(rig.state_dir)) as store:
            for i, est in enumerate((36.4, 38.9, 36.8)):
                result = "elevated" if est > 38 else "normal"
                store.append(
                    Draft(
                        wall_ts=time.time() - 600 + i * 60,
                        start=i,
                        end=i + 1,
                        result=result,
                        estimate_c=est,
                        confidence=0.9,
                        threshold_c=37.7,
                    )
                )
        await page.click("nav >> text=Events")
        await page.wait_for_url("**/events")
        assert await page.locator("#events tbody tr").count() == 3
        assert await page.locator("svg.chart .mark").count() == 3
        await shot("08-events")

        # --- logout ------------------------------------------------------------------------------------
        await page.click("nav >> text=Log out")
        await page.wait_for_url("**/login")
        await page.goto(rig.url + "/settings")
        assert page.url.endswith("/login")
        await shot("09-logged-out")
    finally:
        await context.close()
        codes.close()
    # The one expected: the refused settings form answers 400, which Chromium logs.
    unexpected = [e for e in errors if "status of 400" not in e]
    assert unexpected == [], unexpected
