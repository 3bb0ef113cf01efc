"""The schema every backend creates, as forward migrations written once for all of them.

The SQL is the same on SQLite and PostgreSQL except for two column types, so statements
name them as C{{int}} (ids and counters) and C{{real}} (Unix times) and each backend fills
in its own: PostgreSQL's INTEGER and REAL are too small for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatd.store import StoreError

if TYPE_CHECKING:
    from chatd.store.queries import Connection

SCHEDULED_KEY = "scheduled-messages"  # where versions 1 kept them: one JSON blob per node


def _scheduled_rows(conn: Connection) -> None:
    """Version 1 kept each node's scheduled messages as one JSON list in the cache (key
    C{scheduled-messages}, or C{scheduled-messages:<node>}): they become rows."""
    rows = conn.execute(
        "SELECT key, value FROM cache WHERE key = ? OR key LIKE ?",
        (SCHEDULED_KEY, SCHEDULED_KEY + ":%"),
    ).fetchall()
    for key, value in rows:
        node = key.partition(":")[2]
        for e in json.loads(value):
            conn.execute(
                "INSERT INTO scheduled (node, id, account, due, text, recipient)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node, id) DO NOTHING",
                (node, e["id"], e["account"], e["due"], e["text"], e["to"]),
            )
        conn.execute("DELETE FROM cache WHERE key = ?", (key,))


# MIGRATIONS[n] takes a database from schema version n to n + 1: SQL statements, or a
# function for what SQL alone cannot say the same way on both databases.
MIGRATIONS: list[list[str | Callable[[Connection], None]]] = [
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value {int} NOT NULL)",
        "CREATE TABLE messages (id {int} PRIMARY KEY, time {real} NOT NULL,"
        " sender TEXT NOT NULL, text TEXT NOT NULL)",
        "CREATE INDEX messages_time ON messages (time)",
        "CREATE TABLE accounts (name_key TEXT PRIMARY KEY, name TEXT NOT NULL,"
        " password_hash TEXT, created {real} NOT NULL, last_seen {int} NOT NULL)",
        "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY,"
        " name_key TEXT NOT NULL REFERENCES accounts (name_key), created {real} NOT NULL)",
        "CREATE TABLE whispers (id {int} PRIMARY KEY, name_key TEXT NOT NULL,"
        " time {real} NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,"
        " text TEXT NOT NULL)",
        "CREATE INDEX whispers_name ON whispers (name_key)",
        "CREATE TABLE cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    [
        # One row per scheduled message, written and dropped one at a time (/send -t).
        "CREATE TABLE scheduled (node TEXT NOT NULL, id {int} NOT NULL,"
        " account TEXT NOT NULL, due {real} NOT NULL, text TEXT NOT NULL, recipient TEXT,"
        " PRIMARY KEY (node, id))",
        _scheduled_rows,
    ],
    [
        # Rooms: each message is said in one; those from before rooms are the default's.
        "ALTER TABLE messages ADD COLUMN room TEXT NOT NULL DEFAULT '#lobby'",
        "CREATE INDEX messages_room ON messages (room, id)",
        # The rooms an account is in, rejoined on every device at login.
        "CREATE TABLE memberships (name_key TEXT NOT NULL, room TEXT NOT NULL,"
        " PRIMARY KEY (name_key, room))",
        # Rooms that outlive their members (owned ones): who owns them and their rules.
        "CREATE TABLE rooms (room_key TEXT PRIMARY KEY, state TEXT NOT NULL)",
    ],
]

VERSION = len(MIGRATIONS)  # the schema version this chatd creates

SQLITE = {"int": "INTEGER", "real": "REAL"}  # INTEGER PRIMARY KEY is SQLite's 64-bit rowid
POSTGRES = {"int": "BIGINT", "real": "DOUBLE PRECISION"}


def migrate(conn: Connection, version: int, types: dict[str, str], where: object) -> None:
    """Take the database C{where} from schema C{version} to L{VERSION}; refuse a newer one,
    which this chatd would misread. The backend records the new version itself."""
    if version > VERSION:
        raise StoreError(
            f"{where} has schema version {version}, newer than this chatd knows "
            f"({VERSION}); run a newer chatd"
        )
    for step in MIGRATIONS[version:]:
        for statement in step:
            if callable(statement):
                statement(conn)
            else:
                conn.execute(statement.format(**types))
