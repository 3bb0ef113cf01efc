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

A lost connection fails the batch in flight with a L{StoreUnavailable} saying the database
is unreachable (the Room tells the user the message was not saved); the next batch connects
again, so the node recovers by itself once PostgreSQL is back.

Deadline (C{[storage] timeout}): a server that stops answering with the connection still
open (frozen, overloaded, or a statement waiting for a lock) must not leave everyone
waiting in silence. The worker fails every call still unanswered at its deadline
(L{chatd.store.worker}); PostgreSQL ends a statement running that long itself
(C{statement_timeout}), and libpq gives up on a connection attempt or a dead link just as
soon (C{connect_timeout}, C{tcp_user_timeout}, keepalives). A server that is merely
frozen answers none of that, so at the deadline the worker shuts down the connection's
socket from the reactor thread (L{PostgresStore._interrupt}): libpq, blocked reading it on
the worker thread, fails at once, the transaction is never committed, and the next batch
connects again. C{connection.cancel()} would not do: it asks the same silent server, over
a new connection. One case stays in doubt: if the deadline passes after COMMIT was sent,
the server may still commit it when it wakes; the user was told it failed, so a message
may then be in history that its sender sent again.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from twisted.python.failure import Failure

from chatd.events import Message
from chatd.store import StoreError, StoreUnavailable, queries
from chatd.store.queries import name_key
from chatd.store.schema import POSTGRES, VERSION, migrate
from chatd.store.worker import Batch, Worker

TIMEOUT = 5.0  # seconds a call may take, by default ([storage] timeout)


def _defaults(timeout: float) -> dict[str, Any]:
    """libpq settings a URL may override: give up on an unreachable or silent server within
    the deadline, rather than leave the worker (and every message queued behind it) waiting.
    """
    return {
        "connect_timeout": max(2, math.ceil(timeout)),  # libpq's minimum is 2
        "tcp_user_timeout": max(1, int(timeout * 1000)),  # ms unacknowledged data may wait
        "keepalives_idle": max(1, math.ceil(timeout)),
        "keepalives_interval": max(1, math.ceil(timeout / 3)),
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
    shared_ids = True  # every node takes ids from meta.last_id

    def __init__(
        self,
        params: dict[str, Any],
        conn: psycopg.Connection[Any],
        reactor: Any,
        timeout: float = TIMEOUT,
    ):
        super().__init__(reactor, timeout)
        self._params = params
        self._conn: psycopg.Connection[Any] | None = conn
        self.where = _where(params)  # the URL without its password
        (self.last_id,) = conn.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchone()
        self.account_names = queries.account_names(conn)

    @classmethod
    def open(cls, url: str, reactor: Any, timeout: float = TIMEOUT) -> PostgresStore:
        """Connect, and create or migrate the schema; blocks, at start-up only."""
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as e:
            raise StoreError(f"storage_url is not a PostgreSQL URL: {_first_line(e)}") from None
        params = {**_defaults(timeout), **params}
        if "statement_timeout" not in params.get("options", ""):  # the URL's wins
            # PostgreSQL ends a statement that runs (or waits for a lock) past the deadline.
            params["options"] = (
                f"{params.get('options', '')} -c statement_timeout={int(timeout * 1000)}"
            )
        conn = None
        try:
            conn = _connect(params)
            with conn.transaction():
                # A migration may take long, or wait for another node's: no deadline at start.
                conn.execute("SET LOCAL statement_timeout = 0")
                _migrate(conn, _where(params))
            return cls(params, conn, reactor, timeout)
        except psycopg.Error as e:
            if conn is not None:
                conn.close()
            raise _explain(_where(params), e) from None
        except StoreError:
            if conn is not None:
                conn.close()
            raise

    # -- the worker -------------------------------------------------------------------------

    def _interrupt(self) -> None:
        """Shut down the socket of the connection in use: the worker thread's read or write
        on it fails now, and a transaction broken off this way is never committed. A
        shutdown, not a close: the descriptor stays libpq's until it closes it itself."""
        conn = self._conn
        if conn is None:
            return  # connecting: connect_timeout bounds that
        try:
            fd = conn.pgconn.socket
            sock = socket.socket(fileno=os.dup(fd))
        except (psycopg.Error, OSError):
            return  # closed meanwhile: the thread is not waiting on it
        with sock:
            try:
                # The descriptor may have been closed and reused in between: only a
                # connection to the database's port is ours to cut.
                peer = sock.getpeername()
                if isinstance(peer, tuple):  # TCP: (address, port, ...)
                    ours = peer[1] == conn.info.port
                else:  # a Unix socket: its path is in the directory libpq was given
                    ours = str(peer).startswith(str(conn.info.host))
                if ours:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, psycopg.Error):
                pass

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _transaction(self, batch: Batch) -> list[Any]:
        results: list[Any] = []
        given_up = self._given_up  # this batch's: the next batch gets its own
        try:
            conn = self._begin(given_up)
            for op, args, _ in batch:
                _go_on(given_up)
                try:
                    results.append(op(conn, *args))
                except psycopg.Error:
                    raise  # the transaction is aborted: nothing in it counts
                except Exception:
                    results.append(Failure())  # our own refusal (NameTaken): the rest goes on
            _go_on(given_up)
            conn.execute("COMMIT")
        except psycopg.Error as e:
            failure = Failure(_explain(self.where, e))
            self._abandon()
            return [failure] * len(batch)
        return results

    def _begin(self, given_up: threading.Event) -> psycopg.Connection[Any]:
        """A connection in a new transaction. A connection that died while idle (a restart
        of PostgreSQL, a dropped backend) is replaced once, so no call fails because of it."""
        if self._conn is not None:
            try:
                self._conn.execute("BEGIN")
                return self._conn
            except psycopg.OperationalError:
                self._release()
        _go_on(given_up)
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


def _go_on(given_up: threading.Event) -> None:
    """Raise (so the transaction is rolled back) if the batch's deadline passed meanwhile."""
    if given_up.is_set():
        raise psycopg.OperationalError("the deadline passed; rolled back")


def _where(params: dict[str, Any]) -> str:
    """The database for messages: the URL without its password."""
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{params.get('host', '')}{port}/{params.get('dbname', '')}"


def _explain(where: str, e: psycopg.Error) -> StoreError:
    if isinstance(e, psycopg.errors.QueryCanceled):  # statement_timeout
        return StoreUnavailable(f"the database {where} is too slow ({_first_line(e)})")
    if isinstance(e, psycopg.OperationalError):
        return StoreUnavailable(
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


def take_id(conn: psycopg.Connection[Any], proposed: int) -> int:
    """The next id of the cluster's one counter, for a whisper (see L{keep_whisper})."""
    (value,) = conn.execute(NEXT_ID, (proposed,)).fetchone()
    return int(value)


def take_whispers(conn: psycopg.Connection[Any], account: str) -> list[Message]:
    """Deleting and returning in one statement: with several nodes, each whisper goes to
    exactly one of them."""
    rows = conn.execute(
        "DELETE FROM whispers WHERE name_key = ? RETURNING id, time, sender, text, recipient",
        (name_key(account),),
    ).fetchall()
    return [Message(*row) for row in sorted(rows)]
