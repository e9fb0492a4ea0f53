"""The screen shows only what a live screening daemon backs (the view model and a fake clock).

The broker keeps the last screening.state for ever: a crashed or hung screening daemon would
leave its last verdict ("normal, you may go in") on the screen. health.screening's heartbeat,
and the screen's own bus link decide whether the state is shown; how long a live daemon's
result stays up is the screening machine's decision.
"""

from __future__ import annotations

import pytest

from appliance.bus.topics import Health, ScreeningState, SetupCode, ThermalStatus
from appliance.runtime import HEALTH_HEARTBEAT_S
from appliance.screen.daemon import TICK_S
from appliance.screen.model import TOPICS, Inputs
from appliance.screen.strings import CATALOGUE
from appliance.screen.view import (
    BUS_GRACE_S,
    HEALTH_STALE_S,
    DisplaySettings,
    View,
    compose,
    sound_for,
)

from .helpers import MONO, WALL

EN = CATALOGUE["en"]
NORMAL = ScreeningState(state="result", result="normal", estimate_c=36.6)


def health(state: str = "ready") -> Health:
    return Health(daemon="screening", state=state, pid=4242, started_ts=1.0)  # type: ignore[arg-type]


def view_at(inp: Inputs, mono: float, language: str = "en") -> View:
    return compose(inp, DisplaySettings(language=language), WALL, mono)  # type: ignore[arg-type]


def live_inputs(at: float = MONO) -> Inputs:
    """The screen connected at `at`, heard the screening daemon's health and thermal ok."""
    inp = Inputs()
    inp.note_bus(True, at)
    inp.apply("thermal.status", ThermalStatus(state="ok"), at)
    inp.apply("health.screening", health(), at, sent=at)
    return inp


def test_the_screen_follows_the_screening_daemons_health() -> None:
    assert "health.screening" in TOPICS
    # A few heartbeats, not one: a heartbeat late by a busy loop must not blank the screen.
    assert 2 * HEALTH_HEARTBEAT_S <= HEALTH_STALE_S <= 4 * HEALTH_HEARTBEAT_S


def test_a_result_without_a_heartbeat_turns_unavailable_then_fresh_news_bring_it_back() -> None:
    inp = live_inputs()
    inp.apply("screening.state", ScreeningState(state="idle"), MONO, sent=MONO)
    assert view_at(inp, MONO + 1).kind == "idle"
    # The next heartbeat, and a result with it.
    last = MONO + HEALTH_HEARTBEAT_S
    inp.apply("health.screening", health(), last, sent=last)
    inp.apply("screening.state", NORMAL, last, sent=last)
    assert view_at(inp, last + 1).kind == "normal"
    # Then the screening daemon dies: nothing more on the bus, the retained result stays.
    assert view_at(inp, last + HEALTH_STALE_S - 0.1).kind == "normal"
    gone = view_at(inp, last + HEALTH_STALE_S + 0.1)
    assert (gone.kind, gone.title, gone.body) == (
        "unavailable",
        EN["unavailable_title"],
        EN["unavailable_body"],
    )
    assert gone.reading is None and gone.small_print is None
    assert gone.preview is None, "no live picture that suggests a screening is going on"
    assert sound_for("normal", "unavailable") is None
    # It comes back (systemd restarted it): a fresh heartbeat and a fresh state.
    back = last + HEALTH_STALE_S + 5
    inp.apply("health.screening", health("starting"), back, sent=back)
    inp.apply("screening.state", ScreeningState(state="idle"), back, sent=back)
    assert view_at(inp, back + 0.1).kind == "idle"


@pytest.mark.parametrize(
    "state", ["idle", "too-far", "hold-still", "measuring", "result", "warming-up", "fault"]
)
def test_a_stopping_screening_daemon_shows_unavailable_whatever_its_last_state(state: str) -> None:
    inp = live_inputs()
    msg = ScreeningState(state=state, progress=0.5, result="normal" if state == "result" else None)  # type: ignore[arg-type]
    inp.apply("screening.state", msg, MONO, sent=MONO)
    assert view_at(inp, MONO + 0.5).kind != "unavailable"
    inp.apply("health.screening", health("stopping"), MONO + 1, sent=MONO + 1)
    assert view_at(inp, MONO + 1.1).kind == "unavailable"


