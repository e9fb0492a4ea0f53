"""Kiosks (devices) and their pairing requests, in SQLite.

A pairing request holds the device code's hash, the user code, what the kiosk said about
itself and its state (see appliance.room.device_flow). When an approved code is polled, the
device token is made there and then and returned once: only its hash is ever stored.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from appliance.room import tokens
from appliance.room.db import transaction
from appliance.room.device_flow import CodeState, PollDecision, decide_poll


class RoomFull(Exception):
    pass


@dataclass(frozen=True)
class Device:
    id: str
    room_id: str
    device_id: str
    model: str
    firmware: str
    created: float
    last_seen: float | None
    revoked: float | None


@dataclass(frozen=True)
class PairingRequest:
    user_code: str
    device_id: str
    model: str
    firmware: str
    address: str
    created: float
    expires: float


@dataclass(frozen=True)
class Issued:
    device: Device
    token: str
    room_name: str
    # The devices whose tokens this pairing revoked (the same kiosk paired before): their
    # connections must be cut off too, or a revoked token goes on signaling.
    replaced: tuple[str, ...] = ()


def _device(row: sqlite3.Row) -> Device:
    return Device(
        row["id"],
        row["room_id"],
        row["device_id"],
        row["model"],
        row["firmware"],
        row["created"],
        row["last_seen"],
        row["revoked"],
    )


class Devices:
    def __init__(self, conn: sqlite3.Connection, max_per_room: int = 1) -> None:
        self.conn = conn
        self.max_per_room = max_per_room

    # --- pairing requests -------------------------------------------------------------------

    def authorize(
        self,
        device_id: str,
        model: str,
        firmware: str,
        address: str,
        now: float,
        ttl_s: float,
        interval_s: float,
    ) -> tuple[str, str]:
        """A new pairing request: (device_code, user_code)."""
        device_code = tokens.new_token(32)
        with transaction(self.conn):
            while True:  # a live duplicate of an 8-letter code is unlikely, but not impossible
                user_code = tokens.new_user_code()
                clash = self.conn.execute(
                    "SELECT 1 FROM device_codes WHERE user_code = ? AND expires > ?", (user_code, now)
                ).fetchone()
                if clash is None:
                    break
            self.conn.execute(
                "INSERT INTO device_codes (code_hash, user_code, device_id, model, firmware, address,"
                " created, expires, interval, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (
                    tokens.digest(device_code),
                    user_code,
                    device_id,
                    model,
                    firmware,
                    address,
                    now,
                    now + ttl_s,
                    interval_s,
                ),
            )
        return device_code, user_code

    def pending(self, user_code: str, now: float) -> PairingRequest | None:
        row = self.conn.execute(
            "SELECT * FROM device_codes WHERE user_code = ? AND state = 'pending' AND expires > ?",
            (user_code, now),
        ).fetchone()
        if row is None:
            return None
        return PairingRequest(
            row["user_code"],
            row["device_id"],
            row["model"],
            row["firmware"],
            row["address"],
            row["created"],
            row["expires"],
        )

    def room_is_full(self, room_id: str, device_id: str) -> bool:
        # The same kiosk pairing again replaces its old token, so it does not count.
        count = self.conn.execute(
            "SELECT count(*) FROM devices WHERE room_id = ? AND revoked IS NULL AND device_id != ?",
            (room_id, device_id),
        ).fetchone()[0]
        return int(count) >= self.max_per_room

    def decide(self, user_code: str, room_id: str | None, admin_id: int, now: float) -> bool:
        """Approve into room_id, or deny with room_id None. False if the code is no longer pending.
        Raises RoomFull when the room has its devices already."""
        with transaction(self.conn):
            request = self.pending(user_code, now)
            if request is None:
                return False
            if room_id is not None and self.room_is_full(room_id, request.device_id):
                raise RoomFull(room_id)
            self.conn.execute(
                "UPDATE device_codes SET state = ?, room_id = ?, decided_by = ?"
                " WHERE user_code = ? AND state = 'pending' AND expires > ?",
                ("denied" if room_id is None else "approved", room_id, admin_id, user_code, now),
            )
        return True

    def poll(self, device_code: str, now: float) -> tuple[PollDecision, Issued | None]:
        """A device's poll: the answer, and on approval the new device and its token."""
        code_hash = tokens.digest(device_code)
        with transaction(self.conn):
            row = self.conn.execute(
                "SELECT c.*, r.name AS room_name FROM device_codes c LEFT JOIN rooms r ON r.id = c.room_id"
                " WHERE c.code_hash = ?",
                (code_hash,),
            ).fetchone()
            state = (
                None
                if row is None
                else CodeState(row["state"], row["expires"], row["interval"], row["last_poll"])
            )
            decision = decide_poll(state, now)
            if row is None or decision.answer == "invalid_grant":
                return decision, None
            if decision.answer != "issue":
                self.conn.execute(
                    "UPDATE device_codes SET last_poll = ?, interval = ? WHERE code_hash = ?",
                    (now, decision.interval, code_hash),
                )
                return decision, None
            room_id = row["room_id"]
            if self.room_is_full(room_id, row["device_id"]):
                # Another kiosk took the room between approval and this poll.
                self.conn.execute(
                    "UPDATE device_codes SET state = 'denied' WHERE code_hash = ?", (code_hash,)
                )
                return PollDecision("access_denied", decision.interval), None
            device, token, replaced = self._issue(
                room_id, row["device_id"], row["model"], row["firmware"], now
            )
            self.conn.execute("UPDATE device_codes SET state = 'issued' WHERE code_hash = ?", (code_hash,))
        return decision, Issued(device, token, row["room_name"], replaced)

    # --- devices ----------------------------------------------------------------------------

    def _issue(
        self, room_id: str, device_id: str, model: str, firmware: str, now: float
    ) -> tuple[Device, str, tuple[str, ...]]:
        """The new device, its token, and the ids of the devices it replaces (now revoked)."""
        # A kiosk holds one token: pairing again revokes the one it had.
        replaced = tuple(
            str(r[0])
            for r in self.conn.execute(
                "SELECT id FROM devices WHERE device_id = ? AND revoked IS NULL", (device_id,)
            )
        )
        self.conn.execute(
            "UPDATE devices SET revoked = ? WHERE device_id = ? AND revoked IS NULL", (now, device_id)
        )
        token = tokens.new_token(32, prefix="rdt_")
        device = Device(tokens.new_id("d"), room_id, device_id, model, firmware, now, None, None)
        self.conn.execute(
            "INSERT INTO devices (id, room_id, device_id, model, firmware, token_hash, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device.id, room_id, device_id, model, firmware, tokens.digest(token), now),
        )
        return device, token, replaced

    def add(self, room_id: str, device_id: str, model: str, firmware: str, now: float) -> tuple[Device, str]:
        """A device and its token without the pairing dance (the benchmark's setup)."""
        with transaction(self.conn):
            if self.room_is_full(room_id, device_id):
                raise RoomFull(room_id)
            device, token, _ = self._issue(room_id, device_id, model, firmware, now)
            return device, token

    def authenticate(self, token: str) -> Device | None:
        row = self.conn.execute(
            "SELECT * FROM devices WHERE token_hash = ? AND revoked IS NULL", (tokens.digest(token),)
        ).fetchone()
        return None if row is None else _device(row)

    def get(self, device_id: str) -> Device | None:
        row = self.conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()
        return None if row is None else _device(row)

    def active(self, room_id: str | None = None) -> list[Device]:
        if room_id is None:
            rows = self.conn.execute("SELECT * FROM devices WHERE revoked IS NULL ORDER BY created")
        else:
            rows = self.conn.execute(
                "SELECT * FROM devices WHERE revoked IS NULL AND room_id = ? ORDER BY created", (room_id,)
            )
        return [_device(r) for r in rows]

    def revoke(self, device_id: str, now: float) -> bool:
        cur = self.conn.execute(
            "UPDATE devices SET revoked = ? WHERE id = ? AND revoked IS NULL", (now, device_id)
        )
        return cur.rowcount > 0

    def seen(self, device_id: str, now: float) -> None:
        self.conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, device_id))

    def purge(self, now: float, keep_s: float = 86400.0) -> None:
        self.conn.execute("DELETE FROM device_codes WHERE expires <= ?", (now - keep_s,))
