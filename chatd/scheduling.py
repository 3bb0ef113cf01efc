"""Messages people asked to send later (C{/send -t}): kept per owner, on the clock,
cancellable, and an account's kept over restarts.

L{Schedule} only keeps time; L{Scheduler} also keeps accounts' entries in the store, one
row each (written and dropped one at a time, on the store's thread), and hands each due
entry to the C{send} it was built with, so this file knows nothing about rooms or doors.
A guest's entries cannot outlive the guest: they are dropped when it goes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd.errors import CommandError
from chatd.ratelimit import duration
from chatd.store import StoreUnavailable, log_failed

log = Logger(namespace="chatd.scheduling")
MAX_DELAY = 24 * 3600  # seconds ahead a message may be scheduled
MAX_PENDING = 10  # scheduled messages one owner may have waiting


class Pending:
    """One scheduled message.

    @ivar owner: C{("account", name)} for an account (saved over restarts), else any key.
    """

    __slots__ = ("id", "owner", "due", "text", "to", "call", "late")

    def __init__(self, id: int, owner: Hashable, due: float, text: str, to: str | None) -> None:
        self.id = id
        self.owner = owner
        self.due = due
        self.text = text
        self.to = to
        self.call: Any = None  # the IDelayedCall that sends it
        self.late = False  # it fell due while the server was down

    def describe(self, now: float) -> str:
        to = f"to {self.to}" if self.to else "to everyone"
        return f"#{self.id} in {duration(self.due - now)} {to}: {self.text}"


class Schedule:
    """Every owner's pending messages, in the order they were scheduled."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._ids = itertools.count(1)
        self._pending: dict[Hashable, list[Pending]] = {}

    def add(
        self,
        owner: Hashable,
        delay: float,
        text: str,
        to: str | None,
        send: Callable[[Pending], Any],
    ) -> Pending:
        """Call C{send(entry)} in C{delay} seconds unless it is cancelled first."""
        if not 1 <= delay <= MAX_DELAY:
            raise CommandError(f"the delay is 1 to {MAX_DELAY} seconds")
        if len(self._pending.get(owner, ())) >= MAX_PENDING:
            raise CommandError(
                f"you already have {MAX_PENDING} scheduled messages; "
                "/scheduled lists them, /cancel cancels the last"
            )
        entry = Pending(next(self._ids), owner, self.clock.seconds() + delay, text, to)
        self._arm(entry, send)
        return entry

    def _arm(self, entry: Pending, send: Callable[[Pending], Any]) -> None:
        delay = max(0.0, entry.due - self.clock.seconds())
        entry.call = self.clock.callLater(delay, self._due, entry, send)
        self._pending.setdefault(entry.owner, []).append(entry)

    def restore(self, rows: list[Any], send: Callable[[Pending], Any]) -> int:
        """Schedule again the saved rows (id, account, due, text, to) of accounts' entries;
        those already due go at once, marked late. Returns how many were restored."""
        now = self.clock.seconds()
        rows = sorted(rows, key=lambda r: r.id)
        for r in rows:
            entry = Pending(r.id, ("account", r.account), r.due, r.text, r.to)
            entry.late = entry.due < now
            self._arm(entry, send)
        if rows:
            self._ids = itertools.count(rows[-1].id + 1)
        return len(rows)

    def _due(self, entry: Pending, send: Callable[[Pending], Any]) -> None:
        self._drop(entry)
        send(entry)

    def cancel(self, owner: Hashable, id: int | None = None) -> Pending:
        """Cancel the owner's message C{id}, or the last one they scheduled."""
        mine = self._pending.get(owner)
        if not mine:
            raise CommandError("you have no scheduled messages")
        if id is None:
            entry = mine[-1]
        else:
            entry = next((e for e in mine if e.id == id), None)
            if entry is None:
                raise CommandError(f"you have no scheduled message #{id}; /scheduled lists yours")
        entry.call.cancel()
        self._drop(entry)
        return entry

    def drop_owner(self, owner: Hashable) -> list[Pending]:
        """Cancel all of C{owner}'s messages: they can never be sent (a guest who left)."""
        entries = self._pending.pop(owner, [])
        for entry in entries:
            entry.call.cancel()
        return entries

    def pending(self, owner: Hashable) -> list[Pending]:
        return list(self._pending.get(owner, ()))

    def _drop(self, entry: Pending) -> None:
        mine = self._pending[entry.owner]
        mine.remove(entry)
        if not mine:
            del self._pending[entry.owner]


