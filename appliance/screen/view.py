"""The view model: what the status screen shows, as a value, and `compose` (pure).

    compose(inputs, settings, wall_now, mono_now) -> View

A View is frozen and comparable: the daemon redraws only when the new View differs from the
last one drawn (a state change, a new frame seq, a countdown that ticked), and the renderer
draws exactly what it says. Tests build Views directly and look at the pixels.

Which screen wins when several apply, highest first:

1. setup code: the technician asked for it on the setup page and is reading it off the screen
   (standing in front of the kiosk, which would otherwise show "step up to the mark");
2. pairing code: likewise, read or scanned by whoever pairs the kiosk;
3. screening unavailable: no live screening daemon backs the screening state (see below);
4. fault: the sensor or the screening daemon is out of order;
5. warming up: the sensor (or the screening daemon) is not ready yet, or not heard from;
6. the screening state: idle, the positioning prompts, measuring, the result;
   while idle with staff talking, the call screen.

The broker keeps the last screening.state for ever. A screening daemon that crashed (past
systemd's start limit), hangs or lost the bus says nothing more, and its last verdict ("normal,
you may go in") would stay up for whoever walks past. So the screening state is shown only
while the screening daemon is heard from (`screening_live`): its health.screening heartbeat
(every HEALTH_HEARTBEAT_S) is younger than HEALTH_STALE_S and does not say "stopping", and
the screen's own bus link is up (or went down less than BUS_GRACE_S ago: a broker restart is a
gap of a second or two, not a reason to flash "unavailable"). Otherwise the screen says
"screening unavailable, please wait for staff" until fresh news arrive. How long a live
daemon's result stays up is the screening machine's decision alone (held while the answered
person stays, ended when they leave, are replaced or become background): a second limit here
would show "unavailable" to someone who merely lingers.

Whatever the screen, the top bar says when staff are listening or watching, and an active
call adds the staff video (picture in picture) and the chat lines.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from appliance.config import AppConfig
from appliance.runtime import HEALTH_HEARTBEAT_S
from appliance.screen.model import Inputs
from appliance.screen.palette import Tone
from appliance.screen.strings import Key, Language, text
from appliance.screening.settings import Unit
from appliance.screening.units import format_temperature

ScreenKind = Literal[
    "warming-up",
    "idle",
    "approaching",
    "too-far",
    "too-close",
    "multiple",
    "hold-still",
    "measuring",
    "normal",
    "elevated",
    "retry",
    "fault",
    "unavailable",
    "pairing",
    "setup-code",
    "call",
]
Icon = Literal[
    "hourglass",
    "person",
    "arrow-up",
    "arrow-down",
    "people",
    "hand",
    "ring",
    "check",
    "alert",
    "retry",
    "fault",
    "link",
    "key",
    "speaker",
]
SoundCue = Literal["normal", "elevated", "retry", "fault"]

# A frame older than this is not shown: the producer has stopped (thermal idles at 1 fps).
THERMAL_FRESH_S = 3.0
CAMERA_FRESH_S = 2.0
REMOTE_FRESH_S = 2.0
CHAT_SHOW_S = 120.0
CHAT_LINES = 3
CHAT_SENDER_CHARS = 24
CHAT_TEXT_CHARS = 160
# An estimate outside the sensor's range (the bus's Celsius bounds), or NaN or infinity, which
# ScreeningState.estimate_c (a plain float) lets through, is no reading: it shows as missing.
READING_MIN_C = -40.0
READING_MAX_C = 150.0
# The screening daemon is taken for gone when its last health.screening is older than this:
# a few heartbeats, so one heartbeat late behind a busy event loop does not blank the screen.
HEALTH_STALE_S = 2.5 * HEALTH_HEARTBEAT_S
# The screen's own bus link counts as lost only this long after it went down. A broker restart
# (systemd restarts it; its socket is socket-activated, so connecting waits for it, never fails)
# drops every link, and the client is back within a second or two (its first retry comes after
# tens of milliseconds): without this, every kiosk would flash "unavailable" and replay its
# result's cue. Short, so a link really lost still takes the verdict off the screen soon; the
# daemon's tick (TICK_S, well under this) recomposes the view when it ends, with nothing arriving.
BUS_GRACE_S = 3.0


@dataclass(frozen=True, slots=True)
class DisplaySettings:
    """The config the view depends on; the daemon reloads it live when the file changes."""

    language: Language = "en"
    units: Unit = "C"
    hide_elevated_reading: bool = False

    @classmethod
    def from_config(cls, config: AppConfig) -> DisplaySettings:
        return cls(
            language=config.screen.language,
            units=config.screening.units,
            hide_elevated_reading=config.screen.hide_elevated_reading,
        )


@dataclass(frozen=True, slots=True)
class ChatLine:
    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class PreviewView:
    """The live picture. A seq of 0 means "nothing to draw" for that layer."""

    camera_seq: int = 0
    thermal_seq: int = 0
    pip_seq: int = 0
    guide: Tone | None = None
    camera_problem: str | None = None


@dataclass(frozen=True, slots=True)
class View:
    kind: ScreenKind
    tone: Tone
    icon: Icon
    title: str
    body: str
    reading: str | None = None
    note: str | None = None
    progress: float | None = None
    code: str | None = None
    code_expiry: str | None = None
    qr: str | None = None
    small_print: str | None = None
    status: tuple[str, ...] = ()
    sign: str | None = None
    chat: tuple[ChatLine, ...] = ()
    preview: PreviewView | None = None

    def without_frames(self) -> View:
        """The same view with frame seqs zeroed: the key of everything but the live picture."""
        if self.preview is None:
            return self
        preview = dataclasses.replace(self.preview, camera_seq=0, thermal_seq=0, pip_seq=0)
        return dataclasses.replace(self, preview=preview)


def sound_for(previous: ScreenKind | None, current: ScreenKind) -> SoundCue | None:
    """The cue to play on entering a screen (once per entry, not per redraw)."""
    if current == previous:
        return None
    if current in ("normal", "elevated", "retry", "fault"):
        return current
    return None


def _reading(estimate_c: float | None) -> float | None:
    """The estimate to show, or None: "nan °C" or a 300-digit number must never reach a person."""
    if estimate_c is None or not READING_MIN_C <= estimate_c <= READING_MAX_C:
        return None  # NaN fails the comparison too
    return estimate_c


def _remaining(expires_at: float | None, wall_now: float, language: Language) -> str | None:
    # An infinite expiry is "no expiry" (int() of it would raise and stop the drawing).
    if expires_at is None or not math.isfinite(expires_at):
        return None
    left = int(expires_at - wall_now)
    if left <= 0:
        return text(language, "expired")
    minutes, seconds = divmod(left, 60)
    return text(language, "expires_in", time=f"{minutes}:{seconds:02d}")


def _fresh(at: float | None, mono_now: float, limit: float) -> bool:
    return at is not None and 0.0 <= mono_now - at <= limit


def screening_live(inp: Inputs, mono_now: float) -> bool:
    """Whether a live screening daemon backs inp.screening (see the module docstring)."""
    if not inp.bus_up and (inp.bus_down_since is None or mono_now - inp.bus_down_since > BUS_GRACE_S):
        return False  # nothing the screen holds is current any more
    health = inp.screening_health
    if health is None:
        # Never heard from. A live daemon's retained health arrives as soon as the screen
        # subscribes; past a few heartbeats of listening, there is no screening daemon.
        return inp.bus_since is None or mono_now - inp.bus_since <= HEALTH_STALE_S
    if health.state == "stopping":
        return False
    return _fresh(inp.screening_health_at, mono_now, HEALTH_STALE_S)


# The screening states that are prompts, with their tone, icon and strings.
_PROMPTS: dict[str, tuple[ScreenKind, Tone, Icon, Key, Key]] = {
    "idle": ("idle", "neutral", "person", "idle_title", "idle_body"),
    "approaching": ("approaching", "prompt", "person", "approaching_title", "approaching_body"),
    "too-far": ("too-far", "warn", "arrow-up", "too_far_title", "too_far_body"),
    "too-close": ("too-close", "warn", "arrow-down", "too_close_title", "too_close_body"),
    "multiple": ("multiple", "warn", "people", "multiple_title", "multiple_body"),
    "hold-still": ("hold-still", "info", "hand", "hold_still_title", "hold_still_body"),
    "measuring": ("measuring", "info", "ring", "measuring_title", "measuring_body"),
}
_GUIDE: dict[ScreenKind, Tone] = {
    "idle": "neutral",
    "approaching": "prompt",
    "too-far": "warn",
    "too-close": "warn",
    "multiple": "warn",
    "hold-still": "info",
    "measuring": "info",
    "normal": "good",
    "elevated": "bad",
    "retry": "retry",
}


def _preview(
    inp: Inputs, kind: ScreenKind, mono_now: float, language: Language, call_active: bool
) -> PreviewView:
    problem = None
    if inp.camera is not None and inp.camera.state in ("fault", "absent"):
        problem = text(language, "camera_fault")
    camera_ok = problem is None and _fresh(inp.camera_at, mono_now, CAMERA_FRESH_S)
    if problem is None and not camera_ok and inp.camera_at is not None:
        # Frames came and stopped without a word on camera.status (the camera daemon killed or
        # hung: its last status, "ok", stays retained). Say so: a blank box explains nothing.
        problem = text(language, "camera_fault")
    thermal_ok = (
        inp.thermal_pixels is not None
        and (inp.thermal is None or inp.thermal.state != "fault")
        and _fresh(inp.thermal_at, mono_now, THERMAL_FRESH_S)
    )
    pip_ok = call_active and _fresh(inp.remote_at, mono_now, REMOTE_FRESH_S)
    return PreviewView(
        camera_seq=inp.camera_seq if camera_ok else 0,
        thermal_seq=inp.thermal_seq if thermal_ok else 0,
        pip_seq=inp.remote_seq if pip_ok else 0,
        guide=_GUIDE.get(kind),
        camera_problem=problem,
    )


def _chat(inp: Inputs, wall_now: float) -> tuple[ChatLine, ...]:
    recent = [m for m in inp.chat if 0.0 <= wall_now - m.wall_ts <= CHAT_SHOW_S]
    return tuple(
        ChatLine(m.sender[:CHAT_SENDER_CHARS], " ".join(m.text.split())[:CHAT_TEXT_CHARS])
        for m in recent[-CHAT_LINES:]
    )


def compose(inp: Inputs, settings: DisplaySettings, wall_now: float, mono_now: float) -> View:
    lang = settings.language
    status: list[str] = []
    pairing = inp.pairing
    if pairing is not None and pairing.state in ("unpaired", "error"):
        status.append(text(lang, "not_paired"))
    call = inp.call
    talking = call is not None and call.talking
    watching = call is not None and bool(call.viewers)
    if watching and not talking:
        status.append(text(lang, "staff_watching"))
    call_active = talking or watching
    view = _main_view(inp, settings, wall_now, mono_now, talking)
    # No live picture without screening: a camera picture with its guide frame would suggest
    # that a measurement is going on.
    if view.kind not in ("setup-code", "pairing", "fault", "unavailable"):
        view = dataclasses.replace(view, preview=_preview(inp, view.kind, mono_now, lang, call_active))
    return dataclasses.replace(
        view,
        status=tuple(status),
        sign=text(lang, "staff_listening") if talking else None,
        chat=_chat(inp, wall_now) if call_active else (),
    )


def _main_view(
    inp: Inputs, settings: DisplaySettings, wall_now: float, mono_now: float, talking: bool
) -> View:
    lang = settings.language

    def t(key: Key) -> str:
        return text(lang, key)

    setup = inp.setup_code
    if setup is not None and setup.code and (setup.expires_at is None or setup.expires_at > wall_now):
        return View(
            kind="setup-code",
            tone="info",
            icon="key",
            title=t("setup_title"),
            body=t("setup_body"),
            code=setup.code,
            code_expiry=_remaining(setup.expires_at, wall_now, lang),
        )
    pairing = inp.pairing
    if (
        pairing is not None
        and pairing.state == "code"
        and pairing.user_code
        and (pairing.expires_at is None or pairing.expires_at > wall_now)
    ):
        return View(
            kind="pairing",
            tone="info",
            icon="link",
            title=t("pairing_title"),
            body=t("pairing_body"),
            code=pairing.user_code,
            code_expiry=_remaining(pairing.expires_at, wall_now, lang),
            qr=pairing.verification_uri_complete,
        )

    if not screening_live(inp, mono_now):
        return View(
            kind="unavailable",
            tone="fault",
            icon="fault",
            title=t("unavailable_title"),
            body=t("unavailable_body"),
        )

    state = inp.screening
    thermal = inp.thermal
    if (thermal is not None and thermal.state == "fault") or (state is not None and state.state == "fault"):
        return View(kind="fault", tone="fault", icon="fault", title=t("fault_title"), body=t("fault_body"))
    warming = thermal is not None and thermal.state == "warming-up"
    if state is None or state.state == "warming-up" or warming:
        return View(
            kind="warming-up",
            tone="neutral",
            icon="hourglass",
            title=t("warming_up_title"),
            body=t("warming_up_body"),
        )

    if state.state == "result":
        result = state.result or "retry"
        estimate = _reading(state.estimate_c)
        if result == "normal":
            return View(
                kind="normal",
                tone="good",
                icon="check",
                title=t("normal_title"),
                body=t("normal_body"),
                reading=format_temperature(estimate, settings.units),
                small_print=t("disclaimer"),
            )
        if result == "elevated":
            hidden = settings.hide_elevated_reading or estimate is None
            return View(
                kind="elevated",
                tone="bad",
                icon="alert",
                title=t("elevated_title"),
                body=t("elevated_body"),
                reading=None if hidden else format_temperature(estimate, settings.units),
                note=t("elevated_hidden") if settings.hide_elevated_reading else None,
                small_print=t("disclaimer"),
            )
        return View(
            kind="retry",
            tone="retry",
            icon="retry",
            title=t("retry_title"),
            body=t("retry_body"),
            small_print=t("disclaimer"),
        )

    if state.state == "idle" and talking:
        return View(kind="call", tone="info", icon="speaker", title=t("call_title"), body=t("call_body"))

    kind, tone, icon, title, body = _PROMPTS[state.state]
    return View(
        kind=kind,
        tone=tone,
        icon=icon,
        title=t(title),
        body=t(body),
        progress=round(state.progress, 2) if kind == "measuring" else None,
    )
