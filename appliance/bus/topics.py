"""Every bus topic and method, each with its one declared message type.

This module is the contract between the daemons: a message that does not match the type
declared here is refused by the broker and by the receiving client. Add a topic here, nowhere
else.

Delivery policies:
    TELEMETRY  latest-wins: a slow consumer loses old messages (counted), never blocks others
    STATE      latest-wins and retained: a late subscriber gets the last value at once
    EVENT      never dropped: a consumer that falls behind past its bound is disconnected and
               resumes by seq (screening.events_since), so results and alerts are not lost
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec


class Delivery(enum.Enum):
    TELEMETRY = "telemetry"
    STATE = "state"
    EVENT = "event"


# The members as module constants, for the broker's and clients' per-message paths: reading an
# attribute of an Enum class costs about 0.1 us, a module global a fraction of that.
TELEMETRY, STATE, EVENT = Delivery.TELEMETRY, Delivery.STATE, Delivery.EVENT


class Message(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every bus message type."""


Celsius = Annotated[float, msgspec.Meta(ge=-40.0, le=150.0)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]


# --- daemon health -------------------------------------------------------------------------


class Health(Message):
    """health.<daemon>: published by the daemon runtime on every state change, and again every
    HEALTH_HEARTBEAT_S (appliance.runtime) so a soak can follow the counts without asking.
    tasks: asyncio tasks alive in the daemon's loop (a task leak grows it)."""

    daemon: Name
    state: Literal["starting", "ready", "degraded", "stopping"]
    pid: int
    started_ts: float
    status: Text = ""
    tasks: Annotated[int, msgspec.Meta(ge=0)] = 0


# --- thermal --------------------------------------------------------------------------------


class ThermalFrame(Message):
    """thermal.frame: one AMG8833 frame. pixels: 64 values in °C, row-major, row 0 = top."""

    pixels: Annotated[list[Celsius], msgspec.Meta(min_length=64, max_length=64)]
    thermistor: Celsius
    rate_hz: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)]
    frame_seq: int


class ThermalInterrupt(Message):
    """thermal.interrupt: the sensor's threshold interrupt fired; mask bit i = ThermalFrame.pixels[i]
    (image order, row-major, row 0 = top)."""

    # No upper bound here: msgspec cannot check bounds beyond int64 (a decoder with lt=2**64 cannot
    # even be built), and msgpack itself carries at most a uint64, so 64 bits is the limit anyway.
    mask: Annotated[int, msgspec.Meta(ge=0)]
    mode: Literal["absolute", "difference"]
    upper_c: float
    lower_c: float


class ThermalStatus(Message):
    state: Literal["ok", "warming-up", "fault"]
    reason: Text = ""
    rate_hz: float = 0.0
    address: int = 0x69


# --- screening ------------------------------------------------------------------------------

ScreeningStateName = Literal[
    "idle",
    "approaching",
    "too-far",
    "too-close",
    "multiple",
    "hold-still",
    "measuring",
    "result",
    "fault",
    "warming-up",
]
ResultName = Literal["normal", "elevated", "retry"]


class ScreeningState(Message):
    state: ScreeningStateName
    progress: Unit = 0.0
    result: ResultName | None = None
    estimate_c: float | None = None
    distance_m: float | None = None
    reason: Text = ""


class ScreeningResult(Message):
    """screening.result: seq is the durable sequence number from events.db."""

    seq: Annotated[int, msgspec.Meta(ge=1)]
    wall_ts: float
    start: float
    end: float
    result: ResultName
    estimate_c: float | None
    confidence: Unit
    distance_m: float | None = None
    ambient_c: float | None = None


class FeverAlert(Message):
    """alert.fever: an elevated result, with the same durable seq as its screening.result."""

    seq: Annotated[int, msgspec.Meta(ge=1)]
    wall_ts: float
    estimate_c: float
    confidence: Unit
    threshold_c: float


class AlertAck(Message):
    """alert.ack: a remote viewer acknowledged the fever alert with this seq (first one only)."""

    seq: Annotated[int, msgspec.Meta(ge=1)]
    by: Annotated[str, msgspec.Meta(max_length=64)]
    wall_ts: float


# --- camera and call ------------------------------------------------------------------------


class H264AccessUnit(Message):
    """camera.h264: the access unit itself rides as the frame's binary attachment."""

    pts: int
    keyframe: bool
    width: int
    height: int
    capture_ts: float
    time_base_den: Annotated[int, msgspec.Meta(gt=0)] = 90000


class FrameRingNotice(Message):
    """camera.preview / call.remote_video: a new frame sits in the named shared-memory ring."""

    ring: Annotated[str, msgspec.Meta(max_length=64)]
    frame_seq: int
    width: int
    height: int
    capture_ts: float
    # Changes when the writer restarts and recreates the ring (its seqs start again at 1), so a
    # reader knows to call FrameRingReader.refresh() instead of guessing from a seq going back.
    generation: int = 0


class CameraStatus(Message):
    state: Literal["ok", "starting", "fault", "absent"]
    backend: str
    reason: Text = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0


class ViewerStats(Message):
    viewer_id: str
    rtt_ms: float | None = None
    jitter_ms: float | None = None
    loss: float | None = None
    bitrate_kbps: float | None = None


class CallState(Message):
    viewers: list[ViewerStats]
    room_connected: bool
    talking: bool = False