def account_of(owner: Hashable) -> str | None:
    """The account an entry belongs to, or None for a guest's."""
    if isinstance(owner, tuple) and owner[0] == "account":
        return str(owner[1])
    return None


class Scheduler:
    """The node's scheduled messages: a L{Schedule} whose accounts' entries are saved.

    Each node of a cluster keeps (and sends) its own: the store is shared.

    @param send: called with each entry when it falls due (also those that fell due while
        the server was down, at start-up).
    """

    def __init__(
        self, clock: IReactorTime, store: Any, node: str, send: Callable[[Pending], Any]
    ) -> None:
        self.clock = clock
        self.store = store
        self.node = node
        self.send = send
        self.schedule = Schedule(clock)

    def add(
        self,
        owner: Hashable,
        delay: float,
        text: str,
        to: str | None,
        unsaved: Callable[[str], object] = lambda why: None,
    ) -> Pending:
        """Schedule C{text}; an account's is saved too, and C{unsaved} is called with what
        to tell its author if that fails (it is still sent, unless this node restarts)."""
        entry = self.schedule.add(owner, delay, text, to, self._due)
        account = account_of(owner)
        if account is not None:

            def failed(failure: Any) -> None:
                log_failed(log, failure, "saving scheduled message #{id} failed", id=entry.id)
                why = "the database is not answering" if failure.check(StoreUnavailable) else ""
                unsaved(
                    f"scheduled message #{entry.id} could not be saved"
                    + (f" ({why})" if why else "")
                    + ": it is still sent when due, unless this server restarts first"
                )

            d = self.store.save_scheduled(self.node, entry.id, account, entry.due, text, to)
            d.addErrback(failed)
        return entry

    def cancel(self, owner: Hashable, id: int | None = None) -> Pending:
        entry = self.schedule.cancel(owner, id)
        self._forget(entry)
        return entry

    def pending(self, owner: Hashable) -> list[Pending]:
        return self.schedule.pending(owner)

    def drop_owner(self, owner: Hashable) -> list[Pending]:
        """Cancel what C{owner} (a guest that went) scheduled: nobody else can send it."""
        return self.schedule.drop_owner(owner)

    def restore(self) -> defer.Deferred[Any]:
        """At start-up: schedule again the accounts' messages saved before a restart."""

        def restore(rows: list[Any]) -> None:
            n = self.schedule.restore(rows, self._due)
            if n:
                log.info("{n} scheduled messages restored", n=n)

        d = self.store.scheduled(self.node).addCallback(restore)

        def failed(failure: Any) -> None:
            if failure.check(StoreUnavailable):
                log.warn("scheduled messages not restored: {e}", e=failure.getErrorMessage())
            else:
                log.failure("restoring the scheduled messages failed", failure)

        return d.addErrback(failed)

    def _due(self, entry: Pending) -> None:
        self._forget(entry)  # it has left the schedule
        self.send(entry)

    def _forget(self, entry: Pending) -> None:
        if account_of(entry.owner) is None:
            return
        d = self.store.drop_scheduled(self.node, entry.id)
        d.addErrback(
            lambda f: log_failed(log, f, "dropping scheduled message #{id} failed", id=entry.id)
        )


def cancelled_text(dropped: list[Pending]) -> str:
    """What a guest is told when its scheduled messages can no longer be sent."""
    ids = ", ".join(f"#{e.id}" for e in dropped)
    return f"your scheduled messages as a guest ({ids}) were cancelled; schedule them again"
