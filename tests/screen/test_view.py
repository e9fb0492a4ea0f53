"""compose(): from what the bus said to what the screen shows (the view model, no pixels)."""

from __future__ import annotations

import pytest

from appliance.bus.topics import (
    CallState,
    CameraStatus,
    ChatMessage,
    PairingStatus,
    ScreeningState,
    SetupCode,
    ThermalStatus,
    ViewerStats,
)
from appliance.screen.model import Inputs
from appliance.screen.strings import CATALOGUE
from appliance.screen.view import (
    CAMERA_FRESH_S,
    THERMAL_FRESH_S,
    DisplaySettings,
    View,
    compose,
    sound_for,
)

from .helpers import MONO, WALL, inputs

EN = CATALOGUE["en"]
DE = CATALOGUE["de"]


def view_of(
    inp: Inputs, settings: DisplaySettings | None = None, wall: float = WALL, mono: float = MONO
) -> View:
    return compose(inp, settings or DisplaySettings(), wall, mono)


@pytest.mark.parametrize(
    ("state", "kind", "tone", "icon", "title"),
    [
        ("idle", "idle", "neutral", "person", "idle_title"),
        ("approaching", "approaching", "prompt", "person", "approaching_title"),
        ("too-far", "too-far", "warn", "arrow-up", "too_far_title"),
        ("too-close", "too-close", "warn", "arrow-down", "too_close_title"),
        ("multiple", "multiple", "warn", "people", "multiple_title"),
        ("hold-still", "hold-still", "info", "hand", "hold_still_title"),
        ("measuring", "measuring", "info", "ring", "measuring_title"),
        ("warming-up", "warming-up", "neutral", "hourglass", "warming_up_title"),
        ("fault", "fault", "fault", "fault", "fault_title"),
    ],
)
def test_each_screening_state_has_its_screen(state: str, kind: str, tone: str, icon: str, title: str) -> None:
    view = view_of(inputs(screening=ScreeningState(state=state, progress=0.4)))  # type: ignore[arg-type]
    assert (view.kind, view.tone, view.icon) == (kind, tone, icon)
    assert view.title == EN[title]  # type: ignore[literal-required]
    assert view.progress == (0.4 if state == "measuring" else None)
    assert view.small_print is None


def test_normal_result_shows_the_reading_and_the_disclaimer() -> None:
    view = view_of(inputs(screening=ScreeningState(state="result", result="normal", estimate_c=36.64)))
    assert (view.kind, view.tone, view.icon) == ("normal", "good", "check")
    assert view.reading == "36.6 °C"
    assert view.small_print == EN["disclaimer"]
    assert view.preview is not None and view.preview.guide == "good"


def test_elevated_result_sends_to_staff_and_can_hide_the_reading() -> None:
    inp = inputs(screening=ScreeningState(state="result", result="elevated", estimate_c=38.62))
    shown = view_of(inp)
    assert (shown.kind, shown.tone, shown.icon) == ("elevated", "bad", "alert")
    assert shown.body == EN["elevated_body"] and "staff" in shown.body
    assert shown.reading == "38.6 °C" and shown.note is None
    hidden = view_of(inp, DisplaySettings(hide_elevated_reading=True))
    assert hidden.reading is None
    assert hidden.note == EN["elevated_hidden"]
    assert "38.6" not in repr(hidden)
    assert hidden.small_print == EN["disclaimer"]


def test_fahrenheit_and_german() -> None:
    inp = inputs(screening=ScreeningState(state="result", result="normal", estimate_c=37.0))
    view = view_of(inp, DisplaySettings(language="de", units="F"))
    assert view.reading == "98.6 °F"
    assert view.title == DE["normal_title"] and view.small_print == DE["disclaimer"]


def test_retry_result_and_a_result_without_an_estimate() -> None:
    view = view_of(inputs(screening=ScreeningState(state="result", result="retry")))
    assert (view.kind, view.icon, view.reading) == ("retry", "retry", None)
    assert view.small_print == EN["disclaimer"]
    elevated = view_of(inputs(screening=ScreeningState(state="result", result="elevated", estimate_c=None)))
    assert elevated.kind == "elevated" and elevated.reading is None


def test_thermal_status_wins_over_a_stale_screening_state() -> None:
    idle = ScreeningState(state="idle")
    assert view_of(inputs(screening=idle, thermal=ThermalStatus(state="fault", reason="i2c"))).kind == "fault"
    assert view_of(inputs(screening=idle, thermal=ThermalStatus(state="warming-up"))).kind == "warming-up"
    # Nothing heard from the screening daemon yet: not ready, rather than a blank.
    assert view_of(inputs()).kind == "warming-up"


