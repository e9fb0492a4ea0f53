"""The Status page's unit column where systemctl cannot reach PID 1 (a kiosk: the setup daemon
runs as the appliance user and there is no D-Bus): each unit's cgroup, and its heartbeat."""

from __future__ import annotations

from appliance.bus.topics import Health
from appliance.runtime import HEALTH_HEARTBEAT_S
from appliance.setup.live import LiveState


def health(daemon: str, state: str = "ready") -> Health:
    return Health(daemon=daemon, state=state, pid=7, started_ts=0.0)  # type: ignore[arg-type]


def cg(processes: str) -> dict[str, str]:
    return {"Source": "cgroup", "Processes": processes}


def test_cgroup_and_heartbeat_make_the_unit_state() -> None:
    live = LiveState()
    live.apply("health.thermal", health("thermal"))
    live.apply("health.camera", health("camera"))
    heard = live.health_at["thermal"] = live.health_at["camera"] = 1000.0
    live.set_units(
        {
            "thermal": cg("yes"),
            "camera": cg("yes"),
            "screen": cg("yes"),
            "publisher": cg("no"),
            "setup": cg("unknown"),
        }
    )
    now = heard + 1.0
    f = live.status_fields(now)
    assert f["daemon.thermal.unit"] == "running"
    assert f["daemon.screen.unit"] == "running, no heartbeat yet"
    assert f["daemon.publisher.unit"] == "not running"
    assert f["daemon.setup.unit"] == "unknown"
    assert "cgroup" in f["units.source"] and "heartbeat" in f["units.source"]
    # The camera's heartbeats stop but its processes are still there (a hung loop, a lost bus).
    later = heard + 4 * HEALTH_HEARTBEAT_S
    live.health_at["thermal"] = later  # thermal kept beating
    f = live.status_fields(later + 1.0)
    assert f["daemon.thermal.unit"] == "running"
    assert f["daemon.camera.unit"] == "running, no heartbeat for 41 s"


def test_a_daemon_saying_it_stops_is_stopping() -> None:
    live = LiveState()
    live.apply("health.thermal", health("thermal", "stopping"))
    live.set_units({"thermal": cg("yes")})
    assert live.status_fields(live.health_at["thermal"])["daemon.thermal.unit"] == "stopping"


def test_systemd_states_show_as_before_and_say_so() -> None:
    live = LiveState()
    live.set_units(
        {"thermal": {"Id": "appliance-thermal.service", "ActiveState": "active", "SubState": "running"}}
    )
    f = live.status_fields(0.0)
    assert f["daemon.thermal.unit"] == "active (running)"
    assert f["units.source"] == "Unit states: from systemd."
    assert LiveState().status_fields(0.0)["units.source"] == ""
