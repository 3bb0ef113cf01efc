"""Where chatd keeps what must survive a restart: messages, accounts, a key/value cache.

L{Store} is the interface the Room codes against; each backend is one module
(C{chatd.store.sqlite}, the default, and C{chatd.store.postgres} for a cluster). Every
method that touches the database returns a Deferred: backends run their I/O off the reactor
thread, in FIFO order, so a write is visible to every later read and messages are saved in
id order.

Opening a store is the exception: it happens once, before the reactor runs, so it may
block, and a database that cannot be used stops the server with a clear L{StoreError}.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.config import Config

if TYPE_CHECKING:
    from chatd.events import Message


ANY_ID = 2**63 - 1  # no upper bound on ids (the largest integer both databases store)


class StoreError(Exception):
    """The store cannot be opened or used; the message says what to do about it."""


class StoreUnavailable(StoreError):
    """The database did not answer (unreachable, or silent past the deadline): the call was
    not done, and the store logs the outage once, not per call."""


# What a user is told when a call they caused met a database outage (the L{StoreUnavailable}).
UNAVAILABLE = "the database is not answering right now; try again in a moment"


def log_failed(log: Logger, failure: Failure, what: str, **fields: object) -> Failure | None:
    """Log a failed store call: a traceback for a fault, nothing for an outage, which the
    store logs once when it starts and once when it ends (not once per call, with a
    traceback each: 80 in 10 s of an outage buried everything else in the log)."""
    if not failure.check(StoreUnavailable):
        log.failure(what, failure, **fields)
    return None


class NameTaken(StoreError):
    """An account with this name (in any letter case) exists already."""


@dataclass(frozen=True)
class Account:
    name: str
    password_hash: str | None  # None: a token-only account (minechat), no /login
    last_seen: int  # id of the last public message delivered while it was online
    rooms: tuple[str, ...] = ()  # the rooms it is in, rejoined at login


class Scheduled(NamedTuple):
    """A message an account asked to send later (C{/send -t}), kept over restarts."""

    id: int
    account: str
    due: float  # Unix time
    text: str
    to: str | None  # None: to everyone


class Store(Protocol):
    last_id: int  # highest message id ever given out, as read at open
    account_names: list[str]  # every account's name, as read at open
    # Whether other nodes take ids from this store too (PostgreSQL): then a whisper's id
    # comes from it (L{take_id}), since one this node counted may be another's message's.
    shared_ids: bool

    def start(self) -> None:
        """Start the worker that runs the queries (call with the reactor running or about to)."""

    def close(self) -> Deferred[None]:
        """Finish the queued work, then release the database."""

    # -- messages ---------------------------------------------------------------------------

    def add_message(self, message: Message) -> Deferred[Message]:
        """Save a public message; fires with it once it is durable, so it can be delivered."""

    def messages(
        self,
        after_id: int,
        through_id: int,
        since: float,
        limit: int,
        rooms: Collection[str] | None = None,
    ) -> Deferred[list[Message]]:
        """The newest C{limit} public messages with C{after_id < id <= through_id} and
        C{time >= since}, said in one of C{rooms} (None: any room), oldest first."""

    def purge_messages(self, before: float) -> Deferred[int]:
        """Forget public messages older than C{before}; fires with how many went."""

    def keep_whisper(self, account: str, message: Message) -> Deferred[None]:
        """Keep a private message for an account that is offline."""

    def take_id(self, proposed: int) -> Deferred[int]:
        """An id no message or whisper of any node has or will have: C{proposed}, unless
        another node went past it."""

    def take_whispers(self, account: str) -> Deferred[list[Message]]:
        """The private messages kept for C{account}, oldest first, and forget them."""

    # -- rooms ------------------------------------------------------------------------------

    def join_room(self, account: str, room: str) -> Deferred[None]:
        """The account is in C{room} (on every device, from its next login on)."""

    def part_room(self, account: str, room: str) -> Deferred[None]: ...

    def save_room(self, room: str, state: str) -> Deferred[None]:
        """Keep a room's state (JSON: owner, topic, invitations, kicks) under its key;
        an empty C{state} forgets the room."""

    def claim_room(self, room: str, state: str) -> Deferred[str]:
        """Keep a new room's state unless a state is kept for C{room} already; fires with
        the state kept now. Two nodes making one room at the same moment both claim it:
        the database keeps the first, and both learn who owns it."""

    def rooms(self) -> Deferred[list[str]]:
        """Every kept room's state (what L{save_room} was given)."""

    # -- accounts ---------------------------------------------------------------------------

    def create_account(
        self, name: str, password_hash: str | None, token_hash: str, when: float, last_seen: int
    ) -> Deferred[None]:
        """Create an account with its first token; fails with L{NameTaken}."""

    def read_account_names(self) -> Deferred[list[str]]:
        """Every account's name now (other nodes may have made some since open)."""

    def account(self, name: str) -> Deferred[Account | None]:
        """The account called C{name} in any letter case."""

    def account_for_token(self, token_hash: str) -> Deferred[Account | None]: ...

    def set_password_hash(self, name: str, password_hash: str) -> Deferred[None]:
        """Replace the account's password hash (a stronger one, at a successful login)."""

    def ping(self) -> Deferred[None]:
        """Fires once the database has answered a trivial query (the health check)."""

    def recovered(self) -> Deferred[None]:
        """Fires once the database answers again after the outage going on, at once when
        there is none: a writer that met L{StoreUnavailable} waits for it to write again."""

    def add_token(self, name: str, token_hash: str, when: float) -> Deferred[None]: ...

    def remove_token(self, token_hash: str) -> Deferred[None]:
        """The token no longer logs in (C{/logout})."""

    def set_last_seen(self, name: str, message_id: int) -> Deferred[None]: ...

    # -- scheduled messages: each node keeps its own (it sends them) --------------------------

    def save_scheduled(
        self, node: str, id: int, account: str, due: float, text: str, to: str | None
    ) -> Deferred[None]:
        """Keep (or replace) the node's scheduled message C{id}."""

    def drop_scheduled(self, node: str, id: int) -> Deferred[None]:
        """Forget it (sent or cancelled); nothing happens when it is not kept."""

    def scheduled(self, node: str) -> Deferred[list[Scheduled]]:
        """The node's scheduled messages, by id."""

    # -- cache (exchange rates) -------------------------------------------------------------

    def cache_get(self, key: str) -> Deferred[str | None]: ...

    def cache_put(self, key: str, value: str) -> Deferred[None]: ...


def open_store(config: Config, reactor: object) -> Store:
    """The backend C{config.storage_url} names: empty means SQLite in the data dir,
    C{postgresql://...} a PostgreSQL database that several nodes may share."""
    url = config.storage_url.strip()
    if not url:
        from chatd.store.sqlite import SQLiteStore

        return SQLiteStore.open(config.data_path / "chatd.sqlite3", reactor)
    scheme = url.partition(":")[0].lower()
    if scheme in ("postgresql", "postgres"):
        try:
            from chatd.store.postgres import PostgresStore
        except ImportError as e:
            raise StoreError(
                f"storage_url is PostgreSQL, but its driver is missing ({e}); "
                "install it with: pip install 'chatd[postgres]'"
            ) from None
        return PostgresStore.open(url, reactor, config.storage_timeout)
    raise StoreError(
        f"storage_url {scheme}:... is not supported; use postgresql://user@host/dbname, "
        "or leave it empty to use SQLite in the data dir"
    )
