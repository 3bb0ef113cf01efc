"""The cluster store: several chatd nodes share one PostgreSQL database.

Queries run with psycopg 3 on the shared L{chatd.store.worker.Worker} (one thread per node,
FIFO, group commit), so nothing blocks the reactor. Most are the shared
L{chatd.store.queries}, written with C{?} placeholders: this store's connections take them
(L{QmarkCursor}), and so does the SQL in this module.

Ids: the row C{meta.last_id} is the cluster's id counter. Each message or kept whisper takes
the next id by updating that row, which locks it until the transaction commits, so nodes take
ids one transaction at a time and ids become visible in id order: a node that reads id N
has seen every id below it, and catch-up by C{after_id} skips nothing. The Room proposes an
id; the store keeps it when no other node went past it (so one node numbers like SQLite)
and otherwise gives the next free one, which the returned message carries.

A lost connection fails the batch in flight with a L{StoreError} saying the database is
unreachable (the Room tells the user the message was not saved); the next batch connects
again, so the node recovers by itself once PostgreSQL is back.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from twisted.python.failure import Failure

from chatd.events import Message
from chatd.store import StoreError, queries
from chatd.store.queries import name_key
from chatd.store.schema import POSTGRES, VERSION, migrate
from chatd.store.worker import Batch, Worker

# libpq settings a URL may override: give up on an unreachable or silent server within
# seconds, rather than leave the worker (and every message queued behind it) waiting.
DEFAULTS = {
    "connect_timeout": 5,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
IDLE_IN_TRANSACTION = 30  # seconds; a batch never waits between its statements
MIGRATION_LOCK = 0x63686174  # advisory lock: nodes starting together migrate one at a time

# Takes the next id (see the module docstring); the row lock is held until commit.
NEXT_ID = "UPDATE meta SET value = GREATEST(value + 1, ?) WHERE key = 'last_id' RETURNING value"


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class PostgresStore(Worker):
    """L{chatd.store.Store} on PostgreSQL."""

    dialect = sys.modules[__name__]  # the queries below, the ones PostgreSQL does its own way

    def __init__(self, params: dict[str, Any], conn: psycopg.Connection[Any], reactor: Any):
        super().__init__(reactor)
        self._params = params
        self._conn: psycopg.Connection[Any] | None = conn
        self.where = _where(params)
        (self.last_id,) = conn.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchone()
        self.account_names = queries.account_names(conn)

    @classmethod
    def open(cls, url: str, reactor: Any) -> PostgresStore:
        """Connect, and create or migrate the schema; blocks, at start-up only."""
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as e:
            raise StoreError(f"storage_url is not a PostgreSQL URL: {_first_line(e)}") from None
        params = {**DEFAULTS, **params}
        conn = None
        try:
            conn = _connect(params)
            with conn.transaction():
                _migrate(conn, _where(params))
            return cls(params, conn, reactor)
        except psycopg.Error as e:
            if conn is not None:
                conn.close()
            raise _explain(_where(params), e) from None
        except StoreError:
            if conn is not None:
                conn.close()
            raise

    # -- the worker -------------------------------------------------------------------------

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _transaction(self, batch: Batch) -> list[Any]:
        results: list[Any] = []
        try:
            conn = self._begin()
            for op, args, _ in batch:
                try:
                    results.append(op(conn, *args))
                except psycopg.Error:
                    raise  # the transaction is aborted: nothing in it counts
                except Exception:
                    results.append(Failure())  # our own refusal (NameTaken): the rest goes on
            conn.execute("COMMIT")
        except psycopg.Error as e:
            failure = Failure(_explain(self.where, e))
            self._abandon()
            return [failure] * len(batch)
        return results

    def _begin(self) -> psycopg.Connection[Any]:
        """A connection in a new transaction. A connection that died while idle (a restart
        of PostgreSQL, a dropped backend) is replaced once, so no call fails because of it."""
        if self._conn is not None:
            try:
                self._conn.execute("BEGIN")
                return self._conn
            except psycopg.OperationalError:
                self._release()
        self._conn = _connect(self._params)
        self._conn.execute("BEGIN")
        return self._conn

    def _abandon(self) -> None:
        """After a failed batch: roll back, or drop a broken connection for the next batch."""
        if self._conn is None:
            return
        try:
            self._conn.execute("ROLLBACK")
        except psycopg.Error:
            self._conn.close()
            self._conn = None


class QmarkCursor(psycopg.Cursor[Any]):
    """Takes chatd's SQL, written with C{?} placeholders as SQLite wants them, so the queries
    both backends run are written once (L{chatd.store.queries}). Named parameters, which
    psycopg's own queries use, pass through as they are."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> QmarkCursor:
        if params is not None and not isinstance(params, Mapping):
            query = _pyformat(query)
        return super().execute(query, params, **kwargs)


