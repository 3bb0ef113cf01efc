"""The embedded default store: one SQLite file in the data dir, no server to install.

Queries run on the shared L{chatd.store.worker.Worker}: one thread, FIFO, group commit; most
are the shared L{chatd.store.queries}. Those that touch ids are here: the Room gives out
ids, the store keeps them, and a floor in C{meta} remembers the highest id ever used, so ids
never go back even when every message has been purged or delivered.

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
from chatd.store import StoreError, queries
from chatd.store.queries import name_key
from chatd.store.schema import SQLITE, VERSION, migrate
from chatd.store.worker import Batch, Worker


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

    dialect = sys.modules[__name__]  # the queries below, the ones SQLite does its own way

    def __init__(self, conn: sqlite3.Connection, path: Path, reactor: Any) -> None:
        super().__init__(reactor)
        self._conn = conn
        self.path = path
        self.last_id = self._high_water(conn)
        self.account_names = queries.account_names(conn)

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


# The queries SQLite does its own way (chatd.store.queries has the rest): plain functions run
# on the worker thread inside a transaction, each named after the Store method that queues it.


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    migrate(conn, version, SQLITE, path)
    conn.execute(f"PRAGMA user_version = {VERSION}")


def add_message(conn: sqlite3.Connection, m: Message) -> Message:
    conn.execute(
        "INSERT INTO messages (id, time, sender, text, room) VALUES (?, ?, ?, ?, ?)",
        (m.id, m.time, m.sender, m.text, m.room),
    )
    return m


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
        (m.id, name_key(account), m.time, m.sender, m.to, m.text),
    )


def take_id(conn: sqlite3.Connection, proposed: int) -> int:
    """One node numbers alone: its proposal is free (the Room does not ask, L{shared_ids})."""
    return proposed


def take_whispers(conn: sqlite3.Connection, account: str) -> list[Message]:
    key = name_key(account)
    rows = conn.execute(
        "SELECT id, time, sender, text, recipient FROM whispers WHERE name_key = ? ORDER BY id",
        (key,),
    ).fetchall()
    _raise_floor(conn, "whispers", "name_key = ?", (key,))
    conn.execute("DELETE FROM whispers WHERE name_key = ?", (key,))
    return [Message(*row) for row in rows]
