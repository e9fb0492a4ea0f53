"""What the setup page knows live: the last value of each topic it follows, and its watchers.

The bus shell feeds `LiveState.apply`; pages render from it; the WebSocket sends the same
fields (`status_fields`) as they change, and thermal frames with the interrupt mask. Both
the first render and the updates come from the same function, so a page never shows a field
the socket does not keep current, or the other way round.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from appliance import daemons
from appliance.bus.topics import (
    CallState,
    CameraStatus,
    Health,
    Message,
    PairingStatus,
    ScreeningState,
    ThermalFrame,
    ThermalInterrupt,
    ThermalStatus,
)

TOPICS = (
    "health.*",
    "thermal.status",
    "thermal.frame",
    "thermal.interrupt",
    "camera.status",
    "pairing.status",
    "call.state",
    "screening.state",
)
MASK_SHOW_S = 3.0  # an interrupt mask is shown this long after it fired


def mask_pixels(mask: int) -> list[int]:
    """Pixel indices (row-major, row 0 = top) whose bit is set."""
    return [i for i in range(64) if mask >> i & 1]


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


@dataclass
class LiveState:
    health: dict[str, Health] = field(default_factory=dict)
    thermal: ThermalStatus | None = None
    camera: CameraStatus | None = None
    pairing: PairingStatus | None = None
    call: CallState | None = None
    screening: ScreeningState | None = None
    frame: ThermalFrame | None = None
    frame_at: float = 0.0
    frame_count: int = 0
    interrupt: ThermalInterrupt | None = None
    interrupt_at: float = 0.0
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    status_version: int = 0
    thermal_version: int = 0
    _changed: asyncio.Event | None = None

    def apply(self, topic: str, msg: Message) -> None:
        if isinstance(msg, ThermalFrame):
            self.frame, self.frame_at = msg, time.monotonic()
            self.frame_count += 1
            self.thermal_version += 1
        elif isinstance(msg, ThermalInterrupt):
            self.interrupt, self.interrupt_at = msg, time.monotonic()
            self.thermal_version += 1
        else:
            if isinstance(msg, Health) and topic.startswith("health."):
                self.health[msg.daemon] = msg
            elif isinstance(msg, ThermalStatus):
                self.thermal = msg
            elif isinstance(msg, CameraStatus):
                self.camera = msg
            elif isinstance(msg, PairingStatus):
                self.pairing = msg
            elif isinstance(msg, CallState):
                self.call = msg
            elif isinstance(msg, ScreeningState):
                self.screening = msg
            else:
                return
            self.status_version += 1
        self._wake()

    def set_units(self, units: dict[str, dict[str, str]]) -> None:
        if units != self.units:
            self.units = units
            self.status_version += 1
            self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def changed(self) -> asyncio.Event:
        """An event set at the next change (a fresh one per change)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    # --- what pages and the socket show ---------------------------------------------------------

    def status_fields(self, now: float | None = None, *, bus_connected: bool = False) -> dict[str, str]:
        now = time.monotonic() if now is None else now
        out: dict[str, str] = {}
        for name in daemons.START_ORDER:
            hm = self.health.get(name)
            out[f"daemon.{name}.state"] = hm.state if hm is not None else "not heard from"
            if name == "bus" and hm is None:
                # No health.bus heard yet (an older broker, or just started): that we are
                # connected is its health.
                out["daemon.bus.state"] = "reachable" if bus_connected else "not reachable"
            out[f"daemon.{name}.status"] = hm.status if hm is not None else ""
            out[f"daemon.{name}.up"] = (
                _ago(now - hm.started_ts) if hm is not None and hm.state != "stopping" else ""
            )
            unit = self.units.get(name)
            out[f"daemon.{name}.unit"] = (
                f"{unit.get('ActiveState', '?')} ({unit.get('SubState', '?')})" if unit else ""
            )
        t = self.thermal
        out["thermal.state"] = t.state if t is not None else "not heard from"
        out["thermal.detail"] = (
            (t.reason or (f"{t.rate_hz:g} fps" if t.rate_hz else "")) if t is not None else ""
        )
        out["thermal.frames"] = str(self.frame_count)
        c = self.camera
        out["camera.state"] = c.state if c is not None else "not heard from"
        if c is None:
            out["camera.detail"] = ""
        else:
            out["camera.detail"] = c.reason or f"{c.backend} {c.width}x{c.height} at {c.fps:g} fps"
        s = self.screening
        out["screening.state"] = s.state if s is not None else "not heard from"
        p = self.pairing
        out["pairing.state"] = p.state if p is not None else "not heard from"
        out["pairing.room"] = (p.room_name or "") if p is not None else ""
        out["pairing.user_code"] = (p.user_code or "") if p is not None else ""
        out["pairing.uri"] = (p.verification_uri_complete or "") if p is not None else ""
        out["pairing.expires"] = (
            _ago(p.expires_at - time.time())
            if p is not None and p.expires_at is not None and p.state == "code"
            else ""
        )
        out["pairing.reason"] = (p.reason or "") if p is not None else ""
        call = self.call
        if call is None:
            out["call.room"] = "not heard from"
            out["call.viewers"] = ""
        else:
            out["call.room"] = "connected" if call.room_connected else "not connected"
            viewers = [
                v.viewer_id + (f" ({v.rtt_ms:.0f} ms)" if v.rtt_ms is not None else "") for v in call.viewers
            ]
            out["call.viewers"] = ", ".join(viewers) if viewers else "none"
        return out

    def thermal_message(self, now: float | None = None) -> dict[str, Any] | None:
        if self.frame is None:
            return None
        now = time.monotonic() if now is None else now
        mask = (
            mask_pixels(self.interrupt.mask)
            if self.interrupt is not None and now - self.interrupt_at <= MASK_SHOW_S
            else []
        )
        return {
            "type": "thermal",
            "pixels": [round(p, 2) for p in self.frame.pixels],
            "thermistor": round(self.frame.thermistor, 2),
            "frame_seq": self.frame.frame_seq,
            "age_s": round(now - self.frame_at, 1),
            "mask": mask,
        }
