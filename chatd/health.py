"""Whether this node can serve: the database answers, and in a cluster Redis does too.

A load balancer asks often, from several places at once: one question per dependency is in
flight at a time, and every asker waiting meanwhile shares its answer. An answer that takes
longer than the deadline counts as none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure


class Health:
    """@param parts: name -> a function asking it a trivial question (a Deferred).
    @param deadline: seconds each part has to answer, read at every check (a reload may
        change it)."""

    def __init__(
        self,
        clock: IReactorTime,
        parts: dict[str, Callable[[], defer.Deferred[Any]]],
        deadline: Callable[[], float],
    ) -> None:
        self.clock = clock
        self.parts = parts
        self.deadline = deadline
        self._waiting: dict[str, list[defer.Deferred[str | None]]] = {}

    async def problems(self) -> list[str]:
        """What is wrong, one line per part that failed; empty when all is well."""
        answers = await defer.gatherResults([self._ask(name) for name in self.parts])
        return [f"{name}: {why}" for name, why in zip(self.parts, answers, strict=True) if why]

    def _ask(self, name: str) -> defer.Deferred[str | None]:
        """Fires with None when C{name} answered in time, else with why not."""
        waiter: defer.Deferred[str | None] = defer.Deferred()
        waiters = self._waiting.get(name)
        if waiters is None:
            waiters = self._waiting[name] = []

            def answered(result: Any) -> None:
                del self._waiting[name]
                why = None
                if isinstance(result, Failure):
                    why = result.getErrorMessage() or result.type.__name__
                for w in waiters:
                    if not w.called:
                        w.callback(why)

            defer.maybeDeferred(self.parts[name]).addBoth(answered)
        waiters.append(waiter)
        seconds = self.deadline()
        late = self.clock.callLater(
            seconds,
            lambda: waiter.called or waiter.callback(f"no answer within {seconds:g} s"),
        )
        waiter.addBoth(lambda result: (late.active() and late.cancel(), result)[1])
        return waiter
