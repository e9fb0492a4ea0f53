"""What the status screen knows: the last value of each bus topic it follows (no I/O).

`Inputs.apply(topic, msg, mono, sent)` takes one bus message and says whether anything the
screen shows may have changed. Frames are not stored here (they live in the daemon's frame feeds),
only their sequence numbers and arrival times: the view model compares seqs to decide
whether a redraw is due, and the renderer fetches pixels by them.

What a live screening daemon backs: the broker keeps the last screening.state for ever, so a
screening daemon that crashed or hangs would leave its last verdict on the screen. The
screen also keeps when that state and the screening daemon's last health.screening (its
heartbeat) were published, and whether its own bus link is up and since when (`note_bus`); the view model
(view.py) decides from those and its clock whether the state may still be shown.

Times are the screen's monotonic clock. A message's publication time is the envelope's `ts`,
the publisher's time.monotonic(): CLOCK_MONOTONIC is one clock for every process on the
kiosk, so a state the broker retained ten minutes ago arrives ten minutes old, not new.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from appliance.bus.topics import (
    CallState,
    CameraStatus,
    ChatMessage,
    Health,
    Message,
    PairingStatus,
    ScreeningState,
    SetupCode,
    ThermalFrame,
    ThermalStatus,
)

CHAT_KEEP = 8
SCREENING_HEALTH = "health.screening"

# The topics the screen follows; camera.preview and call.remote_video are frame notices,
# handled by the daemon's frame feeds, which then call note_camera / note_remote.
TOPICS = (
    "screening.state",
    "thermal.status",
    "thermal.frame",
    "camera.status",
    "pairing.status",
    "setup.code",
    "call.state",
    "call.chat",
    SCREENING_HEALTH,
)


@dataclass
class Inputs:
    screening: ScreeningState | None = None
    thermal: ThermalStatus | None = None
    camera: CameraStatus | None = None
    pairing: PairingStatus | None = None
    setup_code: SetupCode | None = None
    call: CallState | None = None
    chat: deque[ChatMessage] = field(default_factory=lambda: deque(maxlen=CHAT_KEEP))
    # The latest thermal pixels (64 floats) travel with the message; frames from rings do not.
    thermal_pixels: tuple[float, ...] | None = None
    thermal_seq: int = 0
    thermal_at: float | None = None
    camera_seq: int = 0
    camera_at: float | None = None
    remote_seq: int = 0
    remote_at: float | None = None
    # When the current screening state and health.screening were published (None: set by
    # hand, as tests and the benchmark do: not judged by age).
    screening_at: float | None = None
    screening_health: Health | None = None
    screening_health_at: float | None = None
    # The screen's own bus link; bus_since is when it last came up (kept while it is down, so a
    # short gap does not restart the wait for a screening daemon never heard from), None when
    # nobody follows the link (the benchmark): then such a daemon is not judged.
    # bus_down_since is when it went down (None while up, or down since an unknown time): the
    # view model forgives a short gap, as a broker restart makes (view.BUS_GRACE_S).
    bus_up: bool = True
    bus_since: float | None = None
    bus_down_since: float | None = None

    def apply(self, topic: str, msg: Message, mono: float, sent: float | None = None) -> bool:
        """Take one message that arrived at `mono`, published at `sent` (the envelope's ts; None:
        at arrival); True when the screen may need a redraw."""
        if topic == "thermal.frame" and isinstance(msg, ThermalFrame):
            self.thermal_pixels = tuple(msg.pixels)
            self.thermal_seq += 1
            self.thermal_at = mono
            return True
        if topic == "call.chat" and isinstance(msg, ChatMessage):
            self.chat.append(msg)
            return True
        slot = _STATE_SLOTS.get(topic)
        if slot is None or not isinstance(msg, _SLOT_TYPES[slot]):
            return False
        if isinstance(msg, CallState) and not msg.viewers:
            # The call is over: what staff wrote was for the person they were talking to, not
            # for whoever is at the door when the next call starts.
            self.chat.clear()
        at_slot = _PUBLISHED_AT.get(slot)
        if at_slot is not None:
            # A time from the future (a publisher on another clock) counts from its arrival;
            # NaN or infinity likewise: it must not make a stale state look fresh for ever.
            at = mono if sent is None or not math.isfinite(sent) or sent > mono else sent
            previous = getattr(self, at_slot)
            if getattr(self, slot) == msg and previous is not None and at <= previous:
                return False
            # The same state published again is news too: it is current again.
            setattr(self, at_slot, at)
        elif getattr(self, slot) == msg:
            return False
        setattr(self, slot, msg)
        return True

    def note_bus(self, connected: bool, mono: float) -> bool:
        """The screen's bus link as the daemon sees it; True when that changed."""
        if connected == self.bus_up and (not connected or self.bus_since is not None):
            return False
        self.bus_up = connected
        if connected:
            self.bus_since = mono
        self.bus_down_since = None if connected else mono
        return True

    def note_camera(self, mono: float) -> None:
        self.camera_seq += 1
        self.camera_at = mono

    def note_remote(self, mono: float) -> None:
        self.remote_seq += 1
        self.remote_at = mono


_STATE_SLOTS = {
    "screening.state": "screening",
    "thermal.status": "thermal",
    "camera.status": "camera",
    "pairing.status": "pairing",
    "setup.code": "setup_code",
    "call.state": "call",
    SCREENING_HEALTH: "screening_health",
}
# The slots whose publication time the view model judges, and where it is kept.
_PUBLISHED_AT = {"screening": "screening_at", "screening_health": "screening_health_at"}
_SLOT_TYPES: dict[str, type[Message]] = {
    "screening": ScreeningState,
    "thermal": ThermalStatus,
    "camera": CameraStatus,
    "pairing": PairingStatus,
    "setup_code": SetupCode,
    "call": CallState,
    "screening_health": Health,
}