class ChatMessage(Message):
    sender: Annotated[str, msgspec.Meta(max_length=64)]
    text: Annotated[str, msgspec.Meta(max_length=1000)]
    wall_ts: float


# --- pairing --------------------------------------------------------------------------------


class PairingStatus(Message):
    state: Literal["unpaired", "code", "paired", "error"]
    user_code: str | None = None
    expires_at: float | None = None
    verification_uri_complete: str | None = None
    room_name: str | None = None
    reason: Text = ""


class SetupCode(Message):
    """setup.code: the technician's one-time setup code, shown on the status screen."""

    code: str | None
    expires_at: float | None = None


# --- methods' parameter and result types ------------------------------------------------------


class Empty(Message):
    pass


class Ok(Message):
    ok: bool = True
    detail: Text = ""


class EventsSince(Message):
    seq: Annotated[int, msgspec.Meta(ge=0)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 1000


class EventRecord(Message):
    seq: int
    topic: Literal["screening.result", "alert.fever"]
    result: ScreeningResult


class EventsPage(Message):
    events: list[EventRecord]
    last_seq: int


class CalibrateParams(Message):
    reference_c: Annotated[float, msgspec.Meta(ge=30.0, le=45.0)]
    frames: Annotated[int, msgspec.Meta(ge=1, le=600)] = 50


class CalibrateResult(Message):
    offset_c: float
    measured_c: float
    frames: int


class PairingStart(Message):
    room_url: str | None = None


class EchoParams(Message):
    """bus.echo: served by the broker itself; used by health checks and the benchmark."""

    data: bytes = b""


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSpec:
    name: str
    type: type[Message]
    delivery: Delivery
    attachment: bool = False

    @property
    def retained(self) -> bool:
        return self.delivery is Delivery.STATE


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: type[Message]
    result: type[Message]


_TOPICS = [
    TopicSpec("thermal.frame", ThermalFrame, Delivery.TELEMETRY),
    TopicSpec("thermal.interrupt", ThermalInterrupt, Delivery.EVENT),
    TopicSpec("thermal.status", ThermalStatus, Delivery.STATE),
    TopicSpec("screening.state", ScreeningState, Delivery.STATE),
    TopicSpec("screening.result", ScreeningResult, Delivery.EVENT),
    TopicSpec("alert.fever", FeverAlert, Delivery.EVENT),
    TopicSpec("alert.ack", AlertAck, Delivery.EVENT),
    TopicSpec("camera.h264", H264AccessUnit, Delivery.TELEMETRY, attachment=True),
    TopicSpec("camera.preview", FrameRingNotice, Delivery.TELEMETRY),
    TopicSpec("camera.status", CameraStatus, Delivery.STATE),
    TopicSpec("call.state", CallState, Delivery.STATE),
    TopicSpec("call.chat", ChatMessage, Delivery.EVENT),
    TopicSpec("call.remote_video", FrameRingNotice, Delivery.TELEMETRY),
    TopicSpec("pairing.status", PairingStatus, Delivery.STATE),
    TopicSpec("setup.code", SetupCode, Delivery.STATE),
]
TOPICS: dict[str, TopicSpec] = {t.name: t for t in _TOPICS}

# Families: any topic under the prefix has this spec's type (health.thermal, health.camera...).
TOPIC_FAMILIES: dict[str, TopicSpec] = {
    "health.": TopicSpec("health.*", Health, Delivery.STATE),
}

_METHODS = [
    MethodSpec("bus.echo", EchoParams, EchoParams),
    MethodSpec("camera.keyframe", Empty, Ok),
    MethodSpec("screening.events_since", EventsSince, EventsPage),
    MethodSpec("screening.calibrate", CalibrateParams, CalibrateResult),
    MethodSpec("pairing.start", PairingStart, Ok),
    MethodSpec("pairing.unpair", Empty, Ok),
]
METHODS: dict[str, MethodSpec] = {m.name: m for m in _METHODS}

# Topics under this prefix are free-form and unvalidated beyond the envelope: benchmarks and
# tests use them so that they never collide with a real topic.
SCRATCH_PREFIX = "test."


class Scratch(Message, forbid_unknown_fields=False):
    """test.*: any map; used by benchmarks and tests."""

    data: bytes = b""
    n: int = 0


SCRATCH_SPEC_TELEMETRY = TopicSpec("test.*", Scratch, Delivery.TELEMETRY, attachment=True)
SCRATCH_SPEC_EVENT = TopicSpec("test.event.*", Scratch, Delivery.EVENT, attachment=True)
SCRATCH_SPEC_STATE = TopicSpec("test.state.*", Scratch, Delivery.STATE, attachment=True)


def topic_spec(name: str) -> TopicSpec | None:
    spec = TOPICS.get(name)
    if spec is not None:
        return spec
    for prefix, family in TOPIC_FAMILIES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return family
    if name.startswith(SCRATCH_PREFIX):
        if name.startswith("test.event."):
            return SCRATCH_SPEC_EVENT
        if name.startswith("test.state."):
            return SCRATCH_SPEC_STATE
        return SCRATCH_SPEC_TELEMETRY
    return None


def method_spec(name: str) -> MethodSpec | None:
    spec = METHODS.get(name)
    if spec is None and name.startswith(SCRATCH_PREFIX):
        return MethodSpec(name, Scratch, Scratch)
    return spec


def matches(pattern: str, topic: str) -> bool:
    """A pattern is an exact topic, or a prefix ending in '*' ('thermal.*', '*')."""
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic
