"""The embedded default store: one SQLite file in the data dir, no server to install.

Queries run on the shared L{chatd.store.worker.Worker}: one thread, FIFO, group commit.

The file is in WAL mode with C{synchronous=NORMAL}: a commit is in the operating system's
hands before the message is delivered, so it survives the server being killed (not
necessarily a power cut). C{locking_mode=EXCLUSIVE} keeps a second chatd off the same file.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from twisted.python.failure import Failure

from chatd.events import Message
from chatd.store import Account, NameTaken, StoreError
from chatd.store.schema import MIGRATIONS, SQLITE, statements
from chatd.store.worker import Batch, Worker


def _key(name: str) -> str:
    return name.casefold()


def _explain(path: Path, e: sqlite3.Error) -> StoreError:
    text = str(e)
    if "locked" in text:
        return StoreError(
            f"the database {path} is locked: is another chatd using the data dir {path.parent}?"
        )
    if "not a database" in text or "malformed" in text:
        return StoreError(
            f"{path} is not a chatd database or is damaged ({text}); move it away to start "
            "with an empty one, or restore a backup"
        )
    return StoreError(f"cannot use the database {path}: {text}; is the data dir writable?")


class SQLiteStore(Worker):
    """L{chatd.store.Store} on SQLite."""

    queries = sys.modules[__name__]  # the functions below, one per Store method

    def __init__(self, conn: sqlite3.Connection, path: Path, reactor: Any) -> None:
        super().__init__(reactor)
        self._conn = conn
        self.path = path
        self.last_id = self._high_water(conn)
        self.account_names = [row[0] for row in conn.execute("SELECT name FROM accounts")]

    @classmethod
    def open(cls, path: Path, reactor: Any) -> SQLiteStore:
        """Open (creating and migrating as needed) the database; blocks, at start-up only."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the data dir {path.parent}: {e.strerror}") from None
        conn = None
        try:
            conn = sqlite3.connect(path, timeout=0.5, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            _migrate(conn, path)
            conn.execute("COMMIT")
            return cls(conn, path, reactor)
        except (sqlite3.Error, StoreError) as e:
            if conn is not None:
                conn.close()
            if isinstance(e, StoreError):
                raise
            raise _explain(path, e) from None

    @staticmethod
    def _high_water(conn: sqlite3.Connection) -> int:
        """Ids never go back, even when every message has been purged or delivered."""
        (floor,) = conn.execute("SELECT COALESCE(MAX(value), 0) FROM meta WHERE key = 'id_floor'")
        (messages,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages")
        (whispers,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM whispers")
        return max(floor[0], messages[0], whispers[0])

    # -- the worker -------------------------------------------------------------------------

    def _release(self) -> None:
        self._conn.close()

    def _transaction(self, batch: Batch) -> list[Any]:
        conn = self._conn
        results: list[Any] = []
        try:
            conn.execute("BEGIN")
            for op, args, _ in batch:
                try:
                    results.append(op(conn, *args))
                except Exception:
                    results.append(Failure())
            conn.execute("COMMIT")
        except sqlite3.Error:
            failure = Failure()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [failure] * len(batch)
        return results


# Queries: plain functions run on the worker thread inside a transaction, each named after
# the Store method that queues it.


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path} has schema version {version}, newer than this chatd knows "
            f"({len(MIGRATIONS)}); run a newer chatd"
        )
    for statement in statements(version, SQLITE):
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")


def add_message(conn: sqlite3.Connection, m: Message) -> Message:
    conn.execute(
        "INSERT INTO messages (id, time, sender, text) VALUES (?, ?, ?, ?)",
        (m.id, m.time, m.sender, m.text),
    )
    return m


def messages(
    conn: sqlite3.Connection, after_id: int, through_id: int, since: float, limit: int
) -> list[Message]:
    rows = conn.execute(
        "SELECT id, time, sender, text FROM messages WHERE id > ? AND id <= ? AND time >= ?"
        " ORDER BY id DESC LIMIT ?",
        (after_id, through_id, since, limit),
    ).fetchall()
    return [Message(*row) for row in reversed(rows)]


def _raise_floor(conn: sqlite3.Connection, table: str, where: str, args: tuple[Any, ...]) -> None:
    (top,) = conn.execute(f"SELECT MAX(id) FROM {table} WHERE {where}", args).fetchone()
    if top is not None:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('id_floor',"
            " MAX(?, COALESCE((SELECT value FROM meta WHERE key = 'id_floor'), 0)))",
            (top,),
        )


def purge_messages(conn: sqlite3.Connection, before: float) -> int:
    _raise_floor(conn, "messages", "time < ?", (before,))
    return conn.execute("DELETE FROM messages WHERE time < ?", (before,)).rowcount


def keep_whisper(conn: sqlite3.Connection, account: str, m: Message) -> None:
    conn.execute(
        "INSERT INTO whispers (id, name_key, time, sender, recipient, text)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (m.id, _key(account), m.time, m.sender, m.to, m.text),
    )


def take_whispers(conn: sqlite3.Connection, account: str) -> list[Message]:
    key = _key(account)
    rows = conn.execute(
        "SELECT id, time, sender, text, recipient FROM whispers WHERE name_key = ? ORDER BY id",
        (key,),
    ).fetchall()
    _raise_floor(conn, "whispers", "name_key = ?", (key,))
    conn.execute("DELETE FROM whispers WHERE name_key = ?", (key,))
    return [Message(*row) for row in rows]


def create_account(
    conn: sqlite3.Connection,
    name: str,
    password_hash: str | None,
    token_hash: str,
    when: float,
    last_seen: int,
) -> None:
    try:
        conn.execute(
            "INSERT INTO accounts (name_key, name, password_hash, created, last_seen)"
            " VALUES (?, ?, ?, ?, ?)",
            (_key(name), name, password_hash, when, last_seen),
        )
    except sqlite3.IntegrityError:
        raise NameTaken(f"the name {name} belongs to an account already") from None
    add_token(conn, name, token_hash, when)


def account(conn: sqlite3.Connection, name: str) -> Account | None:
    row = conn.execute(
        "SELECT name, password_hash, last_seen FROM accounts WHERE name_key = ?", (_key(name),)
    ).fetchone()
    return Account(*row) if row else None


def account_for_token(conn: sqlite3.Connection, token_hash: str) -> Account | None:
    row = conn.execute(
        "SELECT a.name, a.password_hash, a.last_seen FROM tokens t"
        " JOIN accounts a ON a.name_key = t.name_key WHERE t.token_hash = ?",
        (token_hash,),
    ).fetchone()
    return Account(*row) if row else None


def add_token(conn: sqlite3.Connection, name: str, token_hash: str, when: float) -> None:
    conn.execute(
        "INSERT INTO tokens (token_hash, name_key, created) VALUES (?, ?, ?)",
        (token_hash, _key(name), when),
    )


def set_last_seen(conn: sqlite3.Connection, name: str, message_id: int) -> None:
    conn.execute(
        "UPDATE accounts SET last_seen = MAX(last_seen, ?) WHERE name_key = ?",
        (message_id, _key(name)),
    )


def cache_get(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def cache_put(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO cache (key, value) VALUES (?, ?)", (key, value))
