"""Whether a user's messages may go out: the message limit, reports and mutes, the schedule.

Everything is keyed so that another device or a reconnect does not help: an account by its
account name (all its devices share one allowance and one mute); a guest's allowance is its
own connection, but reports about a guest and a guest's mute go with its address, so a
muted guest who comes back under a new guest name is still muted. A guest reporter is also
its address, so one person on several guest connections counts as one reporter.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from chatd.commands import CommandError
from chatd.config import Config
from chatd.ratelimit import RateLimiter, duration
from chatd.scheduled import Schedule

if TYPE_CHECKING:
    from chatd.room import User


def sender(user: User) -> Hashable:
    """Whose allowance and schedule a message comes out of."""
    return ("account", user.account) if user.account else user


def reporter_key(user: User) -> Hashable:
    """Who a report is from: one person on several guest connections counts once."""
    return _person(user)[0]


def _addresses(user: User) -> list[Hashable]:
    return [("address", s.client.peer) for s in user.sessions]


def _person(user: User) -> list[Hashable]:
    """The keys reports about C{user} and their mute are kept under."""
    return [("account", user.account)] if user.account else _addresses(user)


class Moderation:
    """Per-user sending rules, on a clock."""

    def __init__(self, config: Config, clock: IReactorTime) -> None:
        self.config = config
        self.clock = clock
        self.limiter = RateLimiter(clock, config.messages_per_hour, config.rate_period)
        self.schedule = Schedule(clock)
        # person -> reporter -> when; a report counts for mute_seconds, like the mute it makes
        self._reports: dict[Hashable, dict[Hashable, float]] = {}
        self._muted: dict[Hashable, float] = {}  # person or address -> muted until
        # Tells the other nodes of a mute, or of a message an account sent (the Room sets
        # it to its bus); theirs come back through heard(). Keys are tuples of strings, so
        # they travel as JSON lists.
        self.share: Callable[[dict[str, Any]], object] = lambda change: None

    def reconfigure(self, config: Config) -> None:
        """New limits (a reload): allowances already spent count against the new limit."""
        self.config = config
        self.limiter.reconfigure(config.messages_per_hour, config.rate_period)

    def take(self, user: User) -> str | None:
        """Count one message against C{user}, or say why it may not be sent now."""
        left = self.mute_left(user)
        if left:
            return f"you are muted for {duration(left)} more; nobody sees what you send until then"
        allowed, at = self.limiter.can_do_action(sender(user))
        if allowed:
            if user.account:  # its devices on other nodes share the allowance
                self.share({"spent": user.account})
            return None
        return (
            f"you have sent {self.limiter.limit} messages in the last {self._period()}; "
            f"wait {duration(at - self.clock.seconds())} before sending more"
        )

    def undo(self, user: User) -> None:
        """The message just counted was not sent after all (it was refused as wrong)."""
        self.limiter.undo(sender(user))
        if user.account:
            self.share({"unspent": user.account})

    def mute_left(self, user: User) -> float:
        """Seconds C{user} stays muted; 0 when they may speak."""
        if not self._muted:
            return 0.0
        now = self.clock.seconds()
        until = max((self._muted.get(k, 0.0) for k in _person(user)), default=0.0)
        if until > now:
            return until - now
        for k in _person(user):
            self._muted.pop(k, None)  # expired
        return 0.0

    def report(self, reporter: User, target: User) -> float | None:
        """Count C{reporter}'s complaint; the mute length when it is the one that mutes."""
        if not self.config.reports_to_mute:
            raise CommandError("reports are switched off on this server")
        if target is reporter:
            raise CommandError("you cannot report yourself")
        return self.report_by(reporter_key(reporter), target)

    def report_by(self, by: Hashable, target: User) -> float | None:
        """L{report} by a reporter known by key only (a user on another node)."""
        needed = self.config.reports_to_mute
        if not needed:
            raise CommandError("reports are switched off on this server")
        if self.mute_left(target):
            raise CommandError(f"{target.name} is muted already")
        person = _person(target)
        if not person:
            raise CommandError(f"{target.name} has just left")
        now = self.clock.seconds()
        reporters = self._reports.setdefault(person[0], {})
        self._forget_old(reporters, now)
        if by in reporters:
            raise CommandError(f"you have reported {target.name} already; it counts once")
        reporters[by] = now
        if len(reporters) < needed:
            return None
        keys = list(person)  # an account, or a guest's addresses
        self._mute(keys, self.config.mute_seconds)
        self.share({"mute": keys, "seconds": self.config.mute_seconds})
        return self.config.mute_seconds

    def _mute(self, keys: list[Hashable], seconds: float) -> None:
        until = self.clock.seconds() + seconds
        for k in keys:
            self._reports.pop(k, None)
            self._muted[k] = until

    def _forget_old(self, reporters: dict[Hashable, float], now: float) -> None:
        since = now - self.config.mute_seconds
        for by in [by for by, at in reporters.items() if at <= since]:
            del reporters[by]

    def prune(self, now: float) -> None:
        """Forget expired mutes and reports, also of people who never came back."""
        self._muted = {k: until for k, until in self._muted.items() if until > now}
        for person in list(self._reports):
            self._forget_old(self._reports[person], now)
            if not self._reports[person]:
                del self._reports[person]

    def guest_gone(self, user: User) -> str | None:
        """A guest left or logged in: cancel what it scheduled (only that guest could send
        it) and return what to tell the guest, if anything was cancelled."""
        if user.account is not None:
            return None
        dropped = self.schedule.drop_owner(user)
        if not dropped:
            return None
        ids = ", ".join(f"#{e.id}" for e in dropped)
        return f"your scheduled messages as a guest ({ids}) were cancelled; schedule them again"

    def heard(self, change: dict[str, Any]) -> None:
        """A mute, or an account's message, on another node (what L{share} sent there)."""
        if "mute" in change:
            self._mute([tuple(k) for k in change["mute"]], float(change["seconds"]))
        elif "spent" in change:
            self.limiter.can_do_action(("account", str(change["spent"])))
        elif "unspent" in change:
            self.limiter.undo(("account", str(change["unspent"])))

    def standing(self, user: User) -> list[str]:
        """What /status tells a user about their own limits."""
        now = self.clock.seconds()
        limit = self.limiter.limit
        if limit:
            left = self.limiter.remaining(sender(user))
            lines = [f"messages left: {left} of {limit} per {self._period()}"]
            if not left:
                _, at = self.limiter.can_do_action(sender(user), update=False)
                lines[0] += f" (next in {duration(at - now)})"
        else:
            lines = ["messages: no limit"]
        muted = self.mute_left(user)
        if muted:
            lines.append(f"muted: {duration(muted)} more")
        pending = self.schedule.pending(sender(user))
        if pending:
            lines.append(f"scheduled messages ({len(pending)}, /cancel cancels the last):")
            lines += ["  " + p.describe(now) for p in pending]
        return lines

    def _period(self) -> str:
        period = self.limiter.period
        return "hour" if period == 3600 else duration(period)
