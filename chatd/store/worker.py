"""The query worker every backend shares: one thread, FIFO, group commit.

All queries run on one worker thread, in the order they were asked for. Work that queues up
while a transaction runs goes into the next one, so under load thousands of messages share
a commit and ids reach the database, and then the clients, in order. A backend says how to
run one batch in one transaction (L{Worker._transaction}), how to let go of the database,
and which module holds the queries it does its own way (L{Worker.dialect}); the
L{chatd.store.Store} methods are defined here once, each queueing the query of the same
name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from chatd.events import Message
from chatd.store import Account, Scheduled, StoreError, queries

Op = Callable[..., Any]
Batch = list[tuple[Op, tuple[Any, ...], Deferred[Any]]]


class Worker:
    """Queues C{op(conn, *args)} calls and runs them in batches on a thread of its own."""

    # The backend's module with its own C{name(conn, *args)} for the Store methods that give
    # out or keep ids: add_message, purge_messages, keep_whisper, take_whispers. The other
    # Store methods run the queries in L{chatd.store.queries}, the same for every backend.
    dialect: ModuleType

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="chatd-store")
        self._queue: Batch = []
        self._busy = False
        self._closed = False
        self._started_at = 0.0  # when the running batch went to the worker thread
        # For the metrics (chatd.metrics sets and reads these; the store imports none of it).
        self.errors = 0  # queries that failed (a refusal such as NameTaken counts too)
        self.observe_latency: Callable[[float], object] = lambda seconds: None

    def _transaction(self, batch: Batch) -> list[Any]:
        """On the worker thread: run every op of C{batch} in one transaction; one result
        (or L{Failure}) per op, all failures if the transaction failed."""
        raise NotImplementedError

    def _release(self) -> None:
        """On the worker thread, after the last batch: close the connection."""
        raise NotImplementedError

    def start(self) -> None:
        self._pool.start()

    def close(self) -> Deferred[None]:
        d = self._run(_nothing)  # fires once everything queued before it is done
        self._closed = True
        d.addBoth(lambda _: deferToThreadPool(self._reactor, self._pool, self._release))
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result: Any) -> Any:
        self._pool.stop()
        return result

    def _run(self, op: Op, *args: Any) -> Deferred[Any]:
        """Queue C{op(conn, *args)}; it runs in the next transaction, after all queued before."""
        d: Deferred[Any] = Deferred()
        if self._closed:
            d.errback(StoreError("the store is closed"))
            return d
        self._queue.append((op, args, d))
        if not self._busy:
            self._next()
        return d

    def _next(self) -> None:
        batch, self._queue = self._queue, []
        self._busy = True
        self._started_at = self._reactor.seconds()
        work = deferToThreadPool(self._reactor, self._pool, self._transaction, batch)
        work.addBoth(self._done, batch)

    def _done(self, results: Any, batch: Batch) -> None:
        """Deliver a batch's results; its time, from the thread taking it to now, is observed
        once per batch (a commit is what a message waits for, however many share it)."""
        self._busy = False
        self.observe_latency(self._reactor.seconds() - self._started_at)
        if self._queue:
            self._next()  # the worker starts on the next batch while this one is delivered
        if isinstance(results, Failure):
            results = [results] * len(batch)
        for (_, _, d), result in zip(batch, results, strict=True):
            if isinstance(result, Failure):
                self.errors += 1
                d.errback(result)
            else:
                d.callback(result)

    # -- the Store methods: each queues the query of the same name ---------------------------

    def add_message(self, message: Message) -> Deferred[Message]:
        return self._run(self.dialect.add_message, message)

    def messages(
        self,
        after_id: int,
        through_id: int,
        since: float,
        limit: int,
        rooms: Collection[str] | None = None,
    ) -> Deferred[list[Message]]:
        picked = None if rooms is None else tuple(rooms)
        return self._run(queries.messages, after_id, through_id, since, limit, picked)

    def join_room(self, account: str, room: str) -> Deferred[None]:
        return self._run(queries.join_room, account, room)

    def part_room(self, account: str, room: str) -> Deferred[None]:
        return self._run(queries.part_room, account, room)

    def save_room(self, room: str, state: str) -> Deferred[None]:
        return self._run(queries.save_room, room, state)

    def rooms(self) -> Deferred[list[str]]:
        return self._run(queries.rooms)

    def purge_messages(self, before: float) -> Deferred[int]:
        return self._run(self.dialect.purge_messages, before)

    def keep_whisper(self, account: str, message: Message) -> Deferred[None]:
        return self._run(self.dialect.keep_whisper, account, message)

    def take_whispers(self, account: str) -> Deferred[list[Message]]:
        return self._run(self.dialect.take_whispers, account)

    def create_account(
        self, name: str, password_hash: str | None, token_hash: str, when: float, last_seen: int
    ) -> Deferred[None]:
        return self._run(queries.create_account, name, password_hash, token_hash, when, last_seen)

    def account(self, name: str) -> Deferred[Account | None]:
        return self._run(queries.account, name)

    def read_account_names(self) -> Deferred[list[str]]:
        return self._run(queries.account_names)

    def set_password_hash(self, name: str, password_hash: str) -> Deferred[None]:
        return self._run(queries.set_password_hash, name, password_hash)

    def ping(self) -> Deferred[None]:
        return self._run(queries.ping)

    def account_for_token(self, token_hash: str) -> Deferred[Account | None]:
        return self._run(queries.account_for_token, token_hash)

    def add_token(self, name: str, token_hash: str, when: float) -> Deferred[None]:
        return self._run(queries.add_token, name, token_hash, when)

    def remove_token(self, token_hash: str) -> Deferred[None]:
        return self._run(queries.remove_token, token_hash)

    def set_last_seen(self, name: str, message_id: int) -> Deferred[None]:
        return self._run(queries.set_last_seen, name, message_id)

    def save_scheduled(
        self, node: str, id: int, account: str, due: float, text: str, to: str | None
    ) -> Deferred[None]:
        return self._run(queries.save_scheduled, node, id, account, due, text, to)

    def drop_scheduled(self, node: str, id: int) -> Deferred[None]:
        return self._run(queries.drop_scheduled, node, id)

    def scheduled(self, node: str) -> Deferred[list[Scheduled]]:
        return self._run(queries.scheduled, node)

    def cache_get(self, key: str) -> Deferred[str | None]:
        return self._run(queries.cache_get, key)

    def cache_put(self, key: str, value: str) -> Deferred[None]:
        return self._run(queries.cache_put, key, value)


def _nothing(conn: object) -> None:
    pass
