"""The cluster store: several chatd nodes share one PostgreSQL database.

Queries run with psycopg 3 on the shared L{chatd.store.worker.Worker} (one thread per node,
FIFO, group commit), so nothing blocks the reactor.

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
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from twisted.python.failure import Failure

from chatd.events import Message
from chatd.store import Account, NameTaken, StoreError
from chatd.store.schema import MIGRATIONS, POSTGRES, statements
from chatd.store.worker import Batch, Worker

# libpq settings a URL may override: give up on an unreachable or silent server within
# seconds, rather than leave the worker (and every message queued behind it) waiting.
DEFAULTS = {
    "connect_timeout": 5,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
MIGRATION_LOCK = 0x63686174  # advisory lock: nodes starting together migrate one at a time

# Takes the next id (see the module docstring); the row lock is held until commit.
NEXT_ID = "UPDATE meta SET value = GREATEST(value + 1, %s) WHERE key = 'last_id' RETURNING value"


def _key(name: str) -> str:
    return name.casefold()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class PostgresStore(Worker):
    """L{chatd.store.Store} on PostgreSQL."""

    queries = sys.modules[__name__]  # the functions below, one per Store method

    def __init__(self, params: dict[str, Any], conn: psycopg.Connection[Any], reactor: Any):
        super().__init__(reactor)
        self._params = params
        self._conn: psycopg.Connection[Any] | None = conn
        self.where = _where(params)
        (self.last_id,) = conn.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchone()
        self.account_names = [row[0] for row in conn.execute("SELECT name FROM accounts")]

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


def _connect(params: dict[str, Any]) -> psycopg.Connection[Any]:
    """Autocommit mode: the worker says BEGIN and COMMIT itself, one transaction per batch."""
    return psycopg.connect(**params, autocommit=True)


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


# Queries: plain functions run on the worker thread inside a transaction, each named after
# the Store method that queues it.


def _migrate(conn: psycopg.Connection[Any], where: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
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
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{where} has schema version {version}, newer than this chatd knows "
            f"({len(MIGRATIONS)}); run a newer chatd"
        )
    for statement in statements(version, POSTGRES):
        conn.execute(statement)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', %s), ('last_id', 0)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        " WHERE meta.key = 'schema_version'",
        (len(MIGRATIONS),),
    )


def add_message(conn: psycopg.Connection[Any], m: Message) -> Message:
    (m.id,) = conn.execute(
        f"WITH n AS ({NEXT_ID}) INSERT INTO messages (id, time, sender, text)"
        " SELECT value, %s, %s, %s FROM n RETURNING id",
        (m.id, m.time, m.sender, m.text),
    ).fetchone()
    return m


def messages(
    conn: psycopg.Connection[Any], after_id: int, through_id: int, since: float, limit: int
) -> list[Message]:
    rows = conn.execute(
        "SELECT id, time, sender, text FROM messages WHERE id > %s AND id <= %s AND time >= %s"
        " ORDER BY id DESC LIMIT %s",
        (after_id, through_id, since, limit),
    ).fetchall()
    return [Message(*row) for row in reversed(rows)]


def purge_messages(conn: psycopg.Connection[Any], before: float) -> int:
    return conn.execute("DELETE FROM messages WHERE time < %s", (before,)).rowcount


def keep_whisper(conn: psycopg.Connection[Any], account: str, m: Message) -> None:
    (m.id,) = conn.execute(
        f"WITH n AS ({NEXT_ID}) INSERT INTO whispers"
        " (id, name_key, time, sender, recipient, text)"
        " SELECT value, %s, %s, %s, %s, %s FROM n RETURNING id",
        (m.id, _key(account), m.time, m.sender, m.to, m.text),
    ).fetchone()


def take_whispers(conn: psycopg.Connection[Any], account: str) -> list[Message]:
    """Deleting and returning in one statement: with several nodes, each whisper goes to
    exactly one of them."""
    rows = conn.execute(
        "DELETE FROM whispers WHERE name_key = %s RETURNING id, time, sender, text, recipient",
        (_key(account),),
    ).fetchall()
    return [Message(*row) for row in sorted(rows)]


def create_account(
    conn: psycopg.Connection[Any],
    name: str,
    password_hash: str | None,
    token_hash: str,
    when: float,
    last_seen: int,
) -> None:
    created = conn.execute(
        "INSERT INTO accounts (name_key, name, password_hash, created, last_seen)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name_key) DO NOTHING",
        (_key(name), name, password_hash, when, last_seen),
    ).rowcount
    if not created:
        raise NameTaken(f"the name {name} belongs to an account already")
    add_token(conn, name, token_hash, when)


def account(conn: psycopg.Connection[Any], name: str) -> Account | None:
    row = conn.execute(
        "SELECT name, password_hash, last_seen FROM accounts WHERE name_key = %s", (_key(name),)
    ).fetchone()
    return Account(*row) if row else None


def account_for_token(conn: psycopg.Connection[Any], token_hash: str) -> Account | None:
    row = conn.execute(
        "SELECT a.name, a.password_hash, a.last_seen FROM tokens t"
        " JOIN accounts a ON a.name_key = t.name_key WHERE t.token_hash = %s",
        (token_hash,),
    ).fetchone()
    return Account(*row) if row else None


def add_token(conn: psycopg.Connection[Any], name: str, token_hash: str, when: float) -> None:
    conn.execute(
        "INSERT INTO tokens (token_hash, name_key, created) VALUES (%s, %s, %s)",
        (token_hash, _key(name), when),
    )


def set_last_seen(conn: psycopg.Connection[Any], name: str, message_id: int) -> None:
    conn.execute(
        "UPDATE accounts SET last_seen = GREATEST(last_seen, %s) WHERE name_key = %s",
        (message_id, _key(name)),
    )


def cache_get(conn: psycopg.Connection[Any], key: str) -> str | None:
    row = conn.execute("SELECT value FROM cache WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


def cache_put(conn: psycopg.Connection[Any], key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO cache (key, value) VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (key, value),
    )
