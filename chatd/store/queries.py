"""The queries both backends run, written once.

Each is a plain function run on the worker thread inside the batch's transaction, named
after the L{chatd.store.Store} method that queues it. The SQL is what SQLite and PostgreSQL
both understand: upserts are C{INSERT ... ON CONFLICT} (SQLite has it since 3.24), and
placeholders are C{?}, which the PostgreSQL store's connections take as well (see
L{chatd.store.postgres.QmarkCursor}). Only the queries that give out or keep ids differ;
each backend module has its own (L{chatd.store.worker.Worker.dialect}).
"""

from __future__ import annotations

from typing import Any, Protocol

from chatd.events import Message
from chatd.store import Account, NameTaken, Scheduled


class Connection(Protocol):
    """What a query needs of a C{sqlite3} or C{psycopg} connection."""

    def execute(self, sql: str, params: tuple[Any, ...] = ..., /) -> Any: ...


def name_key(name: str) -> str:
    """Accounts are found by name in any letter case."""
    return name.casefold()


def account_names(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT name FROM accounts")]


def messages(
    conn: Connection,
    after_id: int,
    through_id: int,
    since: float,
    limit: int,
    rooms: tuple[str, ...] | None = None,
) -> list[Message]:
    if rooms == ():
        return []
    where = "" if rooms is None else f" AND room IN ({', '.join('?' * len(rooms))})"
    rows = conn.execute(
        "SELECT id, time, sender, text, room FROM messages"
        f" WHERE id > ? AND id <= ? AND time >= ?{where} ORDER BY id DESC LIMIT ?",
        (after_id, through_id, since, *(rooms or ()), limit),
    ).fetchall()
    return [Message(i, t, s, x, room=r) for i, t, s, x, r in reversed(rows)]


def join_room(conn: Connection, account: str, room: str) -> None:
    conn.execute(
        "INSERT INTO memberships (name_key, room) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (name_key(account), room),
    )


def part_room(conn: Connection, account: str, room: str) -> None:
    conn.execute(
        "DELETE FROM memberships WHERE name_key = ? AND room = ?", (name_key(account), room)
    )


def save_room(conn: Connection, room: str, state: str) -> None:
    if not state:
        conn.execute("DELETE FROM rooms WHERE room_key = ?", (room,))
        return
    conn.execute(
        "INSERT INTO rooms (room_key, state) VALUES (?, ?)"
        " ON CONFLICT (room_key) DO UPDATE SET state = excluded.state",
        (room, state),
    )


def claim_room(conn: Connection, room: str, state: str) -> str:
    conn.execute(
        "INSERT INTO rooms (room_key, state) VALUES (?, ?) ON CONFLICT (room_key) DO NOTHING",
        (room, state),
    )
    row = conn.execute("SELECT state FROM rooms WHERE room_key = ?", (room,)).fetchone()
    return str(row[0])


def rooms(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT state FROM rooms ORDER BY room_key")]


def _with_rooms(conn: Connection, row: Any) -> Account | None:
    if not row:
        return None
    found = conn.execute(
        "SELECT room FROM memberships WHERE name_key = ? ORDER BY room", (name_key(row[0]),)
    ).fetchall()
    return Account(*row, rooms=tuple(r[0] for r in found))


def create_account(
    conn: Connection,
    name: str,
    password_hash: str | None,
    token_hash: str,
    when: float,
    last_seen: int,
) -> None:
    """A taken name is refused without an SQL error, so the rest of the batch goes on."""
    created = conn.execute(
        "INSERT INTO accounts (name_key, name, password_hash, created, last_seen)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name_key) DO NOTHING",
        (name_key(name), name, password_hash, when, last_seen),
    ).rowcount
    if not created:
        raise NameTaken(f"the name {name} belongs to an account already")
    add_token(conn, name, token_hash, when)


def account(conn: Connection, name: str) -> Account | None:
    row = conn.execute(
        "SELECT name, password_hash, last_seen FROM accounts WHERE name_key = ?",
        (name_key(name),),
    ).fetchone()
    return _with_rooms(conn, row)


def set_password_hash(conn: Connection, name: str, password_hash: str) -> None:
    conn.execute(
        "UPDATE accounts SET password_hash = ? WHERE name_key = ?", (password_hash, name_key(name))
    )


def ping(conn: Connection) -> None:
    """A round trip to the database: the health check's question."""
    conn.execute("SELECT 1").fetchone()


def account_for_token(conn: Connection, token_hash: str) -> Account | None:
    row = conn.execute(
        "SELECT a.name, a.password_hash, a.last_seen FROM tokens t"
        " JOIN accounts a ON a.name_key = t.name_key WHERE t.token_hash = ?",
        (token_hash,),
    ).fetchone()
    return _with_rooms(conn, row)


def add_token(conn: Connection, name: str, token_hash: str, when: float) -> None:
    conn.execute(
        "INSERT INTO tokens (token_hash, name_key, created) VALUES (?, ?, ?)",
        (token_hash, name_key(name), when),
    )


def remove_token(conn: Connection, token_hash: str) -> None:
    conn.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))


def set_last_seen(conn: Connection, name: str, message_id: int) -> None:
    """Never moves back: a device that was away longer may report an older id."""
    conn.execute(
        "UPDATE accounts SET last_seen = ? WHERE name_key = ? AND last_seen < ?",
        (message_id, name_key(name), message_id),
    )


def cache_get(conn: Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def cache_put(conn: Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO cache (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def save_scheduled(
    conn: Connection, node: str, id: int, account: str, due: float, text: str, to: str | None
) -> None:
    conn.execute(
        "INSERT INTO scheduled (node, id, account, due, text, recipient)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node, id) DO UPDATE SET"
        " account = excluded.account, due = excluded.due, text = excluded.text,"
        " recipient = excluded.recipient",
        (node, id, account, due, text, to),
    )


def drop_scheduled(conn: Connection, node: str, id: int) -> None:
    conn.execute("DELETE FROM scheduled WHERE node = ? AND id = ?", (node, id))


def scheduled(conn: Connection, node: str) -> list[Scheduled]:
    rows = conn.execute(
        "SELECT id, account, due, text, recipient FROM scheduled WHERE node = ? ORDER BY id",
        (node,),
    ).fetchall()
    return [Scheduled(*row) for row in rows]