def test_a_result_retained_from_long_ago_is_not_shown_at_start_up_without_a_live_daemon() -> None:
    # The screen starts now; the broker hands it the screening daemon's retained state and
    # health, both published ten minutes ago (the envelope's monotonic time): the daemon died.
    now = MONO + 3600
    inp = Inputs()
    inp.note_bus(True, now)
    inp.apply("thermal.status", ThermalStatus(state="ok"), now)
    inp.apply("health.screening", health(), now, sent=now - 600)
    inp.apply("screening.state", NORMAL, now, sent=now - 600)
    view = view_at(inp, now + 0.1)
    assert view.kind == "unavailable" and view.reading is None
    # A live daemon's heartbeat arrives: what it holds is shown, however old (the machine holds
    # a result while the answered person stays).
    inp.apply("health.screening", health(), now + 1, sent=now + 1)
    assert view_at(inp, now + 1.1).kind == "normal"


def test_a_result_held_by_a_live_daemon_stays_up_while_heartbeats_come() -> None:
    inp = live_inputs()
    inp.apply("screening.state", NORMAL, MONO, sent=MONO)
    t = MONO
    while t < MONO + 10 * HEALTH_STALE_S:
        assert view_at(inp, t + 0.05).kind == "normal", "a person who lingers is not told 'unavailable'"
        t += HEALTH_HEARTBEAT_S
        inp.apply("health.screening", health(), t, sent=t)


def test_a_timestamp_from_the_future_counts_from_its_arrival() -> None:
    inp = live_inputs()
    inp.apply("health.screening", health(), MONO, sent=MONO + 10_000)
    assert inp.screening_health_at == MONO
    inp.apply("screening.state", NORMAL, MONO, sent=MONO + 10_000)
    assert inp.screening_at == MONO
    assert view_at(inp, MONO + HEALTH_STALE_S - 0.1).kind == "normal"
    assert view_at(inp, MONO + HEALTH_STALE_S + 0.1).kind == "unavailable"


def test_losing_the_bus_shows_unavailable_past_the_grace_period_until_it_is_back() -> None:
    inp = live_inputs()
    inp.apply("screening.state", ScreeningState(state="measuring", progress=0.4), MONO, sent=MONO)
    assert view_at(inp, MONO + 0.1).kind == "measuring"
    down = MONO + 0.2
    assert inp.note_bus(False, down) is True
    assert inp.bus_down_since == down
    assert inp.note_bus(False, down + 0.2) is False, "no change, no redraw"
    assert inp.bus_down_since == down, "still down: the grace period counts from the drop"
    # The clock alone, nothing new in the inputs: the grace period ends.
    assert view_at(inp, down + BUS_GRACE_S - 0.1).kind == "measuring"
    assert view_at(inp, down + BUS_GRACE_S + 0.1).kind == "unavailable"
    back = down + BUS_GRACE_S + 1
    inp.note_bus(True, back)
    assert inp.bus_down_since is None
    inp.apply("health.screening", health(), back, sent=back)
    assert view_at(inp, back + 0.1).kind == "measuring"


def test_a_bus_link_back_within_the_grace_period_never_shows_unavailable() -> None:
    # A broker restart: the client reconnects within a second or two.
    inp = live_inputs()
    inp.apply("screening.state", NORMAL, MONO, sent=MONO)
    inp.note_bus(False, MONO + 1)
    assert view_at(inp, MONO + 1 + BUS_GRACE_S - 0.1).kind == "normal"
    inp.note_bus(True, MONO + 1 + BUS_GRACE_S - 0.05)
    # Long past the first drop: the link came back, so that drop counts no more.
    assert view_at(inp, MONO + 1 + 3 * BUS_GRACE_S).kind == "normal"
    # A second drop starts a grace period of its own.
    again = MONO + 1 + 3 * BUS_GRACE_S
    inp.note_bus(False, again)
    assert view_at(inp, again + BUS_GRACE_S - 0.1).kind == "normal"
    assert view_at(inp, again + BUS_GRACE_S + 0.1).kind == "unavailable"


