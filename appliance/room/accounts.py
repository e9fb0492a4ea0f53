"""Admin accounts, their sessions and their wrong pairing-code entries, in SQLite.

The caller passes the time (`now`, Unix seconds) so tests can move it.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from appliance.room import tokens
from appliance.room.passwords import DUMMY_HASH, check_policy, hash_password

USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")


class AccountError(ValueError):
    pass


@dataclass(frozen=True)
class Admin:
    id: int
    username: str


def check_username(username: str) -> None:
    if not USERNAME.match(username):
        raise AccountError("a username is 1-64 of a-z, 0-9 and _ . @ -, starting with a letter or digit")


class Accounts:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # --- admins -----------------------------------------------------------------------------

    def add_admin(self, username: str, password: str, now: float) -> Admin:
        check_username(username)
        check_policy(password)
        try:
            cur = self.conn.execute(
                "INSERT INTO admins (username, password_hash, created) VALUES (?, ?, ?)",
                (username, hash_password(password), now),
            )
        except sqlite3.IntegrityError:
            raise AccountError(f"an admin named {username!r} exists already") from None
        assert cur.lastrowid is not None
        return Admin(cur.lastrowid, username)

    def credentials(self, username: str) -> tuple[Admin | None, str]:
        """The admin and their password hash. For an unknown name, None and a dummy hash, to be
        checked all the same so that the answer takes as long (names stay secret)."""
        row = self.conn.execute(
            "SELECT id, username, password_hash FROM admins WHERE username = ?", (username,)
        ).fetchone()
        if row is None:
            return None, DUMMY_HASH
        return Admin(row["id"], row["username"]), row["password_hash"]

    def count_admins(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM admins").fetchone()[0])

    # --- sessions ---------------------------------------------------------------------------

    def new_session(self, admin: Admin, now: float, ttl_s: float) -> str:
        token = tokens.new_token()
        self.conn.execute(
            "INSERT INTO admin_sessions (token_hash, admin_id, created, expires) VALUES (?, ?, ?, ?)",
            (tokens.digest(token), admin.id, now, now + ttl_s),
        )
        return token

    def session_admin(self, token: str, now: float) -> Admin | None:
        row = self.conn.execute(
            "SELECT a.id, a.username FROM admin_sessions s JOIN admins a ON a.id = s.admin_id"
            " WHERE s.token_hash = ? AND s.expires > ?",
            (tokens.digest(token), now),
        ).fetchone()
        return None if row is None else Admin(row["id"], row["username"])

    def end_session(self, token: str) -> None:
        self.conn.execute("DELETE FROM admin_sessions WHERE token_hash = ?", (tokens.digest(token),))

    # --- wrong pairing codes ----------------------------------------------------------------

    def code_failures(self, admin: Admin, since: float) -> list[float]:
        rows = self.conn.execute(
            "SELECT at FROM code_failures WHERE admin_id = ? AND at > ? ORDER BY at", (admin.id, since)
        ).fetchall()
        return [float(r[0]) for r in rows]

    def add_code_failure(self, admin: Admin, now: float) -> None:
        self.conn.execute("INSERT INTO code_failures (admin_id, at) VALUES (?, ?)", (admin.id, now))

    def purge(self, now: float, keep_failures_s: float) -> None:
        self.conn.execute("DELETE FROM admin_sessions WHERE expires <= ?", (now,))
        self.conn.execute("DELETE FROM code_failures WHERE at <= ?", (now - keep_failures_s,))
