"""/history: the recent public messages, with their times."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatd.commands import Context, UsageError, command
from chatd.events import History, Message

MOST = 500  # one answer's limit, so a typo cannot ask for the whole database


@command(
    "history",
    example="/history 50",
    usage="[n]",
    help="the last n public messages (within the history time)",
)
def history(ctx: Context, args: str) -> Deferred[None]:
    if not args:
        n = ctx.services.config.history_default
    elif args.isdigit() and 0 < int(args) <= MOST:
        n = int(args)
    else:
        raise UsageError(f"n is a whole number from 1 to {MOST}")

    def show(messages: list[Message]) -> None:
        ctx.show(History(messages, "history"))

    return ctx.history(n).addCallback(show)