def test_a_screen_that_gave_up_on_the_screening_daemon_does_not_take_a_drop_for_news() -> None:
    inp = Inputs()
    inp.note_bus(True, MONO)
    assert view_at(inp, MONO + HEALTH_STALE_S + 0.1).kind == "unavailable"
    # The link drops: within the grace period the screen still judges from when it came up.
    inp.note_bus(False, MONO + HEALTH_STALE_S + 1)
    assert view_at(inp, MONO + HEALTH_STALE_S + 1.1).kind == "unavailable"


def test_the_grace_period_does_not_outlast_the_screening_daemons_heartbeat() -> None:
    # The link being down is one reason; a stale heartbeat or "stopping" still count at once.
    inp = live_inputs()
    inp.apply("screening.state", NORMAL, MONO, sent=MONO)
    inp.note_bus(False, MONO + HEALTH_STALE_S - 0.5)
    assert view_at(inp, MONO + HEALTH_STALE_S + 0.1).kind == "unavailable"
    inp = live_inputs()
    inp.apply("health.screening", health("stopping"), MONO, sent=MONO)
    inp.note_bus(False, MONO + 0.1)
    assert view_at(inp, MONO + 0.2).kind == "unavailable"


def test_the_grace_period_is_short_and_the_daemon_ticks_within_it() -> None:
    # Long enough for a reconnect after a broker restart (the client's first retry comes after
    # tens of milliseconds), short enough that a link really lost soon takes the verdict off.
    assert 1.0 <= BUS_GRACE_S <= 5.0
    # Nothing arrives while the link is down: the tick alone must notice the grace period end.
    assert TICK_S < BUS_GRACE_S


def test_no_screening_daemon_heard_at_all_turns_unavailable_after_a_few_heartbeats() -> None:
    inp = Inputs()
    inp.note_bus(True, MONO)
    assert view_at(inp, MONO + 1).kind == "warming-up"
    assert view_at(inp, MONO + HEALTH_STALE_S + 0.1).kind == "unavailable"
    # A reconnect starts the wait again: the retained health comes right after it.
    inp.note_bus(False, MONO + HEALTH_STALE_S + 1)
    inp.note_bus(True, MONO + HEALTH_STALE_S + 2)
    assert view_at(inp, MONO + HEALTH_STALE_S + 3).kind == "warming-up"


def test_codes_for_the_technician_still_win_and_every_language_says_unavailable() -> None:
    inp = live_inputs()
    inp.apply("health.screening", health("stopping"), MONO, sent=MONO)
    inp.apply("setup.code", SetupCode(code="482913", expires_at=WALL + 60), MONO)
    assert view_at(inp, MONO + 0.1).kind == "setup-code"
    inp.apply("setup.code", SetupCode(code=None), MONO)
    for lang, strings in CATALOGUE.items():
        view = view_at(inp, MONO + 0.1, lang)
        assert (view.kind, view.title, view.body) == (
            "unavailable",
            strings["unavailable_title"],
            strings["unavailable_body"],
        )


def test_health_of_other_daemons_is_not_the_screening_daemons() -> None:
    inp = live_inputs()
    inp.apply("screening.state", ScreeningState(state="idle"), MONO, sent=MONO)
    other = Health(daemon="camera", state="stopping", pid=1, started_ts=1.0)
    assert inp.apply("health.camera", other, MONO + 1, sent=MONO + 1) is False
    assert view_at(inp, MONO + 1.1).kind == "idle"


def test_a_repeated_state_with_a_newer_time_refreshes_its_age() -> None:
    inp = live_inputs()
    assert inp.apply("screening.state", NORMAL, MONO, sent=MONO) is True
    assert inp.apply("screening.state", NORMAL, MONO + 1, sent=MONO) is False
    assert inp.apply("screening.state", NORMAL, MONO + 50, sent=MONO + 50) is True
    assert inp.screening_at == MONO + 50
