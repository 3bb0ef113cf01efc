"""Text rules shared by every door: cleaning what users type, and the line format.

Cleaning happens once, when text enters the Room, so no door has to trust another's input:
terminal escape sequences and control characters never reach a telnet user raw.
"""

from __future__ import annotations

import re
import time as _time

from chatd.events import Error, Event, History, Identity, Message, Notice, Presence

# CSI / OSC / other ESC sequences, then any remaining C0/C1 control or DEL character.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI ... final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST
    r"|\x1b[@-_]?"  # other two-byte escapes, or a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(text: str) -> str:
    """Drop escape sequences and control characters; tabs become spaces; trim the ends."""
    if text.isprintable():
        return text.strip()
    text = _ESCAPES.sub("", text).replace("\t", " ")
    return _CONTROLS.sub("", text).strip()


def clock_time(when: float) -> str:
    """HH:MM:SS in UTC, the time stamp of history lines."""
    return _time.strftime("%H:%M:%S", _time.gmtime(when))


def _notice_lines(prefix: str, text: str) -> str:
    return "\n".join(prefix + line for line in text.split("\n"))


def message_line(message: Message, viewer: str | None = None, stamped: bool = False) -> str:
    """One message as a text line, as seen by the user named C{viewer}."""
    stamp = f"[{clock_time(message.time)}] " if stamped or message.late else ""
    if message.to is None:
        return f"{stamp}{message.sender}: {message.text}"
    if viewer is not None and viewer == message.sender and viewer != message.to:
        return f"{stamp}* to {message.to}: {message.text}"
    return f"{stamp}>> {message.sender}: {message.text}"


def line(event: Event, viewer: str | None = None) -> str:
    """Render an event for a text door (telnet, plain WebSocket), without the newline.

    An empty string means the event has no text form (a door writes nothing).
    """
    if isinstance(event, Message):
        return message_line(event, viewer)
    if isinstance(event, Notice):
        return _notice_lines("* ", event.text)
    if isinstance(event, Error):
        return _notice_lines("! ", event.text)
    if isinstance(event, Presence):
        if event.update:
            return ""
        return f"* online ({len(event.names)}): " + ", ".join(event.names)
    if isinstance(event, History):
        if not event.messages:
            return f"* {event.reason}: nothing yet"
        head = f"* {event.reason} ({len(event.messages)}):"
        return "\n".join([head] + [message_line(m, viewer, stamped=True) for m in event.messages])
    if isinstance(event, Identity):
        if event.account:
            return f"* you are {event.name} (logged in)"
        return f"* you are {event.name}"
    raise TypeError(f"no text form for {event!r}")