def test_setup_code_then_pairing_code_win_and_expire() -> None:
    pairing = PairingStatus(
        state="code",
        user_code="WDJB-MJHT",
        expires_at=WALL + 125,
        verification_uri_complete="https://r.example/a?c=1",
    )
    setup = SetupCode(code="482913", expires_at=WALL + 61)
    inp = inputs(screening=ScreeningState(state="hold-still"), pairing=pairing, setup_code=setup)
    view = view_of(inp)
    assert (view.kind, view.code, view.code_expiry) == ("setup-code", "482913", "Valid for 1:01")
    assert view.preview is None
    inp.setup_code = SetupCode(code=None)
    view = view_of(inp)
    assert (view.kind, view.code, view.qr) == ("pairing", "WDJB-MJHT", "https://r.example/a?c=1")
    assert view.code_expiry == "Valid for 2:05"
    assert view_of(inp, DisplaySettings(language="de")).code_expiry == "Gültig noch 2:05"
    # Past its expiry the code is not shown: back to screening.
    assert view_of(inp, wall=WALL + 126).kind == "hold-still"


def test_status_bar_says_not_paired_and_when_staff_watch() -> None:
    inp = inputs(screening=ScreeningState(state="idle"), pairing=PairingStatus(state="unpaired"))
    assert view_of(inp).status == (EN["not_paired"],)
    inp.pairing = PairingStatus(state="paired", room_name="Front door")
    inp.call = CallState(viewers=[ViewerStats(viewer_id="v1")], room_connected=True)
    view = view_of(inp)
    assert view.status == (EN["staff_watching"],) and view.sign is None and view.kind == "idle"


def test_talking_staff_get_the_call_screen_sign_and_chat() -> None:
    inp = inputs(
        screening=ScreeningState(state="idle"),
        call=CallState(viewers=[ViewerStats(viewer_id="v1")], room_connected=True, talking=True),
    )
    inp.chat.append(ChatMessage(sender="Ana", text="old", wall_ts=WALL - 600))
    inp.chat.append(ChatMessage(sender="Ana", text="Please   wait\nhere", wall_ts=WALL - 5))
    inp.note_remote(MONO)
    view = view_of(inp)
    assert (view.kind, view.sign) == ("call", EN["staff_listening"])
    assert [(c.sender, c.text) for c in view.chat] == [("Ana", "Please wait here")]
    assert view.preview is not None and view.preview.pip_seq == inp.remote_seq
    # A person steps up during the call: screening prompts, the sign and the chat stay.
    inp.screening = ScreeningState(state="too-close")
    view = view_of(inp)
    assert view.kind == "too-close" and view.sign is not None and len(view.chat) == 1
    # The call ends: no sign, no chat, no staff picture.
    inp.call = CallState(viewers=[], room_connected=True)
    view = view_of(inp)
    assert view.sign is None and view.chat == () and view.preview is not None and view.preview.pip_seq == 0


def test_stale_frames_drop_out_of_the_view() -> None:
    inp = inputs(screening=ScreeningState(state="idle"))
    fresh = view_of(inp)
    assert fresh.preview is not None
    assert fresh.preview.camera_seq == inp.camera_seq > 0
    assert fresh.preview.thermal_seq == inp.thermal_seq > 0
    later = view_of(inp, mono=MONO + max(CAMERA_FRESH_S, THERMAL_FRESH_S) + 0.1)
    assert later.preview is not None
    assert (later.preview.camera_seq, later.preview.thermal_seq) == (0, 0)


def test_camera_fault_is_said_in_the_preview() -> None:
    inp = inputs(screening=ScreeningState(state="idle"), camera=CameraStatus(state="fault", backend="sim"))
    view = view_of(inp)
    assert view.preview is not None
    assert view.preview.camera_problem == EN["camera_fault"] and view.preview.camera_seq == 0
    # The thermal overlay still shows: it is the sensor's picture, not the camera's.
    assert view.preview.thermal_seq > 0


def test_views_compare_by_value_and_frames_only_change_the_live_part() -> None:
    inp = inputs(screening=ScreeningState(state="idle"))
    a = view_of(inp)
    assert view_of(inp) == a
    inp.note_camera(MONO)
    b = view_of(inp)
    assert b != a and b.without_frames() == a.without_frames()


def test_sound_cues_on_entering_a_result_or_fault_only() -> None:
    assert sound_for("measuring", "normal") == "normal"
    assert sound_for("measuring", "elevated") == "elevated"
    assert sound_for("hold-still", "retry") == "retry"
    assert sound_for("idle", "fault") == "fault"
    assert sound_for("normal", "normal") is None
    assert sound_for(None, "idle") is None
    assert sound_for("normal", "idle") is None
