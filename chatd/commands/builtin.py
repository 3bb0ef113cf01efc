"""chatd's own commands, registered through the same entry points as any plugin."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatd.commands import CommandError, Context, UsageError, command
from chatd.events import Presence
from chatd.ratelimit import duration


def count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _no_arguments(args: str) -> None:
    if args:
        raise UsageError(f"nothing goes after the command, not {args!r}")


@command("help", aliases=("rules",), usage="[command]", help="list the commands, or explain one")
def help_(ctx: Context, args: str) -> None:
    commands = ctx.services.commands
    words = args.lstrip("/").split()
    if words:
        cmd = commands.get(words[0])
        if cmd is None:
            raise CommandError(f"there is no command /{words[0]}; /help lists them all")
        aliases = ", ".join("/" + a for a in cmd.aliases)
        ctx.reply(f"{cmd.usage_line}: {cmd.help}" + (f" (also {aliases})" if aliases else ""))
        return
    lines = ["Type a line to talk to everyone. Commands:"]
    for cmd in commands:
        aliases = ", ".join("/" + a for a in cmd.aliases)
        lines.append(f"  {cmd.usage_line}" + (f"  (also {aliases})" if aliases else ""))
        lines.append(f"      {cmd.help}")
    lines.append("Start a message with // to send a line that begins with /.")
    ctx.reply("\n".join(lines))


@command("list", aliases=("users",), help="who is online")
def list_(ctx: Context, args: str) -> Deferred[None]:
    _no_arguments(args)
    return ctx.online().addCallback(lambda names: ctx.show(Presence(names)))


@command(
    "whisper",
    aliases=("w", "private", "msg"),
    usage="<name> <text>",
    help="a private message to one user",
    counted=True,
)
def whisper(ctx: Context, args: str) -> None:
    name, _, text = args.partition(" ")
    if not name or not text.strip():
        raise UsageError()
    ctx.whisper(name, text)


@command("rename", aliases=("nick",), usage="<new_name>", help="change your name")
def rename(ctx: Context, args: str) -> None:
    if not args or " " in args:
        raise UsageError("a name has no spaces" if args else "")
    ctx.rename(args)


@command("exit", aliases=("quit",), help="leave the chat")
def exit_(ctx: Context, args: str) -> None:
    ctx.reply(f"Goodbye, {ctx.name}!")
    ctx.close("said goodbye")


@command("status", help="facts about the chat and about you")
def status(ctx: Context, args: str) -> None:
    _no_arguments(args)
    s = ctx.status()
    devices = ", ".join(
        f"{door} from {peer} for {duration(age)}" + (" (this one)" if this else "")
        for door, peer, age, this in s.devices
    )
    here = f" ({s.here} on this server)" if s.here is not None else ""
    lines = [
        f"chat: {s.online} online{here}, {count(s.connections, 'connection')}, "
        f"{count(s.messages, 'message')} in {duration(s.uptime)} of uptime",
        f"you: {s.name}, {'logged in' if s.account else 'guest'}, here for {duration(s.since)}",
        f"your sessions ({len(s.devices)}): {devices}",
        *s.standing,
    ]
    if s.scheduled:
        lines.append(f"scheduled messages ({len(s.scheduled)}, /cancel cancels the last):")
        now = ctx.services.clock.seconds()
        lines += ["  " + p.describe(now) for p in s.scheduled]
    ctx.reply("\n".join(lines))
