"""Text rules shared by every door: cleaning what users type, and the line format.

Cleaning happens once, when text enters the Room, so no door has to trust another's input:
terminal escape sequences and control characters never reach a telnet user raw.
"""

from __future__ import annotations

import re
import time as _time
import unicodedata
from collections.abc import Iterator
from typing import Any

from chatd.events import Error, Event, History, Identity, Message, Notice, Presence, Rooms

# CSI / OSC / other ESC sequences, then any remaining C0/C1 control or DEL character.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI ... final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST
    r"|\x1b[@-_]?"  # other two-byte escapes, or a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


# Characters that show nothing yet change what readers see or compare: format characters
# (zero-width space and joiners, direction marks and isolates, BOM, soft hyphen...), lone
# surrogates (a JSON "\ud800" decodes to one; it cannot be encoded as UTF-8) and controls.
_INVISIBLE = frozenset(("Cf", "Cs", "Cc"))


def _visible(text: str) -> str:
    category = unicodedata.category
    return "".join(c for c in text if c.isprintable() or category(c) not in _INVISIBLE)


def clean(text: str) -> str:
    """Drop escape sequences, control and invisible format characters; tabs become spaces;
    trim the ends.

    C{str.isprintable} is False for every control, format (Cf) and surrogate character, so
    printable text, nearly every line, takes the fast path.
    """
    if text.isprintable():
        return text.strip()
    text = _ESCAPES.sub("", text).replace("\t", " ")
    return _visible(_CONTROLS.sub("", text)).strip()


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def too_long(text: str, limit: int) -> str | None:
    """Why C{text} may not be one chat message (over C{limit} UTF-8 bytes), or None.

    The one wording every door uses, whether the Room refuses the message or a door stops
    reading it early to bound its memory. C{limit} 0 means no limit.
    """
    if not limit or len(text) * 4 <= limit:  # a character is at most 4 bytes
        return None
    size = utf8_size(text)
    return None if size <= limit else over_limit(size, limit)


def over_limit(size: int, limit: int) -> str:
    """What a message of C{size} bytes, over C{limit}, is refused with."""
    return (
        f"your message was {size} bytes, over the limit of {limit}, and was not sent; "
        "split it into shorter messages"
    )


def cut(text: str, limit: int) -> str:
    """C{text} within C{limit} UTF-8 bytes (plus a note of its size), for showing what the
    store holds from before a lower limit, or from another node's settings."""
    if not limit or len(text) * 4 <= limit:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + f" … [cut: {len(data)} bytes]"


def clock_time(when: float) -> str:
    """HH:MM:SS in UTC, the time stamp of history lines."""
    return _time.strftime("%H:%M:%S", _time.gmtime(when))


def _notice_lines(prefix: str, text: str) -> str:
    return "\n".join(prefix + line for line in text.split("\n"))


def message_line(
    message: Message, viewer: str | None = None, stamped: bool = False, mine: bool | None = None
) -> str:
    """One message as a text line, as seen by the user named C{viewer}; C{mine} says
    whether the viewer sent it (L{Message.mine}), and when None names are compared."""
    stamp = f"[{clock_time(message.time)}] " if stamped or message.late else ""
    if message.to is None:
        return f"{stamp}{message.sender}: {message.text}"
    if mine is None:
        mine = viewer is not None and viewer == message.sender and viewer != message.to
    if mine:
        return f"{stamp}* to {message.to}: {message.text}"
    return f"{stamp}>> {message.sender}: {message.text}"


def sharing(event: Event) -> tuple[Any, str | None] | None:
    """Who gets what of an event whose bytes a text door sends to many: C{(origin, room)}.

    The session C{origin} gets nothing (a public line is not echoed to its sender); those
    whose current room is C{room} (everyone, when it is None) get the same bytes, the others
    the lines prefixed with the room (L{elsewhere}). None: the event is rendered per viewer
    (a whisper, a history).
    """
    kind = type(event)
    if kind is Message:
        if event.to is not None:  # type: ignore[attr-defined]
            return None
        return event.origin, event.room  # type: ignore[attr-defined]
    if kind is Notice:
        return None, event.room  # type: ignore[attr-defined]
    if kind is History:
        return None
    return None, None


def elsewhere(event: Event, here: str | None) -> str | None:
    """The room C{event} belongs to when it is not C{here} (the viewer's current room):
    a text door prefixes its lines with it (C{[#dev] ann: hi}); None when it is not about
    another room."""
    if type(event) is not Message and type(event) is not Notice:
        return None  # a member list or history answers the one who asked: no prefix
    room = event.room
    if not room or here is None or room == here:
        return None
    return room  # here "" : the viewer is elsewhere, whichever room it is


def line(
    event: Event, viewer: str | None = None, here: str | None = None, mine: bool | None = None
) -> str:
    """Render an event for a text door (telnet, plain WebSocket), without the newline.

    An empty string means the event has no text form (a door writes nothing). An event of
    a room other than C{here} (the viewer's current room) is prefixed with that room.
    C{mine}: whether the viewer sent a message (L{Message.mine}).
    """
    room = elsewhere(event, here)
    if room is not None:
        plain = line(event, viewer, None, mine)
        return "\n".join(f"[{room}] {part}" for part in plain.split("\n")) if plain else ""
    if isinstance(event, Message):
        return message_line(event, viewer, mine=mine)
    if isinstance(event, Notice):
        return _notice_lines("* ", event.text)
    if isinstance(event, Error):
        return _notice_lines("! ", event.text)
    if isinstance(event, Presence):
        if event.update:
            return ""
        if event.room is not None:
            return f"* in {event.room} ({len(event.names)}): " + ", ".join(event.names)
        return f"* online ({len(event.names)}): " + ", ".join(event.names)
    if isinstance(event, History):
        return "\n".join(history_lines(event, viewer, 0))
    if isinstance(event, Rooms):
        return ""  # told in words by the notices that come with it
    if isinstance(event, Identity):
        if event.account:
            return f"* you are {event.name} (logged in)"
        return f"* you are {event.name}"
    raise TypeError(f"no text form for {event!r}")


def history_lines(
    event: History, viewer: str | None, limit: int, session: object = None
) -> Iterator[str]:
    """A history event's lines, one at a time: a heading, then each message, its text cut
    to C{limit} bytes (0: whole). Lazy, so a door can send them as its client reads.
    C{session}: the viewer's, to tell its own whispers (L{Message.mine})."""
    if not event.messages:
        yield f"* {event.reason}: nothing yet"
        return
    yield f"* {event.reason} ({len(event.messages)}):"
    rooms = event.room is None and len({m.room for m in event.messages if m.room}) > 1
    for m in event.messages:
        shown = message_line(cut_message(m, limit), viewer, True, m.mine(session))
        yield f"[{m.room}] {shown}" if rooms and m.room else shown


def cut_message(m: Message, limit: int) -> Message:
    """C{m}, or a copy with its text L{cut} to C{limit} bytes."""
    text = cut(m.text, limit)
    if text is m.text:
        return m
    copy = Message(m.id, m.time, m.sender, text, m.to, m.origin, m.late, m.room)
    copy.by = m.by
    return copy


def chunks(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The pieces joined into chunks of about C{size} bytes (one piece may be bigger)."""
    held: list[bytes] = []
    held_size = 0
    for piece in pieces:
        held.append(piece)
        held_size += len(piece)
        if held_size >= size:
            yield b"".join(held)
            held, held_size = [], 0
    if held:
        yield b"".join(held)
