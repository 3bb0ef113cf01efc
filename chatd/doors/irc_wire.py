"""IRC on the wire, as pure functions: parsing a client's line (IRCv3 tags included),
formatting a server line, splitting text to fit 512 bytes, mapping chatd names to IRC nicks
and back, and choosing the messages a CHATHISTORY reference asks for.

Nothing here knows the chat; L{chatd.doors.irc} is the glue between these and the Room.
"""

from __future__ import annotations

import calendar
import time as _time
from dataclasses import dataclass, field
from typing import Any

from chatd.events import Message

# RFC 1459: a line is at most 512 bytes with its CR LF; IRCv3 tags get 8191 bytes more.
LINE_BYTES = 512
TAG_BYTES = 8191
MAX_INPUT_BYTES = LINE_BYTES + TAG_BYTES

# A chatd name is letters, digits, "_", "." and "-", starting with a letter or digit. A nick
# may not hold "." and may not start with a digit or "-"; these are the two escapes, neither
# a character of any chatd name, so the mapping is reversible.
DOT = "|"  # "." in a name
LEAD = "`"  # before a name that starts with a digit


# Commands whose last parameter is free text.
TEXT_LAST = frozenset(
    ("PRIVMSG", "NOTICE", "PART", "QUIT", "AWAY", "ERROR", "TOPIC", "KICK", "PONG", "CAP")
)


@dataclass(frozen=True)
class Line:
    """One line a client sent."""

    command: str
    params: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    prefix: str = ""


class BadLine(ValueError):
    """Not an IRC message; the text says why."""


def unescape_tag(value: str) -> str:
    """An IRCv3 tag value as it was before escaping."""
    out = []
    chars = iter(value)
    for c in chars:
        if c != "\\":
            out.append(c)
            continue
        nxt = next(chars, "")
        out.append({":": ";", "s": " ", "r": "\r", "n": "\n", "\\": "\\"}.get(nxt, nxt))
    return "".join(out)


def escape_tag(value: str) -> str:
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\:")
        .replace(" ", "\\s")
        .replace("\r", "\\r")
        .replace("\n", "\\n")
    )


def parse(line: str) -> Line:
    """A client's line, without its CR LF; L{BadLine} when it holds no command."""
    tags: dict[str, str] = {}
    line = line.lstrip(" ")
    if line.startswith("@"):
        raw, _, line = line[1:].partition(" ")
        for item in raw.split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = unescape_tag(value)
        line = line.lstrip(" ")
    prefix = ""
    if line.startswith(":"):
        prefix, _, line = line[1:].partition(" ")
    # Parameters are separated by spaces only: Twisted's parsemsg splits on any Unicode
    # whitespace, which would cut a stranger's "a\u00a0b" or NEL in two.
    head, colon, trailing = line.partition(" :")
    if not colon and head.startswith(":"):
        head, colon, trailing = "", ":", head[1:]
    params = [p for p in head.split(" ") if p]
    if not params:
        raise BadLine("no command")
    command = params.pop(0)
    if colon:
        params.append(trailing)
    return Line(command.upper(), params, tags, prefix)


