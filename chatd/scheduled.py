"""Messages people asked to send later (C{/send -t}): kept per owner, on the clock, cancellable.

The schedule only keeps time; what "sending" means is the callable each entry carries, so
this file knows nothing about rooms or doors. Accounts' entries can be saved as JSON and
restored after a restart (a guest's cannot: the guest is gone).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from chatd.commands import CommandError
from chatd.ratelimit import duration

MAX_DELAY = 24 * 3600  # seconds ahead a message may be scheduled
MAX_PENDING = 10  # scheduled messages one owner may have waiting


class Pending:
    """One scheduled message.

    @ivar owner: C{("account", name)} for an account (saved over restarts), else any key.
    """

    __slots__ = ("id", "owner", "due", "text", "to", "call")

    def __init__(self, id: int, owner: Hashable, due: float, text: str, to: str | None) -> None:
        self.id = id
        self.owner = owner
        self.due = due
        self.text = text
        self.to = to
        self.call: Any = None  # the IDelayedCall that sends it

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

    def saved(self) -> str:
        """The accounts' pending messages as JSON, for L{restore} after a restart."""
        return json.dumps(
            [
                {"id": e.id, "account": e.owner[1], "due": e.due, "text": e.text, "to": e.to}
                for entries in self._pending.values()
                for e in entries
                if isinstance(e.owner, tuple) and e.owner[0] == "account"
            ]
        )

    def restore(self, saved: str, send: Callable[[str], Callable[[Pending], Any]]) -> int:
        """Schedule again what L{saved} wrote; C{send(account)} sends that account's entries.

        Entries already due go at once. Returns how many were restored.
        """
        entries = sorted(json.loads(saved), key=lambda e: e["id"])
        for e in entries:
            owner = ("account", e["account"])
            self._arm(Pending(e["id"], owner, e["due"], e["text"], e["to"]), send(e["account"]))
        if entries:
            self._ids = itertools.count(entries[-1]["id"] + 1)
        return len(entries)

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
