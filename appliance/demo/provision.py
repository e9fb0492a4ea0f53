"""A room service's admin, room and viewer link, and a kiosk's approval, straight in its database.

What a person would do on the admin pages, done by a program that shares the room service's
filesystem: the demo (its own room service on 127.0.0.1) and the network bench (a room service
in another network namespace). The database may be written while the service runs: SQLite
(WAL) serialises the writers.

    made = provision_room(db_path, "Demo entrance")   # before or while the service runs
    approver = Approver(db_path, made.admin, made.room_id)
    approver.approve("ABCD-EFGH")                     # the code the kiosk shows
    approver.close()
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.room.accounts import Accounts
from appliance.room.db import open_database
from appliance.room.devices import Devices
from appliance.room.rooms import Rooms
from appliance.room.tokens import normalize_user_code


@dataclass(frozen=True)
class Provisioned:
    admin: str
    password: str  # shown once; stored nowhere but as a hash
    room_id: str
    invite: str  # the viewer link is <room url>/view/<invite>


def provision_room(database: Path, room_name: str) -> Provisioned:
    """An admin with a fresh random password, the room `room_name` (made unless it exists) and
    a viewer link for it."""
    conn = open_database(database)
    try:
        now = time.time()
        name, password = f"demo-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
        Accounts(conn).add_admin(name, password, now)
        rooms = Rooms(conn)
        room = next((r for r in rooms.all() if r.name == room_name), None) or rooms.create(room_name, now)
        _, invite = rooms.create_invite(room.id, "demo viewer", now, None)
    finally:
        conn.close()
    return Provisioned(name, password, room.id, invite)


class Approver:
    """Approves a kiosk's user code into a room, as the admin `admin_name` would at /activate."""

    def __init__(self, database: Path, admin_name: str, room_id: str) -> None:
        self.conn = open_database(database)
        admin = Accounts(self.conn).credentials(admin_name)[0]
        if admin is None:
            self.conn.close()
            raise ValueError(f"no admin {admin_name!r} in {database}")
        self.admin_id = admin.id
        self.room_id = room_id

    def approve(self, user_code: str) -> bool:
        """False if the code is not (or no longer) pending."""
        code = normalize_user_code(user_code)
        if code is None:
            return False
        return Devices(self.conn).decide(code, self.room_id, self.admin_id, time.time())

    def close(self) -> None:
        self.conn.close()
