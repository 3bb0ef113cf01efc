"""The query worker every backend shares: one thread, FIFO, group commit.

All queries run on one worker thread, in the order they were asked for. Work that queues up
while a transaction runs goes into the next one, so under load thousands of messages share
a commit and ids reach the database, and then the clients, in order. A backend says how to
run one batch in one transaction (L{Worker._transaction}), how to let go of the database,
and which module holds the queries it does its own way (L{Worker.dialect}); the
L{chatd.store.Store} methods are defined here once, each queueing the query of the same
name.

Deadline: a backend may give every call C{timeout} seconds from when it was asked for. A
call still waiting for its turn then is taken off the queue and fails with
L{StoreUnavailable}, so it will never run; a call in the transaction that is running fails
too, and the backend is told to break off that transaction (L{Worker._interrupt}), so the
database cannot commit it after the user was told it failed. The thread itself may stay
stuck a while longer (until the database or the operating system gives up), but no call
waits for it past its deadline. An outage is logged once when it starts and once when it
ends, not once per call. While it lasts, the worker asks the database every L{PROBE_EVERY}
seconds whether it answers, so its end is noticed (and what waits for it, L{Worker.recovered},
goes on) even when nobody uses the chat meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from queue import SimpleQueue
from types import ModuleType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.events import Message
from chatd.store import Account, Scheduled, StoreError, StoreUnavailable, log_failed, queries

Op = Callable[..., Any]
Batch = list[tuple[Op, tuple[Any, ...], Deferred[Any]]]
# What the worker thread is handed: run C{job(argument)}, then C{answer(result, argument)}
# on the reactor thread; None: stop.
Job = tuple[Callable[[Any], Any], Any, Callable[[Any, Any], object]] | None
log = Logger(namespace="chatd.store")

PROBE_EVERY = 2.0  # seconds between the pings that notice the end of an outage


class Worker:
    """Queues C{op(conn, *args)} calls and runs them in batches on a thread of its own."""

    # The backend's module with its own C{name(conn, *args)} for the Store methods that give
    # out or keep ids: add_message, purge_messages, keep_whisper, take_whispers. The other
    # Store methods run the queries in L{chatd.store.queries}, the same for every backend.
    dialect: ModuleType

    where = "(unnamed)"  # the database, in log lines
    shared_ids = False  # a database of one node: its own count of ids is the store's

    def __init__(self, reactor: Any, timeout: float | None = None) -> None:
        self._reactor = reactor
        # The hand-off to the worker thread: a plain queue there, reactor.callFromThread
        # back. Twisted's ThreadPool would cost a message about half again as much CPU
        # (its Team coordination, locks and log context per call), and one thread needs
        # none of that.
        self._jobs: SimpleQueue[Job] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._queue: Batch = []
        self._busy = False
        self._closed = False
        self._started_at = 0.0  # when the running batch went to the worker thread
        # For the metrics (chatd.metrics sets and reads these; the store imports none of it).
        self.errors = 0  # queries that failed (a refusal such as NameTaken counts too)
        self.observe_latency: Callable[[float], object] = lambda seconds: None
        self.timeout = timeout  # seconds a call may take; None: no limit
        self._deadlines: dict[Deferred[Any], float] = {}
        self._running: Batch = []  # the batch on the worker thread
        # Set when the running batch's deadline passed: the backend must not commit it.
        self._given_up = threading.Event()
        self._watchdog: IDelayedCall | None = None
        self._watching: Deferred[Any] | None = None  # the call whose deadline it is set for
        self._down: str | None = None  # the outage being logged, if any
        self._recovery: list[Deferred[None]] = []  # fired when the outage ends
        self._probe: IDelayedCall | None = None

    def _interrupt(self) -> None:
        """On the reactor thread: make the transaction in progress fail now, whatever it
        waits for (the backend knows how to break into its connection). The backend's
        L{_transaction} checks C{_given_up} too, so it does not go on (after reconnecting,
        say) with a batch whose callers were told it failed."""

    def _transaction(self, batch: Batch) -> list[Any]:
        """On the worker thread: run every op of C{batch} in one transaction; one result
        (or L{Failure}) per op, all failures if the transaction failed."""
        raise NotImplementedError

    def _release(self) -> None:
        """On the worker thread, after the last batch: close the connection."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the worker thread (calls queued before wait for it)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="chatd-store")
            self._thread.start()

    def close(self) -> Deferred[None]:
        """Finish everything queued, then let go of the database and stop the thread."""
        d = self._run(_nothing)  # fires once everything queued before it is done
        self._closed = True
        d.addBoth(lambda _: self._last())
        d.addBoth(self._stopped)
        return d

    def _last(self) -> Deferred[None]:
        """Release the connection on the worker thread, which then stops."""
        released: Deferred[None] = Deferred()

        def answer(result: Any, _: object) -> None:
            released.callback(result)  # a Failure errbacks

        self._jobs.put((lambda _: self._release(), None, answer))
        self._jobs.put(None)
        return released

    def _stopped(self, result: Any) -> Any:
        for call in (self._watchdog, self._probe):
            if call is not None and call.active():
                call.cancel()
        self.stop_thread()
        return result

    def stop_thread(self) -> None:
        """Stop the worker thread once it is done with what it was handed (at once, after
        L{close}); for a test that failed before it could close the store."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()

    def _work(self) -> None:
        """The worker thread: run what it is handed, in order, and hand back each result
        (or L{Failure}) to the reactor thread, until told to stop."""
        jobs = self._jobs
        answer = self._reactor.callFromThread
        while True:
            job = jobs.get()
            if job is None:
                return
            run, argument, then = job
            try:
                result = run(argument)
            except BaseException:
                result = Failure()
            answer(then, result, argument)

    def _run(self, op: Op, *args: Any) -> Deferred[Any]:
        """Queue C{op(conn, *args)}; it runs in the next transaction, after all queued before."""
        d: Deferred[Any] = Deferred()
        if self._closed:
            d.errback(StoreError("the store is closed"))
            return d
        self._queue.append((op, args, d))
        if self.timeout is not None:
            self._deadlines[d] = self._reactor.seconds() + self.timeout
        if not self._busy:
            self._next()
        self._arm()
        return d

    def _next(self) -> None:
        batch, self._queue = self._queue, []
        self._busy = True
        self._started_at = self._reactor.seconds()
        self._running = batch
        if self._given_up.is_set():  # an earlier batch was given up: this one is not
            self._given_up = threading.Event()
        self._jobs.put((self._transaction, batch, self._done))

    def _done(self, results: Any, batch: Batch) -> None:
        """Deliver a batch's results; its time, from the thread taking it to now, is observed
        once per batch (a commit is what a message waits for, however many share it)."""
        self._busy = False
        self.observe_latency(self._reactor.seconds() - self._started_at)
        self._running = []
        if self._queue:
            self._next()  # the worker starts on the next batch while this one is delivered
        if isinstance(results, Failure):
            results = [results] * len(batch)
        answered = False
        for (_, _, d), result in zip(batch, results, strict=True):
            self._deadlines.pop(d, None)
            if isinstance(result, Failure) and result.check(StoreUnavailable):
                self._unavailable(result.value)
            else:
                answered = True
            if d.called:
                continue  # failed at its deadline already
            if isinstance(result, Failure):
                self.errors += 1
                d.errback(result)
            else:
                d.callback(result)
        if answered:
            self._available()
        self._arm()

    # -- deadlines --------------------------------------------------------------------------

    def _arm(self) -> None:
        """Wake up at the earliest deadline of a call not answered yet (calls are queued in
        deadline order, and the running batch is older than the queue)."""
        if self.timeout is None:
            return  # no deadlines
        first = next((d for _, _, d in self._running if not d.called), None)
        if first is None and self._queue:
            first = self._queue[0][2]
        watchdog = self._watchdog
        if watchdog is not None and watchdog.active():
            if first is self._watching:
                return  # set for that call's deadline already
            watchdog.cancel()
        self._watchdog = self._watching = None
        if first is not None and first in self._deadlines:
            delay = max(0.0, self._deadlines[first] - self._reactor.seconds())
            self._watchdog = self._reactor.callLater(delay, self._overdue)
            self._watching = first

    def _overdue(self) -> None:
        self._watchdog = self._watching = None
        now = self._reactor.seconds()
        error = StoreUnavailable(
            f"the database {self.where} did not answer within {self.timeout:g} s; is it"
            " overloaded or stuck?"
        )
        late = [
            d for _, _, d in self._running if not d.called and self._deadlines.get(d, now) <= now
        ]
        if late:  # it must not commit what we now say failed
            self._given_up.set()
            self._interrupt()
        waiting = [call for call in self._queue if self._deadlines.get(call[2], now) <= now]
        self._queue = [call for call in self._queue if call not in waiting]
        if late or waiting:  # first: a caller told of the failure may wait for the outage's end
            self._unavailable(error)
        for d in late + [d for _, _, d in waiting]:
            self._deadlines.pop(d, None)
            d.errback(error)
        self._arm()

    # -- outages ----------------------------------------------------------------------------

    def recovered(self) -> Deferred[None]:
        """Fires once the database answers again after the outage going on (at once when
        there is none): what could not be written meanwhile can be written then."""
        d: Deferred[None] = Deferred()
        if self._down is None:
            d.callback(None)
        else:
            self._recovery.append(d)
        return d

    def _unavailable(self, error: BaseException) -> None:
        if self._down is None:
            self._down = str(error)
            log.error("{why}; calls fail until it answers again", why=error)
            self._probe_later()

    def _available(self) -> None:
        if self._down is not None:
            self._down = None
            log.info("the database {where} answers again", where=self.where)
            waiting, self._recovery = self._recovery, []
            for d in waiting:
                d.callback(None)

    def _probe_later(self) -> None:
        if not self._closed:
            self._probe = self._reactor.callLater(PROBE_EVERY, self._ask)

    def _ask(self) -> None:
        """During an outage: a ping, unless calls are on their way already (they will tell
        whether it answers, and pings must not pile up behind a database that hangs)."""
        self._probe = None
        if self._down is None or self._closed:
            return
        if not self._busy and not self._queue:
            pinged = self.ping()
            pinged.addErrback(lambda f: log_failed(log, f, "pinging the database failed"))
        self._probe_later()

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

    def claim_room(self, room: str, state: str) -> Deferred[str]:
        return self._run(queries.claim_room, room, state)

    def rooms(self) -> Deferred[list[str]]:
        return self._run(queries.rooms)

    def purge_messages(self, before: float) -> Deferred[int]:
        return self._run(self.dialect.purge_messages, before)

    def keep_whisper(self, account: str, message: Message) -> Deferred[None]:
        return self._run(self.dialect.keep_whisper, account, message)

    def take_id(self, proposed: int) -> Deferred[int]:
        return self._run(self.dialect.take_id, proposed)

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
