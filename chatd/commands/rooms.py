"""Rooms: /join, /part, /rooms, /topic, /who, and what a room's owner may do (/kick, /invite)."""

from __future__ import annotations

from chatd.commands import Context, UsageError, command
from chatd.events import Presence

MOST_MINUTES = 7 * 24 * 60  # a kick lasts a week at most


@command(
    "join",
    example="/join #dev",
    usage="#room",
    help="join a room (made if new) and talk there; /join #lobby",
)
def join(ctx: Context, args: str) -> None:
    if not args or " " in args:
        raise UsageError("one room name, such as #dev")
    ctx.join(args)


@command(
    "part",
    example="/part #dev",
    aliases=("leave",),
    usage="[#room]",
    help="leave a room (the current one)",
)
def part(ctx: Context, args: str) -> None:
    if " " in args:
        raise UsageError("one room name, or none for the current room")
    ctx.part(args or None)


@command("rooms", example="/rooms", help="every room, with how many are in it and its topic")
def rooms(ctx: Context, args: str) -> None:
    if args:
        raise UsageError(f"nothing goes after the command, not {args!r}")
    lines = []
    for r in ctx.rooms():
        mark = "> " if r.current else ("+ " if r.joined else "  ")
        rules = " (invite-only)" if r.invite_only else ""
        topic = f": {r.topic}" if r.topic else ""
        lines.append(f"{mark}{r.name} ({r.members}){rules}{topic}")
    ctx.reply("rooms (> where you talk, + yours):\n" + "\n".join(lines))


@command(
    "topic",
    example="/topic release on Friday",
    usage="[text]",
    help="show the current room's topic, or set it (its owner)",
)
def topic(ctx: Context, args: str) -> None:
    if not args:
        shown = ctx.topic(None)
        ctx.reply(f"topic of {ctx.room}: {shown}" if shown else f"{ctx.room} has no topic")
        return
    ctx.set_topic("" if args == "-" else args)


@command("who", example="/who #dev", usage="[#room]", help="who is in a room (the current one)")
def who(ctx: Context, args: str) -> None:
    if " " in args:
        raise UsageError("one room name, or none for the current room")
    room = args or ctx.room
    names = ctx.who(args or None)
    ctx.show(Presence(names, room=room if room.startswith("#") else "#" + room))


@command(
    "kick",
    example="/kick Spammer 30",
    usage="<name> [minutes]",
    help="remove someone from the current room for a while (its owner)",
)
def kick(ctx: Context, args: str) -> None:
    words = args.split()
    if not 1 <= len(words) <= 2:
        raise UsageError()
    minutes = ctx.services.config.kick_minutes
    if len(words) == 2:
        if not words[1].isdigit() or not 1 <= int(words[1]) <= MOST_MINUTES:
            raise UsageError(f"minutes is a whole number from 1 to {MOST_MINUTES}")
        minutes = int(words[1])
    ctx.kick(words[0], minutes)


@command(
    "invite",
    example="/invite Ann",
    usage="<name>",
    help="make the current room invite-only and let someone in (its owner)",
)
def invite(ctx: Context, args: str) -> None:
    if not args or " " in args:
        raise UsageError("one name")
    name = ctx.invite(args)
    ctx.reply(f"{name} may join {ctx.room}")