def format_line(
    command: str,
    params: list[str] | tuple[str, ...],
    prefix: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """A server line (without CR LF). The last parameter is trailing (after ":") when it
    must be, and always when it is text (L{TEXT_LAST}), as servers write it."""
    params = list(params)
    if params:
        last = params[-1]
        if not last or " " in last or last.startswith(":") or command in TEXT_LAST:
            params[-1] = ":" + last
    out = " ".join([command, *params])
    if prefix:
        out = f":{prefix} {out}"
    if tags:
        rendered = ";".join(f"{k}={escape_tag(v)}" if v else k for k, v in tags.items())
        out = f"@{rendered} {out}"
    return out


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def split_text(text: str, budget: int) -> list[str]:
    """C{text} in pieces of at most C{budget} UTF-8 bytes each, cut at a space where one is
    near the end and never inside a character; newlines always cut. At least one piece."""
    budget = max(budget, 4)  # room for any one character
    pieces: list[str] = []
    for para in text.split("\n"):
        data = para.encode("utf-8", "surrogatepass")
        while len(data) > budget:
            cut = budget
            while cut > 0 and (data[cut] & 0xC0) == 0x80:  # a continuation byte
                cut -= 1
            space = data.rfind(b" ", budget // 2, cut + 1)
            if space > 0:
                pieces.append(data[:space].decode("utf-8", "surrogatepass"))
                data = data[space + 1 :]
            else:
                pieces.append(data[:cut].decode("utf-8", "surrogatepass"))
                data = data[cut:]
        pieces.append(data.decode("utf-8", "surrogatepass"))
    return pieces


def nick_of(name: str) -> str:
    """A chatd name as an IRC nick: "." becomes "|", a leading digit gets a "`"."""
    nick = name.replace(".", DOT)
    return LEAD + nick if nick[:1].isdigit() else nick


def name_of(nick: str) -> str:
    """The chatd name a nick stands for (the inverse of L{nick_of}); any other nick maps to
    itself, and the Room's name rules say what is wrong with it."""
    if nick.startswith(LEAD) and nick[1:2].isdigit():
        nick = nick[1:]
    return nick.replace(DOT, ".")


def server_time(when: float) -> str:
    """The IRCv3 C{time} tag: ISO 8601 in UTC with milliseconds."""
    ms = int(round(when * 1000)) % 1000
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(int(when))) + f".{ms:03d}Z"


def parse_time(value: str) -> float | None:
    """A C{timestamp=...} of CHATHISTORY as seconds, or None when it is not one."""
    value = value.removeprefix("timestamp=")
    main, _, frac = value.rstrip("Z").partition(".")
    try:
        stamp = _time.strptime(main, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    seconds = float(calendar.timegm(stamp))
    if frac:
        if not frac.isdigit():
            return None
        seconds += float("0." + frac)
    return seconds


def history_ref(ref: str) -> tuple[str, Any] | None:
    """A CHATHISTORY reference: ("msgid", id), ("timestamp", seconds), ("*", None)."""
    if ref == "*":
        return ("*", None)
    if ref.startswith("msgid="):
        value = ref[6:]
        return ("msgid", int(value)) if value.isdigit() else None
    if ref.startswith("timestamp="):
        seconds = parse_time(ref)
        return None if seconds is None else ("timestamp", seconds)
    return None


def _position(m: Message, ref: tuple[str, Any]) -> float:
    return m.id if ref[0] == "msgid" else m.time


def history_window(
    sub: str, messages: list[Message], refs: list[tuple[str, Any]], limit: int
) -> list[Message]:
    """The messages a CHATHISTORY subcommand asks for, oldest first."""
    if sub == "LATEST":
        ref = refs[0]
        if ref[0] != "*":
            messages = [m for m in messages if _position(m, ref) > ref[1]]
        return messages[-limit:] if limit else []
    ref = refs[0]
    if sub == "BEFORE":
        return [m for m in messages if _position(m, ref) < ref[1]][-limit:]
    if sub == "AFTER":
        return [m for m in messages if _position(m, ref) > ref[1]][:limit]
    if sub == "AROUND":
        before = [m for m in messages if _position(m, ref) < ref[1]]
        after = [m for m in messages if _position(m, ref) >= ref[1]]
        half = limit // 2
        return before[-half:] + after[: limit - min(half, len(before))] if half else after[:limit]
    low, high = sorted((refs[0], refs[1]), key=lambda r: r[1])
    inside = [m for m in messages if _position(m, low) > low[1] and _position(m, high) < high[1]]
    if refs[0][1] > refs[1][1]:  # counted from the later end
        return inside[-limit:]
    return inside[:limit]
