"""What the status screen knows: the last value of each bus topic it follows (no I/O).

`Inputs.apply(topic, msg, mono)` takes one bus message and says whether anything the screen
shows may have changed. Frames are not stored here (they live in the daemon's frame feeds),
only their sequence numbers and arrival times: the view model compares seqs to decide
whether a redraw is due, and the renderer fetches pixels by them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from appliance.bus.topics import (
    CallState,
    CameraStatus,
    ChatMessage,
    Message,
    PairingStatus,
    ScreeningState,
    SetupCode,
    ThermalFrame,
    ThermalStatus,
)

CHAT_KEEP = 8

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

    def apply(self, topic: str, msg: Message, mono: float) -> bool:
        """Take one message; True when the screen may need a redraw."""
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
        if getattr(self, slot) == msg:
            return False
        setattr(self, slot, msg)
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
}
_SLOT_TYPES: dict[str, type[Message]] = {
    "screening": ScreeningState,
    "thermal": ThermalStatus,
    "camera": CameraStatus,
    "pairing": PairingStatus,
    "setup_code": SetupCode,
    "call": CallState,
}
