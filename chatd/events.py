"""What the Room tells sessions. Doors render these into their own wire format.

An event is delivered to many sessions, so each keeps a small cache of its renderings:
a door renders an event once and writes the same bytes to every recipient.
"""

from __future__ import annotations

from typing import Any

DEFAULT_ROOM = "#lobby"  # the room of messages saved before there were rooms (config default_room)


class Event:
    """Base of everything the Room delivers.

    @ivar wire: door key -> this event in that door's wire format, filled by L{rendered}.
        A door's hot path may read it first with C{wire.get(key)} (no call per recipient);
        a rendering is never None, so None means "not rendered yet".
    """

    __slots__ = ("wire",)
    kind = "event"

    def __init__(self) -> None:
        self.wire: dict[Any, Any] = {}

    def rendered(self, key: Any, render: Any) -> Any:
        """Return C{render(self)}, computed once per key for all recipients."""
        try:
            return self.wire[key]
        except KeyError:
            value = self.wire[key] = render(self)
            return value


class Message(Event):
    """A public message, or a whisper when C{to} is set.

    @ivar origin: the session that sent it; text doors do not echo a line to its sender.
    @ivar room: the conversation it was said in; empty for a whisper (between people).
    @ivar by: the person (a L{chatd.people.User}) who sent it, on this node; with
        C{origin}, what tells a whisper's own echo (L{mine}) from one received. Like
        C{origin}, it never leaves its node.
    """

    __slots__ = ("id", "time", "sender", "text", "to", "origin", "late", "room", "by")
    kind = "message"

    def __init__(
        self,
        id: int,
        time: float,
        sender: str,
        text: str,
        to: str | None = None,
        origin: object = None,
        late: bool = False,
        room: str = DEFAULT_ROOM,
    ) -> None:
        super().__init__()
        self.id = id
        self.time = time
        self.sender = sender
        self.text = text
        self.to = to
        self.origin = origin
        self.late = late
        self.room = "" if to is not None else room
        self.by: object = getattr(origin, "user", None)

    @property
    def private(self) -> bool:
        return self.to is not None

    def mine(self, session: object) -> bool | None:
        """Whether C{session} sent this (or is a device of the person who did); None when
        this node cannot tell (a message read from the store), and names must do.

        By identity, not by name: a rename or a login between sending a whisper and its
        echo (a slow save holds the echo) must not make the echo read as received."""
        if self.origin is None and self.by is None:
            return None
        return session is not None and (
            session is self.origin or getattr(session, "user", None) is self.by
        )


class Notice(Event):
    """Something the server says: joins, leaves, renames, results of commands.

    @ivar room: the conversation it is about ("ann joined"), or None (a command's answer).
    @ivar about: what happened, for doors that show it their own way rather than as text
        (IRC as JOIN, NICK, TOPIC, KICK), so none of them reads the wording: C{"joined"}
        or C{"left"} (C{subject}: the names), C{"renamed"} (old name, new name),
        C{"topic"} (who set it, the topic), C{"removed"} (who, by whom), C{"invited"} (by
        whom, to which room), C{"current"} (the session's current room changed: doors
        without one skip it); None: plain text.
    """

    __slots__ = ("text", "room", "about", "subject")
    kind = "notice"

    def __init__(
        self,
        text: str,
        room: str | None = None,
        about: str | None = None,
        subject: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.text = text
        self.room = room
        self.about = about
        self.subject = subject


class Error(Event):
    """What was wrong with what the user sent, and what to do instead."""

    __slots__ = ("text",)
    kind = "error"

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class Presence(Event):
    """Who is online now (for doors that keep a member list, such as the browser page)."""

    __slots__ = ("names", "update", "room")
    kind = "presence"

    def __init__(self, names: list[str], update: bool = False, room: str | None = None) -> None:
        super().__init__()
        self.names = names
        self.update = update  # unasked-for: text doors show nothing
        self.room = room  # the members of this conversation; None: everyone online


class History(Event):
    """Past messages sent to one session (on /history, on login, on reconnect)."""

    __slots__ = ("messages", "reason", "room")
    kind = "history"

    def __init__(self, messages: list[Message], reason: str, room: str | None = None) -> None:
        super().__init__()
        self.messages = messages
        self.reason = reason
        self.room = room  # one conversation's past (/history), or None (several: catch-up)


class Identity(Event):
    """Who this session is now: sent on connect, rename, login and logout."""

    __slots__ = ("name", "account", "token")
    kind = "identity"

    def __init__(self, name: str, account: str | None = None, token: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.account = account
        self.token = token


class Rooms(Event):
    """The rooms one session is in, and its current one: sent when they change (a join, a
    part, a kick, a login), for doors that list them (the page). Text doors show nothing."""

    __slots__ = ("names", "current")
    kind = "rooms"

    def __init__(self, names: list[str], current: str) -> None:
        super().__init__()
        self.names = names
        self.current = current
