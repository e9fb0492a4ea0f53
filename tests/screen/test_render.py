"""A screenshot per screen, checked by structure: the panel's colour, the icon's ink, each
string drawn where the renderer says (compared with the same string drawn alone), the camera
picture (mirrored), the overlay, the face guide, the QR code module by module.

Screenshots are written to $APPLIANCE_ARTIFACTS/screen (or a temporary dir) for people.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pygame
import pytest

from appliance.bus.topics import (
    CallState,
    CameraStatus,
    ChatMessage,
    Health,
    PairingStatus,
    ScreeningState,
    SetupCode,
    ThermalStatus,
    ViewerStats,
)
from appliance.screen import palette
from appliance.screen.model import Inputs
from appliance.screen.palette import TONES, ink_for
from appliance.screen.qr import modules
from appliance.screen.render import Frames, Renderer, RenderReport, offscreen
from appliance.screen.strings import CATALOGUE, Language
from appliance.screen.view import DisplaySettings, View, compose

from .helpers import (
    MONO,
    WALL,
    assert_text_on_screen,
    camera_frame,
    inputs,
    pixel,
    region,
    share_of,
    thermal_pixels,
)

QR_URI = "https://rooms.example.org/activate?user_code=WDJB-MJHT"

Case = Callable[[], Inputs]


def _call() -> Inputs:
    inp = inputs(
        screening=ScreeningState(state="idle"),
        call=CallState(viewers=[ViewerStats(viewer_id="v1")], room_connected=True, talking=True),
    )
    inp.chat.append(ChatMessage(sender="Dr Lee", text="Hello, please wait a moment.", wall_ts=WALL - 3))
    inp.note_remote(MONO)
    return inp


CASES: dict[str, Case] = {
    "warming-up": lambda: inputs(thermal=ThermalStatus(state="warming-up")),
    "idle": lambda: inputs(screening=ScreeningState(state="idle")),
    "too-far": lambda: inputs(screening=ScreeningState(state="too-far")),
    "too-close": lambda: inputs(screening=ScreeningState(state="too-close")),
    "multiple": lambda: inputs(screening=ScreeningState(state="multiple")),
    "hold-still": lambda: inputs(screening=ScreeningState(state="hold-still")),
    "measuring": lambda: inputs(screening=ScreeningState(state="measuring", progress=0.6)),
    "normal": lambda: inputs(screening=ScreeningState(state="result", result="normal", estimate_c=36.7)),
    "elevated": lambda: inputs(screening=ScreeningState(state="result", result="elevated", estimate_c=38.6)),
    "retry": lambda: inputs(screening=ScreeningState(state="result", result="retry")),
    "fault": lambda: inputs(screening=ScreeningState(state="fault"), thermal=ThermalStatus(state="fault")),
    "unavailable": lambda: inputs(
        screening=ScreeningState(state="result", result="normal", estimate_c=36.7),
        screening_health=Health(daemon="screening", state="stopping", pid=1, started_ts=0.0),
    ),
    "pairing": lambda: inputs(
        screening=ScreeningState(state="idle"),
        pairing=PairingStatus(
            state="code", user_code="WDJB-MJHT", expires_at=WALL + 600, verification_uri_complete=QR_URI
        ),
    ),
    "setup-code": lambda: inputs(
        screening=ScreeningState(state="idle"), setup_code=SetupCode(code="482913", expires_at=WALL + 300)
    ),
    "call": _call,
}
SIZES = [(800, 480), (1280, 720)]


def draw(
    inp: Inputs, size: tuple[int, int] = (800, 480), settings: DisplaySettings | None = None
) -> tuple[View, RenderReport, pygame.Surface, Renderer]:
    renderer = Renderer(size)
    surface = offscreen(size)
    view = compose(inp, settings or DisplaySettings(), WALL, MONO)
    remote = np.zeros((120, 160, 3), np.uint8)
    remote[...] = (0, 200, 90)
    frames = Frames(camera=camera_frame(), thermal=inp.thermal_pixels, remote=remote)
    report = renderer.render(view, frames, surface)
    return view, report, surface, renderer


def _inner(box: tuple[int, int, int, int], margin: int = 20) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return (x + margin, y + margin, w - 2 * margin, h - 2 * margin)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize("name", list(CASES))
def test_screen_per_state(name: str, language: Language, size: tuple[int, int], artifacts: Path) -> None:
    view, report, surface, renderer = draw(CASES[name](), size, DisplaySettings(language=language))
    pygame.image.save(surface, str(artifacts / f"{name}-{language}-{size[0]}x{size[1]}.png"))
    assert view.kind == name
    strings = CATALOGUE[language]

    # Every string is really on the screen, inside the screen.
    assert report.texts
    for drawn in report.texts:
        x, y, w, h = drawn.rect
        assert x >= 0 and y >= 0 and x + w <= size[0] and y + h <= size[1], drawn
        assert_text_on_screen(surface, renderer.fonts, drawn)
    # The title and the body, whole (wrapping may split them over lines).
    assert report.text_of("title") == view.title == strings[_title_key(name)]  # type: ignore[literal-required]
    assert report.text_of("body") == view.body

    # The panel is the tone's colour, and its words stay inside it.
    panel = report.regions["panel"]
    bg = TONES[view.tone]
    assert share_of(surface, _inner(panel), bg) > 0.4
    px, py, pw, ph = panel
    for drawn in report.texts:
        if drawn.role in ("title", "body", "reading", "note", "code", "expiry", "chat"):
            x, y, w, h = drawn.rect
            assert px <= x and x + w <= px + pw and py <= y and y + h <= py + ph, drawn

    # The icon (or the progress ring) is drawn: ink in its box, not colour alone.
    if "icon" in report.regions or "progress" in report.regions:
        box = report.regions.get("progress") or report.regions["icon"]
        ink = (
            ink_for(bg)
            if view.preview is not None
            else (TONES[view.tone] if view.tone != "neutral" else palette.WHITE)
        )
        assert share_of(surface, box, ink, tol=10) > 0.05

    # Result screens say plainly that this is not a medical device; others do not clutter.
    if name in ("normal", "elevated", "retry"):
        assert report.text_of("small-print") == strings["disclaimer"]
    else:
        assert report.text_of("small-print") == ""


def _title_key(name: str) -> str:
    return {
        "warming-up": "warming_up_title",
        "too-far": "too_far_title",
        "too-close": "too_close_title",
        "hold-still": "hold_still_title",
        "setup-code": "setup_title",
        "call": "call_title",
    }.get(name, f"{name}_title")


def test_reading_is_drawn_large_on_a_normal_result() -> None:
    _, report, _surface, _ = draw(CASES["normal"]())
    readings = [t for t in report.texts if t.role == "reading"]
    assert [t.text for t in readings] == ["36.7 °C"]
    title = next(t for t in report.texts if t.role == "title")
    assert readings[0].size > title.size


def test_elevated_reading_hidden_when_configured() -> None:
    _, report, _surface, _ = draw(CASES["elevated"](), settings=DisplaySettings(hide_elevated_reading=True))
    assert all("38" not in t.text for t in report.texts)
    assert report.text_of("note") == CATALOGUE["en"]["elevated_hidden"]
    assert "staff" in report.text_of("body")


def test_fahrenheit_on_screen() -> None:
    _, report, _, _ = draw(CASES["normal"](), settings=DisplaySettings(units="F"))
    assert report.text_of("reading") == "98.1 °F"


def test_camera_picture_is_mirrored_with_the_overlay_and_guide() -> None:
    _, report, surface, _ = draw(CASES["idle"]())
    x, y, w, h = report.regions["camera"]
    # camera_frame(): red on the left, blue on the right; mirrored on screen.
    assert pixel(surface, (x + w * 0.95, y + h * 0.95)) == pytest.approx((200, 30, 30), abs=2)
    assert pixel(surface, (x + w * 0.05, y + h * 0.95)) == pytest.approx((30, 30, 200), abs=2)
    # thermal_pixels(): hot at columns 1..3 (image left), so on screen right of centre after
    # mirroring; the cold side is the camera picture untouched.
    hot = pixel(surface, (x + w * (1 - 2 / 7), y + h * 3 / 7))
    assert hot != pytest.approx((30, 30, 200), abs=10)
    assert max(hot) > 120
    # The face guide: an outline in the middle, white while idle.
    gx, gy, _gw, gh = report.regions["guide"]
    left_edge = region(surface, (gx, gy + gh // 2 - 3, 6, 6)).reshape(-1, 3)
    assert any(tuple(p) == palette.WHITE for p in left_edge)


def test_measuring_progress_ring_fills_clockwise() -> None:
    _view, report, surface, _ = draw(CASES["measuring"]())
    x, y, s, _ = report.regions["progress"]
    ink = ink_for(TONES["info"])
    r = 0.42 * s  # inside the ring's stroke
    cx, cy = x + s / 2, y + s / 2

    def at(fraction: float) -> tuple[int, int, int]:
        a = math.tau * fraction
        return pixel(surface, (cx + r * math.sin(a), cy - r * math.cos(a)))

    assert at(0.1) == ink and at(0.5) == ink  # progress 0.6: done up to 216 degrees
    assert at(0.7) != ink and at(0.9) != ink
    assert at(0.7) == at(0.9)  # the track


def test_pairing_qr_code_reads_back_module_by_module() -> None:
    _, report, surface, _ = draw(CASES["pairing"]())
    assert report.text_of("code") == "WDJB-MJHT"  # letters with a dash: already grouped
    assert report.text_of("expiry") == "Valid for 10:00"
    grid = modules(QR_URI)
    x, y, w, h = report.regions["qr"]
    n = grid.shape[0]
    scale = w / n
    assert scale >= 2 and w == h and scale == int(scale)
    seen = np.array(
        [
            [pixel(surface, (x + (c + 0.5) * scale, y + (r + 0.5) * scale)) == (0, 0, 0) for c in range(n)]
            for r in range(n)
        ]
    )
    assert np.array_equal(seen, grid)


def test_setup_code_digits_are_spaced_for_reading_out() -> None:
    _, report, _, _ = draw(CASES["setup-code"]())
    assert report.text_of("code") == "4 8 2 9 1 3"
    assert report.text_of("expiry") == "Valid for 5:00"
    assert "camera" not in report.regions


def test_call_shows_the_sign_the_staff_picture_and_chat() -> None:
    _, report, surface, _ = draw(CASES["call"]())
    assert report.text_of("sign") == CATALOGUE["en"]["staff_listening"]
    assert share_of(surface, report.regions["sign"], palette.SKY_BLUE) > 0.5
    px, py, pw, ph = report.regions["pip"]
    # smoothscale rounds down a little: within 4 of the staff picture's colour.
    assert share_of(surface, (px + 4, py + 4, pw - 8, ph - 8), (0, 200, 90), tol=4) > 0.95
    assert report.text_of("chat") == "Dr Lee: Hello, please wait a moment."


def test_camera_fault_drawn_in_the_preview_without_a_guide() -> None:
    inp = inputs(screening=ScreeningState(state="idle"), camera=CameraStatus(state="fault", backend="sim"))
    _, report, surface, renderer = draw(inp)
    assert report.text_of("camera-problem") == CATALOGUE["en"]["camera_fault"]
    assert "camera" not in report.regions and "guide" not in report.regions
    drawn = next(t for t in report.texts if t.role == "camera-problem")
    assert_text_on_screen(surface, renderer.fonts, drawn)


def test_portrait_screen_lays_out_without_overflow(artifacts: Path) -> None:
    size = (480, 800)
    _, report, surface, renderer = draw(CASES["elevated"](), size, DisplaySettings(language="de"))
    pygame.image.save(surface, str(artifacts / "elevated-de-480x800.png"))
    for drawn in report.texts:
        assert_text_on_screen(surface, renderer.fonts, drawn)
    assert report.regions["camera"][1] < report.regions["panel"][1]


def test_static_layer_is_reused_when_only_frames_change() -> None:
    inp = CASES["idle"]()
    renderer = Renderer((800, 480))
    surface = offscreen((800, 480))
    frames = Frames(camera=camera_frame(), thermal=thermal_pixels())
    first = renderer.render(compose(inp, DisplaySettings(), WALL, MONO), frames, surface)
    inp.note_camera(MONO)
    second = renderer.render(compose(inp, DisplaySettings(), WALL, MONO), frames, surface)
    assert first.static_redrawn and not second.static_redrawn
    assert renderer.static_draws == 1
    assert second.text_of("title") == first.text_of("title")
