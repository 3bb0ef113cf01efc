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
    commands = ctx.room.commands
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
    return ctx.room.who().addCallback(lambda names: ctx.session.deliver(Presence(names)))


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
    ctx.room.whisper(ctx.session, name, text)


@command("rename", aliases=("nick",), usage="<new_name>", help="change your name")
def rename(ctx: Context, args: str) -> None:
    if not args or " " in args:
        raise UsageError("a name has no spaces" if args else "")
    ctx.room.rename(ctx.user, args)


@command("exit", aliases=("quit",), help="leave the chat")
def exit_(ctx: Context, args: str) -> None:
    ctx.reply(f"Goodbye, {ctx.user.name}!")
    ctx.room.close(ctx.session, "said goodbye")


@command("status", help="facts about the chat and about you")
def status(ctx: Context, args: str) -> None:
    _no_arguments(args)
    room, user = ctx.room, ctx.user
    now = room.clock.seconds()
    devices = ", ".join(
        f"{s.client.door} from {s.client.peer} for {duration(now - s.since)}"
        + (" (this one)" if s is ctx.session else "")
        for s in user.sessions
    )
    here = f" ({len(room.users)} on this server)" if room.elsewhere else ""
    ctx.reply(
        "\n".join(
            [
                f"chat: {room.online_count()} online{here}, "
                f"{count(len(room.sessions), 'connection')}, "
                f"{count(room.messages_sent, 'message')} in {duration(now - room.started)}"
                " of uptime",
                f"you: {user.name}, "
                + ("logged in" if user.account else "guest")
                + f", here for {duration(now - user.since)}",
                f"your sessions ({len(user.sessions)}): {devices}",
                *room.moderation.standing(user),
            ]
        )
    )
