"""Reports and mutes (/report), sending now or later (/send, /cancel, /scheduled).

Accounts' scheduled messages are saved in the store's key/value table after every change,
and scheduled again when the server starts.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from chatd.commands import CommandError, Context, UsageError, command
from chatd.moderation import sender
from chatd.ratelimit import duration
from chatd.room import Room, User
from chatd.scheduled import MAX_DELAY, Pending

log = Logger(namespace="chatd.moderation")
SAVED = "scheduled-messages"  # the store key


@command(
    "report",
    aliases=("ban",),
    usage="<name>",
    help="complain about a user; enough complaints from different users mute them",
)
def report(ctx: Context, args: str) -> None:
    if not args or " " in args:
        raise UsageError("give one name" if args else "")
    room = ctx.room
    target = room.find(args)
    if target is None and args.casefold() in room.elsewhere:
        room.report_elsewhere(ctx.user, room.elsewhere[args.casefold()])
        ctx.reply(f"you reported {room.elsewhere[args.casefold()]}")
        return
    if target is None:
        raise CommandError(f"nobody called {args} is online; /list shows who is")
    muted_for = room.moderation.report(ctx.user, target)
    log.info("{reporter} reported {target}", reporter=ctx.user.name, target=target.name)
    if muted_for is None:
        ctx.reply(f"you reported {target.name}")
        return
    log.info("{target} muted for {seconds}s", target=target.name, seconds=muted_for)
    room.announce_mute(target, muted_for)


def _options(args: str) -> tuple[str | None, str | None, str]:
    """Split C{-u NAME -t SECONDS text} into (name, seconds, text); text keeps its spacing."""
    name = seconds = None
    rest = args
    while rest.startswith("-"):
        option, _, rest = rest.partition(" ")
        rest = rest.lstrip(" ")
        if option == "--":
            break
        option, eq, value = option.partition("=")
        if not eq:
            value, _, rest = rest.partition(" ")
            rest = rest.lstrip(" ")
        if not value:
            raise UsageError(f"{option} needs a value")
        if option in ("-u", "--username"):
            name = value
        elif option in ("-t", "--time"):
            seconds = value
        else:
            raise UsageError(f"unknown option {option} (put -- before a text that starts with -)")
    return name, seconds, rest


def _saved_key(room: Room) -> str:
    """Each node of a cluster keeps (and sends) its own: the store is shared."""
    return f"{SAVED}:{room.config.node}" if room.config.node else SAVED


def _save(room: Room) -> None:
    d = room.store.cache_put(_saved_key(room), room.moderation.schedule.saved())
    d.addErrback(lambda f: log.failure("saving the scheduled messages failed", f))


def _restore(room: Room) -> defer.Deferred[Any]:
    """At start-up: schedule again the accounts' messages saved before a restart."""

    def restore(saved: str | None) -> None:
        if saved:
            n = room.moderation.schedule.restore(
                saved, lambda account: lambda entry: _deliver(room, None, account, entry)
            )
            log.info("{n} scheduled messages restored", n=n)

    d = room.store.cache_get(_saved_key(room)).addCallback(restore)
    return d.addErrback(lambda f: log.failure("restoring the scheduled messages failed", f))


@command(
    "send",
    usage="[-u|--username NAME] [-t|--time SECONDS] <text>",
    help="send to everyone or to one user, now or in SECONDS",
    counted=True,
    setup=_restore,
)
def send(ctx: Context, args: str) -> None:
    name, seconds, text = _options(args)
    if not text:
        raise UsageError("nothing to send")
    room = ctx.room
    if name is not None:
        target = room.find(name)
        known = target.name if target is not None else room.account_names.get(name.casefold())
        if known is None:
            raise CommandError(f"nobody called {name} is online; /list shows who is")
        if target is ctx.user or known == ctx.user.account:
            raise CommandError("you cannot send a private message to yourself")
        name = known
    if seconds is None:
        if name is None:
            room.say(ctx.session, text)
        else:
            room.whisper(ctx.session, name, text)
        return
    if not seconds.isdigit():
        raise UsageError(f"-t takes a whole number of seconds, 1 to {MAX_DELAY}")
    user, account = ctx.user, ctx.user.account
    entry = room.moderation.schedule.add(
        sender(user), int(seconds), text, name, lambda entry: _deliver(room, user, account, entry)
    )
    if account is not None:
        _save(room)
    ctx.reply(
        f"message #{entry.id} will go {f'to {name}' if name else 'to everyone'} "
        f"in {duration(int(seconds))}; /cancel cancels it"
    )


def _author(room: Room, user: User | None, account: str | None) -> User | None:
    """Who sends a scheduled message now: the same guest (its messages are cancelled when it
    leaves or logs in), or the account on any device."""
    if account is None:
        return user
    now = room.find(account)
    return now if now is not None and now.account == account else None


def _deliver(room: Room, user: User | None, account: str | None, entry: Pending) -> None:
    """Send a scheduled message, if its author is still here and may still speak."""
    if account is not None:
        _save(room)  # the entry has left the schedule
    user = _author(room, user, account)
    if user is None:
        log.info("scheduled message #{id} dropped: its author left", id=entry.id)
        return
    session = user.sessions[0]
    problem = "you are muted" if room.moderation.mute_left(user) else None
    if problem is None:
        try:
            if entry.to is None:
                room.say(session, entry.text)
            else:
                room.whisper(session, entry.to, entry.text)
        except CommandError as e:
            problem = str(e)
    for s in user.sessions:
        if problem is None:
            room.tell(s, f"your scheduled message #{entry.id} was sent")
        else:
            room.tell_error(s, f"your scheduled message #{entry.id} was not sent: {problem}")


@command("cancel", usage="[number]", help="cancel your last scheduled message (or #number)")
def cancel(ctx: Context, args: str) -> None:
    number = args.lstrip("#")
    if number and not number.isdigit():
        raise UsageError("give the number /scheduled shows, or nothing for the last one")
    entry = ctx.room.moderation.schedule.cancel(sender(ctx.user), int(number) if number else None)
    if ctx.user.account is not None:
        _save(ctx.room)
    ctx.reply(f"cancelled {entry.describe(ctx.room.clock.seconds())}")


@command("scheduled", help="your messages waiting to be sent")
def scheduled(ctx: Context, args: str) -> None:
    pending = ctx.room.moderation.schedule.pending(sender(ctx.user))
    if not pending:
        ctx.reply("you have no scheduled messages; /send -t SECONDS text schedules one")
        return
    now = ctx.room.clock.seconds()
    ctx.reply("\n".join(["your scheduled messages:", *("  " + p.describe(now) for p in pending)]))
