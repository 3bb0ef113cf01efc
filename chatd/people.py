"""Who is in the chat: a L{Client} (one connection as a door offers it), a L{User} (a
person: a guest, or an account on any number of devices) and a L{Session} (one connection
of one user). Flood control, moderation and the command context type against these.
"""

from __future__ import annotations

import itertools
from collections import deque
from functools import lru_cache
from typing import Any, Protocol

from chatd.events import Event
from chatd.lookalike import skeleton

# Names are compared by their look-alike skeleton: "аlice" (Cyrillic а) is "alice".
name_key = lru_cache(maxsize=65536)(skeleton)


class Client(Protocol):
    """What a door offers the Room for one connection.

    A door may also offer C{deliver_all(sessions, event)}: C{deliver} for many of its
    sessions at once (the same callable for all of them), which a fan-out then calls once
    per door rather than C{deliver} once per recipient (L{chatd.members.SessionSet}).
    """

    door: str  # "line", "ws", "json", ...
    peer: str  # the remote address, for logs and per-address rules

    def deliver(self, event: Event) -> None: ...

    def close(self, reason: str) -> None: ...


class User:
    """A person: a guest, or an account on any number of sessions (devices).

    Per-person state (name, standing) is keyed from here, so another device cannot bypass it.
    """

    __slots__ = ("_name", "key", "account", "sessions", "since", "rooms")

    def __init__(self, name: str, since: float, account: str | None = None) -> None:
        self.name = name
        self.account = account
        self.sessions: list[Session] = []
        self.since = since
        # room key -> the chatd.conversation.Conversation, for each room joined besides
        # the default one (everyone is in that); in the order they were joined.
        self.rooms: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = name
        self.key = name_key(name)  # the name as names are compared (L{name_key})

    def __repr__(self) -> str:
        return f"<User {self.name}{' (account)' if self.account else ''}>"


class Session:
    """One connection of one user."""

    __slots__ = ("id", "client", "user", "since", "lines", "token", "closing", "room", "waiting")

    _ids = itertools.count(1)
    # How often any session's current room changed (L{move}): a door that keeps who is in
    # which room between fan-outs knows by it when that went stale.
    moves = 0

    def __init__(self, client: Client, user: User, since: float) -> None:
        self.id = next(Session._ids)
        self.client = client
        self.user = user
        self.since = since
        self.lines = 0
        # The token /login made for this device; /logout cancels it. Tokens from /register
        # and /auth may be shared with other devices (minechat has no other), so they stay.
        self.token: str | None = None
        self.closing = False  # said goodbye: what it sends after that is ignored
        # Lines typed while a command of this connection is still running (a login whose
        # password is being checked): they are taken in order once it has finished.
        self.waiting: deque[str] | None = None
        # The room what it types goes to; a text door prefixes the lines of other rooms.
        self.room: str | None = None

    def move(self, room: str | None) -> None:
        """Make C{room} the current one (the only way to change it: see L{moves})."""
        self.room = room
        Session.moves += 1

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def peer(self) -> str:
        return self.client.peer

    def deliver(self, event: Event) -> None:
        self.client.deliver(event)

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.user.name} {self.client.door} {self.client.peer}>"
