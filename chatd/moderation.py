"""Reports and mutes.

Reports about a person and their mute are kept under the person's keys: an account by its
name (all its devices share one mute), a guest by its addresses, so a muted guest who comes
back under a new guest name is still muted; a muted account that logs out stays muted as a
guest (L{Moderation.carry}). A reporter is the address the report came from: several
guests, or several accounts made in a minute, on one address count as one reporter.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from chatd.config import Config
from chatd.errors import CommandError
from chatd.people import Session, User

Share = Callable[[dict[str, Any]], object]  # tells the other nodes (keys as JSON lists)


def person(user: User) -> list[Hashable]:
    """The keys reports about C{user} and their mute are kept under."""
    if user.account:
        return [("account", user.account)]
    return [("address", s.client.peer) for s in user.sessions]


def reporter_key(session: Session) -> Hashable:
    """Who a report is from: the address it came from, whoever is logged in there."""
    return ("address", session.client.peer)


class Moderation:
    """Who complained about whom, and who is muted until when, on a clock."""

    def __init__(self, config: Config, clock: IReactorTime, share: Share) -> None:
        self.config = config
        self.clock = clock
        self.share = share
        # person -> reporter -> when; a report counts for mute_seconds, like the mute it makes
        self._reports: dict[Hashable, dict[Hashable, float]] = {}
        self._muted: dict[Hashable, float] = {}  # person or address -> muted until

    def reconfigure(self, config: Config) -> None:
        """New settings (a reload): reports and mutes from now on follow them."""
        self.config = config

    def mute_left(self, user: User) -> float:
        """Seconds C{user} stays muted; 0 when they may speak."""
        if not self._muted:
            return 0.0
        now = self.clock.seconds()
        until = max((self._muted.get(k, 0.0) for k in person(user)), default=0.0)
        if until > now:
            return until - now
        for k in person(user):
            self._muted.pop(k, None)  # expired
        return 0.0

    def report(self, reporter: Session, target: User) -> float | None:
        """Count C{reporter}'s complaint; the mute length when it is the one that mutes."""
        if target is reporter.user:
            raise CommandError("you cannot report yourself")
        return self.report_by(reporter_key(reporter), target)

    def report_by(self, by: Hashable, target: User) -> float | None:
        """L{report} by a reporter known by key only (a user on another node)."""
        needed = self.config.reports_to_mute
        if not needed:
            raise CommandError("reports are switched off on this server")
        if self.mute_left(target):
            raise CommandError(f"{target.name} is muted already")
        keys = person(target)
        if not keys:
            raise CommandError(f"{target.name} has just left")
        now = self.clock.seconds()
        reporters = self._reports.setdefault(keys[0], {})
        self._forget_old(reporters, now)
        if by in reporters:
            raise CommandError(f"you have reported {target.name} already; it counts once")
        reporters[by] = now
        if len(reporters) < needed:
            return None
        self.mute(keys, self.config.mute_seconds)
        self.share({"mute": keys, "seconds": self.config.mute_seconds})
        return self.config.mute_seconds

    def mute(self, keys: list[Hashable], seconds: float) -> None:
        until = self.clock.seconds() + seconds
        for k in keys:
            self._reports.pop(k, None)
            self._muted[k] = max(until, self._muted.get(k, 0.0))

    def carry(self, before: Hashable, after: Hashable) -> None:
        """One person under a new key: a mute under the old one holds under the new."""
        until = self._muted.get(before, 0.0)
        if until > self._muted.get(after, 0.0):
            self._muted[after] = until

    def _forget_old(self, reporters: dict[Hashable, float], now: float) -> None:
        since = now - self.config.mute_seconds
        for by in [by for by, at in reporters.items() if at <= since]:
            del reporters[by]

    def prune(self, now: float) -> None:
        """Forget expired mutes and reports, also of people who never came back."""
        self._muted = {k: until for k, until in self._muted.items() if until > now}
        for key in list(self._reports):
            self._forget_old(self._reports[key], now)
            if not self._reports[key]:
                del self._reports[key]
