"""A clock-driven limit of N actions per period per key, shaped like Synapse's C{Ratelimiter}.

It is a sliding window: each key keeps the times of its last N actions, so when the limit is
reached the caller can say exactly how long to wait -- until the oldest of those N actions
leaves the period ("20 messages an hour: wait the rest of the hour"). One limiter serves
every count-per-period rule (messages, renames, new connections, accounts per address,
failed logins), so they all phrase and age their waits alike.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable

from twisted.internet.interfaces import IReactorTime


class RateLimiter:
    """At most C{limit} actions per C{period} seconds for each key; C{limit} 0 means no limit."""

    def __init__(self, clock: IReactorTime, limit: int, period: float) -> None:
        self.clock = clock
        self.limit = limit
        self.period = period
        self._actions: dict[Hashable, deque[float]] = {}
        self._next_prune = clock.seconds() + period

    def reconfigure(self, limit: int, period: float) -> None:
        """New limit and period (a reload); each key keeps its newest actions that fit."""
        self.limit, self.period = limit, period
        self._actions = {
            key: deque(times, maxlen=limit) for key, times in self._actions.items() if limit
        }

    def can_do_action(self, key: Hashable, update: bool = True) -> tuple[bool, float]:
        """Whether C{key} may act now, and the time from which it may act (now when allowed).

        With C{update} an allowed action is recorded.
        """
        now = self.clock.seconds()
        if not self.limit:
            return True, now
        if now >= self._next_prune:
            self._prune(now)
        times = self._actions.get(key)
        if times is not None and len(times) >= self.limit and now - times[0] < self.period:
            return False, times[0] + self.period
        if update:
            if times is None:
                times = self._actions[key] = deque(maxlen=self.limit)
            times.append(now)
        return True, now

    def remaining(self, key: Hashable) -> int:
        """Actions C{key} may still take in the current period."""
        times = self._actions.get(key, ())
        now = self.clock.seconds()
        return self.limit - sum(1 for t in times if now - t < self.period)

    def undo(self, key: Hashable) -> None:
        """Give back the last recorded action (it did not happen after all)."""
        times = self._actions.get(key)
        if times:
            times.pop()

    def reset(self, key: Hashable) -> None:
        """Forget C{key}'s actions (a login that works clears the failures before it)."""
        self._actions.pop(key, None)

    def carry(self, source: Hashable, into: Hashable) -> None:
        """One person, a new key: C{into} keeps the stricter of the two windows (the one
        with less left), so changing key never gives a fresh allowance."""
        if source == into or not self.limit:
            return
        theirs = self._actions.get(source)
        if theirs and self.remaining(source) < self.remaining(into):
            self._actions[into] = deque(theirs, maxlen=self.limit)

    def _prune(self, now: float) -> None:
        """Forget keys with no action inside the period, at most once per period."""
        self._actions = {
            key: times
            for key, times in self._actions.items()
            if times and now - times[-1] < self.period
        }
        self._next_prune = now + self.period


def duration(seconds: float) -> str:
    """A wait as people read it (C{4m05s}), rounded up so it never says C{0s}."""
    seconds = max(1, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
