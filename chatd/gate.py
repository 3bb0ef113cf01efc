"""The one gate: whether this person may do this action now, and if not, why.

Every action a person takes (a public line, a whisper, a rename, a report, register, login,
logout, a command) is checked here before it happens; nothing else in chatd refuses an
action for who is doing it. The rules: login required, muted, out of messages or renames,
plus the per-connection flood caps of L{chatd.flood}.

Standing belongs to the person, not to the identity of the moment: an account's is kept
under its name (all its devices share it), a guest's under its address (a reconnect does
not reset it). When a session changes identity (login, logout, register) L{Gate.carry}
hands the stricter standing on, so nobody sheds a limit or a mute by changing who they are.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from chatd.config import Config
from chatd.flood import Flood
from chatd.moderation import Moderation, Share
from chatd.people import Client, Session, User
from chatd.ratelimit import RateLimiter, duration
from chatd.text import too_long

LOGIN_FIRST = "log in first: /login <name> <password>, or /register <name> <password>"


MESSAGES = "messages"
RENAMES = "renames"


@dataclass(frozen=True)
class Action:
    """A kind of action and the rules it falls under.

    @ivar counts: the allowance it takes one from (L{MESSAGES}, L{RENAMES}), if any.
    @ivar speaks: others see it, so a mute holds it back.
    @ivar needs_login: refused to guests where the server requires a login to talk.
    """

    name: str
    counts: str | None = None
    speaks: bool = False
    needs_login: bool = False


SAY = Action("say", MESSAGES, speaks=True, needs_login=True)  # a line, /send, a whisper...
COMMAND = Action("command")  # a command that only answers its caller
RENAME = Action("rename", RENAMES, speaks=True)  # everyone is told of a rename
REPORT = Action("report")
REGISTER = Action("register")
LOGIN = Action("login")
LOGOUT = Action("logout")


def standing_key(user: User) -> Hashable:
    """Whose allowances an action comes out of: an account's devices share one; a guest's
    goes with its address, so a reconnect or a new guest name does not reset it."""
    if user.account:
        return ("account", user.account)
    if user.sessions:
        return ("address", user.sessions[0].client.peer)
    return ("user", id(user))


_REFUSALS = {
    MESSAGES: "you have sent {n} messages in the last {period}; wait {wait} before sending more",
    RENAMES: "you have changed your name {n} times in the last {period}; "
    "wait {wait} before changing it again",
}


class Gate:
    """Decides, on a clock, whether a person may act; says why not."""

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        moderation: Moderation,
        flood: Flood,
        share: Share,
    ) -> None:
        self.config = config
        self.clock = clock
        self.moderation = moderation
        self.flood = flood
        self.share = share  # an account's devices on other nodes share its allowance
        self.limits = {
            MESSAGES: RateLimiter(clock, config.messages_per_hour, config.rate_period),
            RENAMES: RateLimiter(clock, config.renames_per_hour, config.rate_period),
        }
        self.messages = self.limits[MESSAGES]

    def reconfigure(self, config: Config) -> None:
        """New limits (a reload): what was spent already counts against the new ones."""
        self.config = config
        self.flood.reconfigure(config)
        self.moderation.reconfigure(config)
        self.limits[MESSAGES].reconfigure(config.messages_per_hour, config.rate_period)
        self.limits[RENAMES].reconfigure(config.renames_per_hour, config.rate_period)

    def admit(self, client: Client) -> str | None:
        """Why a new connection is refused, or None to let it in."""
        return self.flood.admit(client)

    def closed(self, client: Client) -> None:
        self.flood.closed(client)

    def line(self, session: Session) -> bool:
        """Whether to act on a line just received (the flood caps warn and disconnect)."""
        return self.flood.line(session.client)

    def size(self, text: str) -> str | None:
        """Why C{text} is too long for one line or message (C{max_message_bytes}), or None."""
        return too_long(text, self.config.max_message_bytes)

    def check(self, session: Session, action: Action) -> str | None:
        """Why C{session}'s person may not do C{action} now, or None (and it is counted)."""
        user = session.user
        if action.needs_login and user.account is None and self.config.login_required:
            return LOGIN_FIRST
        if action.speaks:
            left = self.moderation.mute_left(user)
            if left:
                return (
                    f"you are muted for {duration(left)} more; nobody sees what you send until then"
                )
        if action.counts is not None:
            limiter = self.limits[action.counts]
            allowed, at = limiter.can_do_action(standing_key(user))
            if not allowed:
                wait = duration(at - self.clock.seconds())
                return _REFUSALS[action.counts].format(
                    n=limiter.limit, period=self._period(), wait=wait
                )
            if user.account and action.counts == MESSAGES:
                self.share({"spent": user.account})
        return None

    def refund(self, session: Session, action: Action) -> None:
        """The action just counted did not happen after all (it was refused as wrong)."""
        if action.counts is None:
            return
        user = session.user
        self.limits[action.counts].undo(standing_key(user))
        if user.account and action.counts == MESSAGES:
            self.share({"unspent": user.account})

    def carry(self, before: Hashable, session: Session) -> None:
        """C{session} changed identity (it was L{standing_key} C{before}): the stricter
        standing of the two goes with it, allowances and mutes alike."""
        after = standing_key(session.user)
        for limiter in self.limits.values():
            limiter.carry(before, after)
        self.moderation.carry(before, after)

    def heard(self, change: dict[str, Any]) -> None:
        """A mute, or an account's message, on another node."""
        if "mute" in change:
            self.moderation.mute([tuple(k) for k in change["mute"]], float(change["seconds"]))
        elif "spent" in change:
            self.messages.can_do_action(("account", str(change["spent"])))
        elif "unspent" in change:
            self.messages.undo(("account", str(change["unspent"])))

    def standing(self, user: User) -> list[str]:
        """What /status tells a person about their own limits."""
        limit = self.messages.limit
        if limit:
            left = self.messages.remaining(standing_key(user))
            lines = [f"messages left: {left} of {limit} per {self._period()}"]
            if not left:
                _, at = self.messages.can_do_action(standing_key(user), update=False)
                lines[0] += f" (next in {duration(at - self.clock.seconds())})"
        else:
            lines = ["messages: no limit"]
        muted = self.moderation.mute_left(user)
        if muted:
            lines.append(f"muted: {duration(muted)} more")
        return lines

    def _period(self) -> str:
        period = self.messages.period
        return "hour" if period == 3600 else duration(period)
