"""What the setup page knows live: the last value of each topic it follows, and its watchers.

The bus shell feeds `LiveState.apply`; pages render from it; the WebSocket sends the same
fields (`status_fields`) as they change, and thermal frames with the interrupt mask. Both
the first render and the updates come from the same function, so a page never shows a field
the socket does not keep current, or the other way round.

Unit states come from systemd where the setup daemon can ask it; on a kiosk it cannot (no
D-Bus, and it is not root) and they come from each unit's cgroup (appliance.setup.system).
That says only whether the unit has processes, so the daemon's health heartbeat is added: a
unit with processes but no health.<daemon> for HEALTH_STALE_S is running but not heard from
(a hung loop, a lost bus), which the page says. Field units.source says where they came from.
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
from appliance.runtime import HEALTH_HEARTBEAT_S

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
# A daemon's heartbeat is this late before the page says it is missing: three beats, so one
# late or lost message on a busy bus is not an alarm.
HEALTH_STALE_S = 3 * HEALTH_HEARTBEAT_S
UNITS_FROM_SYSTEMD = "Unit states: from systemd."
UNITS_FROM_CGROUP = (
    "Unit states: systemd cannot be asked from this daemon's user, so each comes from the unit's "
    "control group (cgroup: whether it has processes) and the daemon's health heartbeat on the bus."
)


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
    health_at: dict[str, float] = field(default_factory=dict)  # time.monotonic() of the last one
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
                self.health_at[msg.daemon] = time.monotonic()
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
            out[f"daemon.{name}.unit"] = self._unit_field(name, now, bus_connected)
        if not self.units:
            out["units.source"] = ""
        elif any(u.get("Source") == "cgroup" for u in self.units.values()):
            out["units.source"] = UNITS_FROM_CGROUP
        else:
            out["units.source"] = UNITS_FROM_SYSTEMD
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

    def _unit_field(self, name: str, now: float, bus_connected: bool) -> str:
        unit = self.units.get(name)
        if not unit:
            return ""
        if unit.get("Source") != "cgroup":
            return f"{unit.get('ActiveState', '?')} ({unit.get('SubState', '?')})"
        processes = unit.get("Processes")
        if processes != "yes":
            return "not running" if processes == "no" else "unknown"
        hm, heard = self.health.get(name), self.health_at.get(name)
        if hm is not None and hm.state == "stopping":
            return "stopping"
        if heard is not None and now - heard <= HEALTH_STALE_S:
            return "running"
        if name == "bus" and bus_connected:
            return "running"  # an older broker sends no health.bus: the connection is its health
        return "running, no heartbeat " + ("yet" if heard is None else f"for {_ago(now - heard)}")

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
