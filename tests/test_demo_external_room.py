"""`appliance demo --room-url URL --scenario FILE`: the kiosk joins a room service it did not start.

The whole flow (pairing by the printed code, approval in that service's database) runs in
tests/test_network_faults.py; here, what the demo writes and starts, and the database helpers
it shares with the network bench.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.demo.provision import Approver, provision_room
from appliance.demo.supervisor import ORDER, Supervisor
from appliance.room.db import open_database
from appliance.room.devices import Devices
from appliance.room.rooms import Rooms


async def test_an_external_room_is_joined_not_started(tmp_path: Path) -> None:
    scenario = tmp_path / "scene.toml"
    sup = Supervisor(
        tmp_path / "work",
        list(ORDER),
        headless=True,
        room_url="HTTP://10.213.0.2:8443/",
        scenario=str(scenario),
    )
    sup.write_config()
    assert "room" not in sup.order and sup.order[0] == "bus"
    assert sup.room_url == "http://10.213.0.2:8443"
    config = load_config(sup.config_file, apply_env=False)
    assert config.publisher.room_url == "http://10.213.0.2:8443"
    assert config.sim.scenario == str(scenario)
    assert not sup.room_config.exists()  # nothing of the room service's here


async def test_without_a_room_url_the_demo_runs_its_own(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "work", list(ORDER), headless=True)
    sup.write_config()
    assert sup.order[:2] == ["bus", "room"] and sup.room_config.exists()
    assert sup.room_url.startswith("http://127.0.0.1:")
    assert load_config(sup.config_file, apply_env=False).sim.scenario == "demo"


def test_provisioned_room_and_an_approved_code(tmp_path: Path) -> None:
    database = tmp_path / "room.db"
    made = provision_room(database, "Front door")
    again = provision_room(database, "Front door")  # a second admin and link, the same room
    assert again.room_id == made.room_id and again.invite != made.invite and again.admin != made.admin
    conn = open_database(database)
    try:
        assert [r.name for r in Rooms(conn).all()] == ["Front door"]
        _, code = Devices(conn).authorize("dev-1", "kiosk", "test", "10.213.0.1", time.time(), 600, 1)
    finally:
        conn.close()
    approver = Approver(database, made.admin, made.room_id)
    try:
        assert approver.approve(code[:4].lower() + "-" + code[4:].lower())  # as typed
        assert not approver.approve(code)  # decided already
        assert not approver.approve("not a code")
    finally:
        approver.close()
    with pytest.raises(ValueError):
        Approver(database, "nobody", made.room_id)
