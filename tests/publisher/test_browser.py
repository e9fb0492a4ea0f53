"""A real Chromium (Debian's, through Playwright) on the viewer page, against the real publisher.

The page (appliance/room/static/viewer.html) is served by the in-test room service as the
hosted one serves it: /view/<invite>. Chromium decodes the kiosk's H.264, reads the camera's
frame stamp back from the picture, and speaks the data-channel protocol.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from appliance.bus.client import BusClient
from appliance.bus.topics import AlertAck, ChatMessage, FrameRingNotice, ScreeningState
from appliance.publisher import call as call_module
from appliance.publisher.speaker import NullSpeaker

from .conftest import Camera, Publisher
from .helpers import Screening, wait_until
from .room import RoomServer
from .test_call import screening, thermal_frame  # noqa: F401 - the fixture, shared

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # Real host addresses in ICE candidates instead of mDNS names, so that resolving them
    # needs no multicast on the network: the test stays on this machine.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (make deps installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


async def open_viewer(browser: Any, room: RoomServer, name: str | None = None) -> Any:
    page = await browser.new_page()
    if name is not None:
        await page.add_init_script(f"localStorage.setItem('viewer.name', {name!r})")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await page.goto(f"{room.url}/view/invite1")
    await page.wait_for_function("window.viewer && window.viewer.firstFrameAt !== null", timeout=20000)
    return page


async def test_chromium_decodes_the_passed_through_h264_and_reads_the_stamp(
    camera: Camera, start_publisher: Callable[..., Awaitable[Publisher]], room: RoomServer, browser: Any
) -> None:
    await start_publisher()
    page = await open_viewer(browser, room)
    size = await page.evaluate(
        "[document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]"
    )
    assert size == [160, 120]
    # Chromium caches a getStats() report for a moment, and the page asks for its own: the one
    # right after the first frame may predate the codec's entry. Wait for the entry, then check.
    await page.wait_for_function("window.viewer.stats().then(s => s && s.codec !== null)", timeout=5000)
    stats = await page.evaluate("window.viewer.stats()")
    assert stats["codec"] == "video/H264" and "profile-level-id=42e01f" in stats["fmtp"]
    assert stats["framesDecoded"] > 0
    # The stamp the camera drew into the picture comes back through H.264 and the canvas:
    # its counter advances with the video, and its time is a wall-clock time just past.
    first = await page.evaluate("window.viewer.readStamp()")
    await asyncio.sleep(0.5)
    second = await page.evaluate("window.viewer.readStamp()")
    assert first is not None and second is not None
    assert 0 < second["counter"] - first["counter"] <= 15
    now_ms = int(time.time() * 1000) & 0xFFFFFFFF
    assert 0 <= (now_ms - second["ms"]) % 2**32 < 5000
    assert page.errors == []


async def test_chromium_speaks_the_data_channel_protocol(
    camera: Camera,
    start_publisher: Callable[..., Awaitable[Publisher]],
    room: RoomServer,
    browser: Any,
    screening: Screening,  # noqa: F811
    bus_factory: Callable[[str], Awaitable[BusClient]],
) -> None:
    pub = await start_publisher()
    kiosk = await bus_factory("screen")
    chats = kiosk.subscribe("call.chat")
    acks = kiosk.subscribe("alert.ack")
    page = await open_viewer(browser, room, name="Dana")
    await page.wait_for_function("window.viewer.messages.some(m => m.type === 'hello')")
    await wait_until(lambda: any(v.joined for v in pub.call.viewers.values()), "the page's join")

    # Telemetry: the state panel and the thermal overlay.
    screening.bus.publish_nowait("screening.state", ScreeningState(state="hold-still", progress=0.3))
    screening.bus.publish_nowait("thermal.frame", thermal_frame(1, hot=36.9))
    await page.wait_for_function("document.getElementById('state').textContent === 'Hold still'")
    await page.wait_for_function(
        """() => {
            const d = document.getElementById('thermal').getContext('2d').getImageData(0, 0, 64, 64).data;
            let lit = 0;
            for (let i = 0; i < d.length; i += 4) lit += d[i] + d[i + 1] + d[i + 2] > 300 ? 1 : 0;
            return lit > 100;
        }"""
    )

    # A fever alert: banner, history, acknowledgement back to the kiosk.
    seq = screening.record("elevated", 38.8)
    await page.wait_for_selector("#alert-banner:not([hidden])")
    assert "38.8 °C" in await page.inner_text("#alert-text")
    await page.click("#alert-ack")
    ack = (await acks.get(10)).msg
    assert isinstance(ack, AlertAck) and ack.seq == seq
    await page.wait_for_selector("#alert-banner[hidden]", state="attached")
    assert "acknowledged by Dana" in await page.inner_text("#alerts")
    # The page acknowledged receipt of the events, for resuming after a reconnect.
    viewer = next(iter(pub.call.viewers.values()))
    await wait_until(lambda: viewer.cursor.acked == seq, "the page's ack")

    # Chat both ways.
    await page.fill("#chat-text", "Please look at the screen")
    await page.click("#chat-send")
    msg = (await chats.get(10)).msg
    assert isinstance(msg, ChatMessage) and (msg.sender, msg.text) == ("Dana", "Please look at the screen")
    # A line the kiosk refuses (past the chat limit) is marked as not sent on the page.
    for n in range(call_module.CHAT_BURST):
        await page.fill("#chat-text", f"again {n}")
        await page.click("#chat-send")
    await page.wait_for_selector("#chat-log li.refused")
    assert "too many chat lines" in await page.inner_text("#chat-log li.refused")
    kiosk.publish_nowait("call.chat", ChatMessage(sender="kiosk", text="Coming", wall_ts=time.time()))
    await page.wait_for_function("document.getElementById('chat-log').textContent.includes('Coming')")

    # Unmuting asks for the kiosk's sound: the microphone opens and Opus reaches the page.
    assert not pub.service.audio.capturing
    await page.click("#unmute")
    await wait_until(lambda: pub.service.audio.capturing, "the kiosk microphone open", 10)
    await page.wait_for_function(
        """async () => {
            const report = await window.viewer.audioStats();
            return report !== null && report.packetsReceived > 10;
        }""",
        polling=200,
    )
    await page.click("#unmute")
    await wait_until(lambda: not pub.service.audio.capturing, "the kiosk microphone closed", 10)

    # Push-to-talk with Chromium's fake microphone: its audio plays on the kiosk's speaker.
    speaker = pub.service.speaker
    assert isinstance(speaker, NullSpeaker)
    await page.hover("#talk")
    await page.mouse.down()
    await wait_until(lambda: pub.call.floor is not None, "the floor", 10)
    await wait_until(lambda: speaker.frames > 25, "the page's microphone at the kiosk speaker", 10)
    await page.mouse.up()
    await wait_until(lambda: pub.call.floor is None, "the floor released", 10)
    assert page.errors == []


async def test_chromium_rides_out_a_room_service_restart_a_full_room_and_shows_its_camera(
    camera: Camera,
    start_publisher: Callable[..., Awaitable[Publisher]],
    room: RoomServer,
    browser: Any,
    bus_factory: Callable[[str], Awaitable[BusClient]],
) -> None:
    pub = await start_publisher(max_viewers=1)
    screen = await bus_factory("screen")
    notices = screen.subscribe("call.remote_video")
    page = await open_viewer(browser, room)

    # The viewer's own camera (Chromium's fake one) on the kiosk's picture-in-picture.
    await page.click("#camera")
    notice = (await notices.get(20)).msg
    assert isinstance(notice, FrameRingNotice) and notice.ring == "call-remote-video"
    await page.click("#camera")

    # The room service dies and comes back: the page reconnects by itself and gets a new call.
    calls = await page.evaluate("window.viewer.calls")
    await room.kill()
    await page.wait_for_function("document.getElementById('conn').dataset.kind === 'reconnecting'")
    await room.start()
    await page.wait_for_function(f"window.viewer.calls > {calls}", timeout=30000)
    await page.wait_for_function("window.viewer.firstFrameAt !== null", timeout=20000)
    await wait_until(lambda: len(pub.call.viewers) == 1, "one call, the new one", 15)

    # A second page finds the room full and says so.
    second = await browser.new_page()
    await second.goto(f"{room.url}/view/invite1")
    await second.wait_for_function("document.getElementById('conn').dataset.kind === 'full'", timeout=30000)
    assert "busy" in await second.inner_text("#notice")
    assert page.errors == [], page.errors


async def test_a_returning_page_catching_up_is_not_rate_limited_for_its_acks(
    camera: Camera,
    start_publisher: Callable[..., Awaitable[Publisher]],
    room: RoomServer,
    browser: Any,
    screening: Screening,  # noqa: F811
) -> None:
    """A page that comes back after a while (its last seq in sessionStorage) is replayed what it
    missed, up to 2000 events in a burst. An ack per event spent the viewer's message budget
    (20/s, bursts of 60): hundreds of "rate-limited" replies, and a press of Acknowledge, Talk
    or Send in that window refused. The page acknowledges receipt cumulatively, so it sends its
    newest seq now and then, not once per event."""
    pub = await start_publisher()
    seqs = [screening.record("normal", 36.6, publish=False) for _ in range(300)]
    page = await browser.new_page()
    await page.add_init_script(f"sessionStorage.setItem('viewer.seq.invite1', '{seqs[0]}')")
    await page.goto(f"{room.url}/view/invite1")
    await page.wait_for_function(
        f"sessionStorage.getItem('viewer.seq.invite1') === '{seqs[-1]}'", timeout=20000
    )
    await wait_until(
        lambda: any(v.cursor.acked == seqs[-1] for v in pub.call.viewers.values()), "the last ack"
    )
    problems = await page.evaluate("window.viewer.messages.filter(m => m.type === 'error')")
    assert problems == []
