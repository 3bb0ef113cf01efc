"""Reports (/report), and sending now or later (/send, /cancel, /scheduled)."""

from __future__ import annotations

from chatd.commands import CommandError, Context, UsageError, command
from chatd.ratelimit import duration
from chatd.scheduling import MAX_DELAY


@command(
    "report",
    example="/report Spammer",
    aliases=("ban",),
    usage="<name>",
    help="complain about a user; enough complaints from different users mute them",
)
def report(ctx: Context, args: str) -> None:
    if not args or " " in args:
        raise UsageError("give one name" if args else "")
    ctx.report(args)


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


@command(
    "send",
    example="/send -u Ann -t 600 the meeting starts in 10 minutes",
    usage="[-u|--username NAME] [-t|--time SECONDS] <text>",
    help="send to everyone or to one user, now or in SECONDS",
    counted=True,
)
def send(ctx: Context, args: str) -> None:
    name, seconds, text = _options(args)
    if not text:
        raise UsageError("nothing to send")
    if name is not None:
        known = ctx.find(name)  # the same look-up as /whisper's
        if known is None:
            raise CommandError(f"nobody called {name} is online; /list shows who is")
        if known.casefold() in (ctx.name.casefold(), (ctx.account or "").casefold()):
            raise CommandError("you cannot send a private message to yourself")
        name = known
    if seconds is None:
        if name is None:
            ctx.say(text)
        else:
            ctx.whisper(name, text)
        return
    if not seconds.isdigit():
        raise UsageError(f"-t takes a whole number of seconds, 1 to {MAX_DELAY}")
    entry = ctx.schedule(int(seconds), text, name)
    ctx.reply(
        f"message #{entry.id} will go {f'to {name}' if name else 'to everyone'} "
        f"in {duration(int(seconds))}; /cancel cancels it"
    )


@command(
    "cancel",
    example="/cancel 2",
    usage="[number]",
    help="cancel your last scheduled message (or #number)",
)
def cancel(ctx: Context, args: str) -> None:
    number = args.lstrip("#")
    if number and not number.isdigit():
        raise UsageError("give the number /scheduled shows, or nothing for the last one")
    entry = ctx.cancel(int(number) if number else None)
    ctx.reply(f"cancelled {entry.describe(ctx.services.clock.seconds())}")


@command("scheduled", example="/scheduled", help="your messages waiting to be sent")
def scheduled(ctx: Context, args: str) -> None:
    pending = ctx.scheduled()
    if not pending:
        ctx.reply("you have no scheduled messages; /send -t SECONDS text schedules one")
        return
    now = ctx.services.clock.seconds()
    ctx.reply("\n".join(["your scheduled messages:", *("  " + p.describe(now) for p in pending)]))
