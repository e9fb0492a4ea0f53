"""What reaches the screen from the bus is not always well formed: values the message types
allow but no screen should show (NaN, infinity), text from remote staff and remote servers
(control characters, words wider than the panel, a URL too long for a QR code), producers
that stop without saying so. None of it may stop the drawing or put nonsense on the screen."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pygame
import pytest

from appliance.bus.topics import (
    CallState,
    ChatMessage,
    PairingStatus,
    ScreeningState,
    SetupCode,
    ViewerStats,
)
from appliance.screen import daemon
from appliance.screen.layout import Box
from appliance.screen.model import Inputs
from appliance.screen.render import Frames, Renderer, RenderReport, offscreen
from appliance.screen.strings import CATALOGUE
from appliance.screen.view import CAMERA_FRESH_S, DisplaySettings, View, compose

from .helpers import MONO, WALL, camera_frame, inputs

EN = CATALOGUE["en"]


def draw(inp: Inputs, size: tuple[int, int] = (800, 480)) -> tuple[View, RenderReport, pygame.Surface]:
    view = compose(inp, DisplaySettings(), WALL, MONO)
    surface = offscreen(size)
    report = Renderer(size).render(view, Frames(camera=camera_frame(), thermal=inp.thermal_pixels), surface)
    return view, report, surface


def talking(*chat: ChatMessage) -> Inputs:
    inp = inputs(
        screening=ScreeningState(state="idle"),
        call=CallState(viewers=[ViewerStats(viewer_id="v1")], room_connected=True, talking=True),
    )
    for msg in chat:
        inp.apply("call.chat", msg, MONO)
    return inp


def inside(rect: Box, box: Box) -> bool:
    x, y, w, h = rect
    bx, by, bw, bh = box
    return bx <= x and by <= y and x + w <= bx + bw and y + h <= by + bh


# --- temperatures the message type allows but no person should read ------------------------


@pytest.mark.parametrize("estimate", [math.nan, math.inf, -math.inf, 1e300])
def test_a_normal_result_never_shows_a_nonsense_reading(estimate: float) -> None:
    # msgspec decodes NaN and infinity into ScreeningState.estimate_c (a plain float).
    inp = inputs(screening=ScreeningState(state="result", result="normal", estimate_c=estimate))
    view = view_of(inp, "F")
    assert view.kind == "normal"
    assert view.reading == "-- °F"


@pytest.mark.parametrize("estimate", [math.nan, math.inf])
def test_an_elevated_result_with_a_nonsense_estimate_shows_no_reading(estimate: float) -> None:
    inp = inputs(screening=ScreeningState(state="result", result="elevated", estimate_c=estimate))
    view = view_of(inp)
    assert view.kind == "elevated" and view.reading is None
    assert view.title == EN["elevated_title"]


def view_of(inp: Inputs, units: str = "C") -> View:
    return compose(inp, DisplaySettings(units=units), WALL, MONO)  # type: ignore[arg-type]


# --- codes whose expiry is not a time ---------------------------------------------------------


def test_a_setup_code_that_never_expires_is_shown_not_a_crash() -> None:
    # An infinite expiry used to raise OverflowError in compose: the render task died with it,
    # and the retained setup.code killed the daemon again on every restart.
    inp = inputs(setup_code=SetupCode(code="482913", expires_at=math.inf))
    view, report, _ = draw(inp)
    assert view.kind == "setup-code" and view.code == "482913" and view.code_expiry is None
    assert report.text_of("code") == "4 8 2 9 1 3"


def test_a_pairing_code_that_never_expires_is_shown_not_a_crash() -> None:
    status = PairingStatus(state="code", user_code="WDJB-MJHT", expires_at=math.inf)
    view = compose(inputs(pairing=status), DisplaySettings(), WALL, MONO)
    assert view.kind == "pairing" and view.code_expiry is None


def test_a_code_with_a_nan_expiry_is_not_shown() -> None:
    view = compose(
        inputs(setup_code=SetupCode(code="482913", expires_at=math.nan)), DisplaySettings(), WALL, MONO
    )
    assert view.kind != "setup-code"


# --- text from other people ---------------------------------------------------------------------


def test_control_characters_in_chat_do_not_stop_the_drawing() -> None:
    # A NUL made pygame's font.render raise ValueError; escapes and bidi overrides drew as boxes.
    msg = ChatMessage(sender="Ana\x00", text="Wait\x00 here\x1b[31m now\x07 \u202eplease", wall_ts=WALL - 1)
    _, report, _ = draw(talking(msg))
    assert report.text_of("chat") == "Ana: Wait here[31m now please"


def test_a_nul_in_a_setup_code_does_not_stop_the_drawing() -> None:
    _, report, _ = draw(inputs(setup_code=SetupCode(code="48\x002913", expires_at=WALL + 60)))
    assert report.text_of("code") == "4 8 2 9 1 3"


@pytest.mark.parametrize(
    "text",
    [
        "请稍等一下工作人员马上就到请不要离开这里我们正在为您联系值班医生谢谢您的耐心等待" * 3,
        "https://rooms.example.org/" + "a" * 140,
    ],
)
def test_a_word_wider_than_the_panel_is_broken_to_fit_it(text: str) -> None:
    # Chinese has no spaces between words, and a URL is one word: either used to be drawn as
    # one line running off the panel (and the screen).
    _, report, _ = draw(talking(ChatMessage(sender="Staff", text=text, wall_ts=WALL - 1)))
    lines = [t for t in report.texts if t.role == "chat"]
    assert lines
    for line in lines:
        assert inside(line.rect, report.regions["chat"]), line
    # What fits in two lines is the start of the message, not something else.
    assert "".join(t.text for t in lines).replace(" ", "").startswith("Staff:" + text[:10])


def test_a_verification_uri_too_long_for_a_qr_code_still_shows_the_code() -> None:
    # The URI comes from the room service; segno raised DataOverflowError inside render.
    status = PairingStatus(
        state="code",
        user_code="WDJB-MJHT",
        expires_at=WALL + 600,
        verification_uri_complete="https://rooms.example.org/activate?c=" + "x" * 4000,
    )
    view, report, _ = draw(inputs(pairing=status))
    assert view.kind == "pairing"
    assert report.text_of("code") == "WDJB-MJHT"
    assert "qr" not in report.regions


# --- producers that stop without a word ----------------------------------------------------------


def test_a_camera_that_stops_sending_frames_is_said_to_be_gone() -> None:
    # The camera daemon killed or hung: camera.status stays "ok" (retained), frames stop.
    inp = inputs(screening=ScreeningState(state="idle"))
    assert compose(inp, DisplaySettings(), WALL, MONO).preview.camera_problem is None  # type: ignore[union-attr]
    later = compose(inp, DisplaySettings(), WALL, MONO + CAMERA_FRESH_S + 0.5)
    assert later.preview is not None
    assert later.preview.camera_seq == 0
    assert later.preview.camera_problem == EN["camera_fault"]
    # Frames again: the picture is back and the words go.
    inp.note_camera(MONO + CAMERA_FRESH_S + 1.0)
    back = compose(inp, DisplaySettings(), WALL, MONO + CAMERA_FRESH_S + 1.0)
    assert back.preview is not None and back.preview.camera_problem is None and back.preview.camera_seq > 0


def test_no_camera_problem_before_the_first_frame() -> None:
    # Starting up: nothing seen yet is not a camera that went away.
    inp = inputs(screening=ScreeningState(state="idle"), with_camera=False)
    view = compose(inp, DisplaySettings(), WALL, MONO + 60.0)
    assert view.preview is not None and view.preview.camera_problem is None


# --- the draw loop --------------------------------------------------------------------------------


class FakeRuntime:
    def __init__(self) -> None:
        self.stopped: int | None = None
        self.statuses: list[str] = []

    def stop(self, code: int = 0) -> None:
        self.stopped = code

    def status(self, text: str) -> None:
        self.statuses.append(text)


class FlakyService:
    """refresh() fails on its first call (a bad message), then draws."""

    def __init__(self) -> None:
        self.calls = 0
        self.view: View | None = None

    def refresh(self, wall_now: float, mono_now: float) -> bool:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("a bad message")
        self.view = compose(
            inputs(screening=ScreeningState(state="idle")), DisplaySettings(), wall_now, mono_now
        )
        return True


async def test_one_failed_redraw_does_not_stop_the_drawing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "TICK_S", 0.01)
    rt, svc, dirty = FakeRuntime(), FlakyService(), asyncio.Event()
    dirty.set()
    task = asyncio.create_task(daemon._render_loop(rt, svc, dirty, lambda: True))  # type: ignore[arg-type]
    try:
        for _ in range(500):
            if svc.calls >= 3 or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done(), task.exception() if task.done() else None
        assert svc.calls >= 2 and svc.view is not None and svc.view.kind == "idle"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Sub:
    """A subscription that yields the given messages, then ends."""

    pattern = "call.chat"

    def __init__(self, count: int) -> None:
        self.left = count

    def __aiter__(self) -> Sub:
        return self

    async def __anext__(self) -> int:
        if not self.left:
            raise StopAsyncIteration
        self.left -= 1
        return self.left


class FlakyInbox:
    """on_message() fails on the first message, then takes the rest."""

    def __init__(self) -> None:
        self.taken: list[int] = []

    def on_message(self, rx: int) -> bool:
        if not self.taken and rx == 2:
            self.taken.append(-1)
            raise ValueError("a bad message")
        self.taken.append(rx)
        return True


async def test_one_bad_message_does_not_end_its_topics_subscription() -> None:
    inbox, dirty = FlakyInbox(), asyncio.Event()
    await daemon._consume(Sub(3), inbox, dirty)  # type: ignore[arg-type]
    assert inbox.taken == [-1, 1, 0] and dirty.is_set()


# --- one call's chat is not the next visitor's ---------------------------------------------------


def test_the_chat_of_a_call_that_ended_is_not_shown_in_the_next() -> None:
    """Staff chat is for the person they were talking to. When the last viewer leaves, the
    lines go: a new call minutes later must not show the next visitor what was said before."""
    inp = talking(ChatMessage(sender="Dr Lee", text="Your result is on its way, Mr Smith", wall_ts=WALL - 5))
    assert compose(inp, DisplaySettings(), WALL, MONO).chat  # shown during the call
    inp.apply("call.state", CallState(viewers=[], room_connected=True), MONO)
    inp.apply(
        "call.state",
        CallState(viewers=[ViewerStats(viewer_id="v2")], room_connected=True, talking=True),
        MONO + 30,
    )
    view = compose(inp, DisplaySettings(), WALL + 30, MONO + 30)
    assert not view.chat and not inp.chat
    # A call that goes on (its figures updated) keeps its lines.
    inp.apply("call.chat", ChatMessage(sender="Ana", text="Hello", wall_ts=WALL + 31), MONO + 31)
    inp.apply(
        "call.state",
        CallState(viewers=[ViewerStats(viewer_id="v2", rtt_ms=20.0)], room_connected=True, talking=True),
        MONO + 32,
    )
    assert [m.text for m in inp.chat] == ["Hello"]
