"""chatd's own commands, registered through the same entry points as any plugin."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatd.commands import CommandError, Context, Elsewhere, UsageError, command
from chatd.events import Presence
from chatd.ratelimit import duration

# What people call each door in /status (a door's own name is for logs and metrics).
DOOR_NAMES = {"line": "telnet", "ws": "WebSocket", "json": "browser", "irc": "IRC"}


def count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _no_arguments(args: str) -> None:
    if args:
        raise UsageError(f"nothing goes after the command, not {args!r}")


# /help's groups: one line each, so the whole list fits a 24-line, 80-column terminal.
# A plugin's command, in none of them, is listed under "more".
GROUPS = (
    ("talk", ("whisper", "send", "history", "list", "status", "exit")),
    ("rooms", ("join", "part", "rooms", "topic", "who", "kick", "invite")),
    ("you", ("rename", "register", "login", "auth", "logout")),
    ("later", ("scheduled", "cancel")),
    ("other", ("report", "exchange", "help")),
)


def _wrapped(label: str, words: list[str], width: int = 78) -> list[str]:
    """C{label: /a /b ...} in lines of at most C{width} columns."""
    lines, line = [], f"  {label + ':':7}"
    for word in words:
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = " " * 9
        line += " " + word
    return [*lines, line]


@command(
    "help",
    example="/help send",
    aliases=("rules",),
    usage="[command]",
    help="list the commands, or explain one",
)
def help_(ctx: Context, args: str) -> None:
    commands = ctx.services.commands
    words = args.lstrip("/").split()
    if words:
        cmd = commands.get(words[0])
        if cmd is None:
            raise CommandError(f"there is no command /{words[0]}; /help lists them all")
        aliases = ", ".join("/" + a for a in cmd.aliases)
        lines = [cmd.usage_line + (f"  (also {aliases})" if aliases else ""), f"  {cmd.help}"]
        if cmd.example:
            lines.append(f"  for example: {cmd.example}")
        ctx.reply("\n".join(lines))
        return
    known = {c.name: c for c in commands}
    lines = ["Type a line to talk to the room. Commands (/help NAME explains one):"]
    for label, names in GROUPS:
        present = ["/" + n for n in names if n in known]
        if present:
            lines += _wrapped(label, present)
    grouped = {n for _, names in GROUPS for n in names}
    more = ["/" + c.name for c in commands if c.name not in grouped]
    if more:
        lines += _wrapped("more", more)
    lines.append("Start a message with // to send a line that begins with /.")
    ctx.reply("\n".join(lines))


@command("list", example="/list", aliases=("users",), help="who is online")
def list_(ctx: Context, args: str) -> Deferred[None]:
    _no_arguments(args)
    return ctx.online().addCallback(lambda names: ctx.show(Presence(names)))


@command(
    "whisper",
    example="/w Ann see you at six",
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


@command(
    "rename", example="/rename Joe", aliases=("nick",), usage="<new_name>", help="change your name"
)
def rename(ctx: Context, args: str) -> None:
    if not args or " " in args:
        raise UsageError("a name has no spaces" if args else "")
    ctx.rename(args)


@command("exit", example="/exit", aliases=("quit",), help="leave the chat")
def exit_(ctx: Context, args: str) -> None:
    ctx.reply(f"Goodbye, {ctx.name}!")
    ctx.close("said goodbye")


@command("status", example="/status", help="facts about the chat and about you")
def status(ctx: Context, args: str) -> Deferred[None]:
    _no_arguments(args)
    s = ctx.status()  # now: the answers from other servers may take a moment

    def reply(other: Elsewhere) -> None:
        devices = [
            f"{DOOR_NAMES.get(door, door)} from {peer} for {duration(age)}"
            + (" (this one)" if this else "")
            for door, peer, age, this in s.devices
        ] + [
            f"{DOOR_NAMES.get(door, door)} from {peer} for {duration(age)} on server {node}"
            for node, door, peer, age in other.devices
        ]
        here = f" ({s.here} on this server)" if s.here is not None else ""
        lines = [
            f"chat: {s.online} online{here}, {count(s.connections, 'connection')}, "
            f"{count(s.messages, 'message')} in {duration(s.uptime)} of uptime",
            f"you: {s.name}, {'logged in' if s.account else 'guest'}, here for {duration(s.since)}",
            f"your sessions ({len(devices)}): {', '.join(devices)}",
        ]
        if other.silent:
            lines.append(
                f"(not listed: your sessions on {', '.join(other.silent)}, which did not "
                "answer in time)"
            )
        lines += s.standing
        if s.scheduled:
            lines.append(f"scheduled messages ({len(s.scheduled)}, /cancel cancels the last):")
            now = ctx.services.clock.seconds()
            lines += ["  " + p.describe(now) for p in s.scheduled]
        ctx.reply("\n".join(lines))

    return ctx.elsewhere().addCallback(reply)
