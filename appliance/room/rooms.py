"""Rooms, their viewer invites and the viewer sessions invites are exchanged for, in SQLite.

An invite token is shown once, when it is made (like an API key): only its hash is kept, so
the database alone lets nobody watch a kiosk. A viewer session never outlives its invite.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from appliance.room import tokens

NAME_MAX = 80
LABEL_MAX = 80


class RoomError(ValueError):
    pass


@dataclass(frozen=True)
class Room:
    id: str
    name: str
    created: float


@dataclass(frozen=True)
class Invite:
    id: str
    room_id: str
    label: str
    created: float
    expires: float | None
    revoked: float | None

    def live(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or self.expires > now)


@dataclass(frozen=True)
class ViewerSession:
    invite_id: str
    room: Room
    expires: float


def clean_text(text: str, limit: int, what: str) -> str:
    """One line of printable text: control characters and surrounding space removed."""
    out = "".join(c for c in text if c.isprintable()).strip()
    if not out:
        raise RoomError(f"the {what} is empty")
    if len(out) > limit:
        raise RoomError(f"the {what} has more than {limit} characters")
    return out


def _room(row: sqlite3.Row) -> Room:
    return Room(row["id"], row["name"], row["created"])


def _invite(row: sqlite3.Row) -> Invite:
    return Invite(row["id"], row["room_id"], row["label"], row["created"], row["expires"], row["revoked"])


class Rooms:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # --- rooms ------------------------------------------------------------------------------

    def create(self, name: str, now: float) -> Room:
        room = Room(tokens.new_id("r"), clean_text(name, NAME_MAX, "room name"), now)
        self.conn.execute("INSERT INTO rooms (id, name, created) VALUES (?, ?, ?)", (room.id, room.name, now))
        return room

    def get(self, room_id: str) -> Room | None:
        row = self.conn.execute("SELECT * FROM rooms WHERE id = ?", (room_id,)).fetchone()
        return None if row is None else _room(row)

    def all(self) -> list[Room]:
        return [_room(r) for r in self.conn.execute("SELECT * FROM rooms ORDER BY name, created")]

    def delete(self, room_id: str) -> bool:
        """Deletes its devices, invites and sessions with it (foreign keys cascade)."""
        return self.conn.execute("DELETE FROM rooms WHERE id = ?", (room_id,)).rowcount > 0

    # --- invites ----------------------------------------------------------------------------

    def create_invite(self, room_id: str, label: str, now: float, ttl_s: float | None) -> tuple[Invite, str]:
        """A new invite and its token (returned this once, never stored)."""
        token = tokens.new_token(24)  # 192 bits
        label = clean_text(label, LABEL_MAX, "label") if label.strip() else "viewer link"
        invite = Invite(tokens.new_id("i"), room_id, label, now, None if ttl_s is None else now + ttl_s, None)
        try:
            self.conn.execute(
                "INSERT INTO invites (id, room_id, label, token_hash, created, expires)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (invite.id, room_id, invite.label, tokens.digest(token), now, invite.expires),
            )
        except sqlite3.IntegrityError:
            raise RoomError("no such room") from None
        return invite, token

    def invites(self, room_id: str) -> list[Invite]:
        rows = self.conn.execute("SELECT * FROM invites WHERE room_id = ? ORDER BY created DESC", (room_id,))
        return [_invite(r) for r in rows]

    def get_invite(self, invite_id: str) -> Invite | None:
        row = self.conn.execute("SELECT * FROM invites WHERE id = ?", (invite_id,)).fetchone()
        return None if row is None else _invite(row)

    def revoke_invite(self, invite_id: str, now: float) -> bool:
        cur = self.conn.execute(
            "UPDATE invites SET revoked = ? WHERE id = ? AND revoked IS NULL", (now, invite_id)
        )
        self.conn.execute("DELETE FROM viewer_sessions WHERE invite_id = ?", (invite_id,))
        return cur.rowcount > 0

    # --- viewer sessions --------------------------------------------------------------------

    def open_session(self, invite_token: str, now: float, ttl_s: float) -> tuple[str, ViewerSession] | None:
        """Exchange a live invite for a session token; None if the invite is unknown or dead."""
        row = self.conn.execute(
            "SELECT i.*, r.name AS room_name, r.created AS room_created FROM invites i"
            " JOIN rooms r ON r.id = i.room_id WHERE i.token_hash = ?",
            (tokens.digest(invite_token),),
        ).fetchone()
        if row is None or not _invite(row).live(now):
            return None
        expires = now + ttl_s if row["expires"] is None else min(now + ttl_s, row["expires"])
        token = tokens.new_token()
        self.conn.execute(
            "INSERT INTO viewer_sessions (token_hash, invite_id, room_id, created, expires)"
            " VALUES (?, ?, ?, ?, ?)",
            (tokens.digest(token), row["id"], row["room_id"], now, expires),
        )
        room = Room(row["room_id"], row["room_name"], row["room_created"])
        return token, ViewerSession(row["id"], room, expires)

    def session(self, token: str, now: float) -> ViewerSession | None:
        row = self.conn.execute(
            "SELECT s.invite_id, s.expires, r.id, r.name, r.created FROM viewer_sessions s"
            " JOIN rooms r ON r.id = s.room_id WHERE s.token_hash = ? AND s.expires > ?",
            (tokens.digest(token), now),
        ).fetchone()
        if row is None:
            return None
        return ViewerSession(row["invite_id"], Room(row["id"], row["name"], row["created"]), row["expires"])

    def purge(self, now: float) -> None:
        self.conn.execute("DELETE FROM viewer_sessions WHERE expires <= ?", (now,))