@lru_cache(maxsize=64)
def _pyformat(query: str) -> str:
    """C{?} becomes psycopg's C{%s}, and a literal C{%} its C{%%}: every C{?} in chatd's SQL
    is a placeholder (none stands in a string literal)."""
    return query.replace("%", "%%").replace("?", "%s")


def _connect(params: dict[str, Any]) -> psycopg.Connection[Any]:
    """Autocommit mode: the worker says BEGIN and COMMIT itself, one transaction per batch.

    A node cut off in the middle of a batch holds the id counter's row lock, and every
    other node's messages wait for it, until PostgreSQL notices the dead connection (hours,
    by TCP keepalive); its transaction is ended after IDLE_IN_TRANSACTION instead.
    """
    conn = psycopg.connect(**params, autocommit=True, cursor_factory=QmarkCursor)
    conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}s'")
    return conn


def _where(params: dict[str, Any]) -> str:
    """The database for messages: the URL without its password."""
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{params.get('host', '')}{port}/{params.get('dbname', '')}"


def _explain(where: str, e: psycopg.Error) -> StoreError:
    if isinstance(e, psycopg.OperationalError):
        return StoreError(
            f"the database {where} is unreachable ({_first_line(e)}); is PostgreSQL running?"
        )
    return StoreError(f"the database {where} failed: {_first_line(e)}")


# The queries PostgreSQL does its own way (chatd.store.queries has the rest): plain functions
# run on the worker thread inside a transaction, each named after the Store method that
# queues it.


def _migrate(conn: psycopg.Connection[Any], where: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
    (meta,) = conn.execute("SELECT to_regclass('meta')").fetchone()
    version = 0
    if meta is not None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise StoreError(
                f"{where} has a table meta that is not chatd's; give chatd a database "
                "(or a schema, with options=-csearch_path=...) of its own"
            )
        (version,) = row
    migrate(conn, version, POSTGRES, where)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?), ('last_id', 0)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        " WHERE meta.key = 'schema_version'",
        (VERSION,),
    )


def add_message(conn: psycopg.Connection[Any], m: Message) -> Message:
    (m.id,) = conn.execute(
        f"WITH n AS ({NEXT_ID}) INSERT INTO messages (id, time, sender, text, room)"
        " SELECT value, ?, ?, ?, ? FROM n RETURNING id",
        (m.id, m.time, m.sender, m.text, m.room),
    ).fetchone()
    return m


def purge_messages(conn: psycopg.Connection[Any], before: float) -> int:
    """No floor to keep: C{meta.last_id} never goes back."""
    return conn.execute("DELETE FROM messages WHERE time < ?", (before,)).rowcount


def keep_whisper(conn: psycopg.Connection[Any], account: str, m: Message) -> None:
    (m.id,) = conn.execute(
        f"WITH n AS ({NEXT_ID}) INSERT INTO whispers"
        " (id, name_key, time, sender, recipient, text)"
        " SELECT value, ?, ?, ?, ?, ? FROM n RETURNING id",
        (m.id, name_key(account), m.time, m.sender, m.to, m.text),
    ).fetchone()


def take_whispers(conn: psycopg.Connection[Any], account: str) -> list[Message]:
    """Deleting and returning in one statement: with several nodes, each whisper goes to
    exactly one of them."""
    rows = conn.execute(
        "DELETE FROM whispers WHERE name_key = ? RETURNING id, time, sender, text, recipient",
        (name_key(account),),
    ).fetchall()
    return [Message(*row) for row in sorted(rows)]
