"""The room service's SQLite database: its schema and how it is opened.

One file, created 0600 (it holds password hashes; SQLite gives its -wal and -shm files the
same mode). WAL journal, so the admin command and the demo can write while the service reads.
Every secret in it is a hash; see appliance.room.tokens.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from appliance.errors import StateError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS admins (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_sessions (
    token_hash BLOB PRIMARY KEY,
    admin_id INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
-- Wrong user codes entered at /activate, counted per admin over a code lifetime.
CREATE TABLE IF NOT EXISTS code_failures (
    admin_id INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS code_failures_admin ON code_failures(admin_id, at);
CREATE TABLE IF NOT EXISTS rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS invites (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created REAL NOT NULL,
    expires REAL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS viewer_sessions (
    token_hash BLOB PRIMARY KEY,
    invite_id TEXT NOT NULL REFERENCES invites(id) ON DELETE CASCADE,
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    model TEXT NOT NULL,
    firmware TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created REAL NOT NULL,
    last_seen REAL,
    revoked REAL
);
-- RFC 8628 device authorization requests. state: pending -> approved | denied; approved ->
-- issued once the device has collected its token (the code is then spent).
CREATE TABLE IF NOT EXISTS device_codes (
    code_hash BLOB PRIMARY KEY,
    user_code TEXT NOT NULL,
    device_id TEXT NOT NULL,
    model TEXT NOT NULL,
    firmware TEXT NOT NULL,
    address TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    interval REAL NOT NULL,
    last_poll REAL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'issued')),
    room_id TEXT REFERENCES rooms(id) ON DELETE CASCADE,
    decided_by INTEGER REFERENCES admins(id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS device_codes_user_code ON device_codes(user_code);
"""


def _create_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)  # an older file may have been created with a looser mode


def open_database(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open (creating if needed) and migrate. Raises StateError naming the file on failure."""
    file = Path(path)
    try:
        _create_private(file)
        conn = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open the room database {file}: {exc}") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        version = meta_get(conn, "schema_version")
        if version is None:
            meta_set(conn, "schema_version", str(SCHEMA_VERSION).encode())
        elif int(version) > SCHEMA_VERSION:
            raise StateError(f"{file} is from a newer version (schema {int(version)})")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StateError(f"{file} is not a usable room database: {exc}") from None
    return conn


def meta_get(conn: sqlite3.Connection, key: str) -> bytes | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else bytes(row[0])


def meta_set(conn: sqlite3.Connection, key: str, value: bytes) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def server_key(conn: sqlite3.Connection) -> bytes:
    """The service's own HMAC key (CSRF tokens), made once and kept in the 0600 database."""
    key = meta_get(conn, "server_key")
    if key is None:
        key = secrets.token_bytes(32)
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('server_key', ?)", (key,))
        key = meta_get(conn, "server_key")
        assert key is not None
    return key


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT: a check and the write it guards happen as one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        # Inside the try: a COMMIT that fails (busy, a deferred constraint, a full disk) leaves
        # the transaction open, and every later BEGIN would fail on this shared connection.
        conn.execute("COMMIT")
    except BaseException:
        # Some errors (SQLITE_FULL, an I/O error) roll back by themselves: a second ROLLBACK
        # would raise and hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
