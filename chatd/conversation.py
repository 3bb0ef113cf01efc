"""Conversations (rooms): who is in each one, its rules, and the rules for room names.

A L{Conversation} holds its members' sessions in a L{SessionSet}, as L{Members} holds
everyone's, so joining, leaving and fan-out cost what they do for the whole chat. The
default room is everyone but those who
parted it: it has no member list of its own, and delivers through L{Members} exactly as
the chat did before there were rooms (while nobody here parted it, without a filter).
L{Conversations} is this node's set of rooms: names, limits, joining.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from chatd.events import Event
from chatd.members import Members, SessionSet
from chatd.people import Session, User, name_key

_ROOM = re.compile(r"#[^\W_][\w.-]*\Z")


def kick_keys(user: User) -> list[str]:
    """What a kick holds a person by: the name, and a guest's addresses too (a new guest
    name is one command away; an account's name is its own)."""
    if user.account is not None:
        return [user.key]
    return [user.key, *(f"@{s.client.peer}" for s in user.sessions)]


def room_key(name: str) -> str:
    """Rooms are compared as names are: by their look-alike skeleton (C{#lоbby} with a
    Cyrillic o is C{#lobby})."""
    return name_key(name)


class Conversation:
    """One room: its rules (owner, topic, invitations, kicks) and its members here.

    @ivar present: the sessions of this node's members (L{sessions}: a snapshot of them).
    @ivar users: this node's members, in the order they joined.
    @ivar elsewhere: node id -> names of its members there, as last heard; for the default
        room, which everyone is in, the names of those who parted it there.
    @ivar kicked: name key -> Unix time until which that person may not rejoin.
    @ivar invited: name keys of who may join while the room is invite-only.
    """

    __slots__ = (
        "name",
        "key",
        "topic",
        "owner",
        "invite_only",
        "invited",
        "kicked",
        "present",
        "users",
        "elsewhere",
        "maker",
        "everyone",
        "_default",
    )

    def __init__(self, name: str, owner: str | None = None, topic: str = "") -> None:
        self.name = name
        self.key = room_key(name)
        self.topic = topic
        self.owner = owner
        self.invite_only = False
        self.invited: set[str] = set()
        self.kicked: dict[str, float] = {}
        self.present = SessionSet()
        self.users: dict[User, None] = {}
        self.elsewhere: dict[str, list[str]] = {}
        # The guest who made it (this node only): it becomes the owner by logging in.
        self.maker: User | None = None
        # Who is online on every node (set by L{Conversations}): the default room's members,
        # and whether the members heard of on other nodes are still there.
        self.everyone: Members | None = None
        self._default = False

    def __repr__(self) -> str:
        return f"<Conversation {self.name} ({len(self.users)} here)>"

    def names(self) -> list[str]:
        """Its members on every node, sorted (the default room's: everyone online); those
        of other nodes only while they are online there, so a dead node's drop out."""
        everyone = self.everyone
        if self._default and everyone is not None:
            return everyone.online()
        names = {u.key: u.name for u in self.users}
        online_elsewhere = everyone.elsewhere if everyone is not None else {}
        for listed in self.elsewhere.values():
            for n in listed:
                k = name_key(n)
                if k in online_elsewhere:
                    names.setdefault(k, n)
        return sorted(names.values(), key=str.casefold)

    def count(self) -> int:
        if self._default and self.everyone is not None:
            return self.everyone.online_count()
        return len(self.names())

    @property
    def sessions(self) -> tuple[Session, ...]:
        """The sessions of this node's members; a snapshot, never mutated."""
        return self.present.all

    def add(self, user: User) -> None:
        self.users[user] = None
        for session in user.sessions:
            self.present.add(session)

    def remove(self, user: User) -> None:
        self.users.pop(user, None)
        for session in user.sessions:
            self.present.discard(session)

    def add_session(self, session: Session) -> None:
        self.present.add(session)

    def remove_session(self, session: Session) -> None:
        self.present.discard(session)

    def fanout(self, event: Event) -> None:
        self.present.fanout(event)

    def kicked_for(self, user: User, now: float) -> float:
        """Seconds until C{user} may rejoin (0: they may)."""
        until = 0.0
        for key in kick_keys(user):
            when = self.kicked.get(key, 0.0)
            if when <= now:
                self.kicked.pop(key, None)
            until = max(until, when)
        return max(0.0, until - now)

    def state(self) -> str:
        """What other nodes and the store keep of it (its members are not in it)."""
        return json.dumps(
            {
                "name": self.name,
                "owner": self.owner,
                "topic": self.topic,
                "invite_only": self.invite_only,
                "invited": sorted(self.invited),
                "kicked": self.kicked,
            }
        )

    def take_state(self, data: dict[str, Any]) -> None:
        """Another node's (or the store's) word on the room. An owner is never lost: a
        state without one comes from a node that had not yet heard whose the room is."""
        if data.get("owner") is not None:
            self.owner = str(data["owner"])
        self.topic = str(data.get("topic", ""))
        self.invite_only = bool(data.get("invite_only", False))
        self.invited = {str(k) for k in data.get("invited", ())}
        self.kicked = {str(k): float(v) for k, v in dict(data.get("kicked", {})).items()}


class Conversations:
    """This node's rooms, by key, and the rules for their names.

    The default room is a L{Conversation} too (its topic, its name), but its members are
    everyone but L{outside}: fan-out uses L{Members} for it.

    @ivar outside: this node's people who parted the default room (each is in another).
    """

    def __init__(self, members: Members, default: str, max_length: int) -> None:
        self.members = members
        self.max_length = max_length
        self.default = Conversation(self.normal(default))
        self.default._default = True
        self.default.everyone = members
        self._rooms: dict[str, Conversation] = {self.default.key: self.default}
        self.outside: set[User] = set()

    def holds(self, user: User, conversation: Conversation) -> bool:
        """Whether C{user} is in C{conversation}."""
        if conversation is self.default:
            return user not in self.outside
        return conversation.key in user.rooms

    def __iter__(self) -> Iterator[Conversation]:
        return iter(sorted(self._rooms.values(), key=lambda c: c.key))

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, name: str) -> Conversation | None:
        return self._rooms.get(room_key(name))

    def add(self, conversation: Conversation) -> Conversation:
        conversation.everyone = self.members
        return self._rooms.setdefault(conversation.key, conversation)

    def drop(self, conversation: Conversation) -> None:
        if conversation is not self.default and self._rooms.get(conversation.key) is conversation:
            del self._rooms[conversation.key]

    def is_default(self, conversation: Conversation) -> bool:
        return conversation is self.default

    def problem(self, name: str) -> str | None:
        """Why C{name} cannot name a room, or None."""
        limit = self.max_length
        if not 2 <= len(name) <= limit:
            return f"a room name is # and 1 to {limit - 1} characters, such as #lobby"
        if not _ROOM.match(name):
            return (
                "a room name starts with # and has letters, digits, '.', '-' or '_' (such as #dev)"
            )
        return None

    @staticmethod
    def normal(name: str) -> str:
        """C{name} as typed, in one Unicode form (so two spellings that look alike and are
        alike byte for byte name one room)."""
        name = unicodedata.normalize("NFC", name.strip())
        return name if name.startswith("#") or not name else "#" + name

    def names(self, conversation: Conversation) -> list[str]:
        """Who is in C{conversation}, on every node, sorted."""
        if conversation is self.default and (self.outside or conversation.elsewhere):
            out = {u.key for u in self.outside}
            out.update(name_key(n) for names in conversation.elsewhere.values() for n in names)
            return [n for n in conversation.names() if name_key(n) not in out]
        return conversation.names()

    def count(self, conversation: Conversation) -> int:
        if conversation is self.default and (self.outside or conversation.elsewhere):
            return len(self.names(conversation))
        return conversation.count()

    def fanout(self, room: str, event: Event) -> None:
        """Deliver C{event} to the room called C{room} on this node (nobody, if nobody
        here is in it)."""
        if room == self.default.name:  # the usual case: no lookup
            self.members.fanout(event, self.outside)
            return
        conversation = self._rooms.get(room_key(room)) if room else self.default
        if conversation is None:
            return
        if conversation is self.default:
            self.members.fanout(event, self.outside)
        else:
            conversation.fanout(event)

    def sessions(self, conversation: Conversation) -> tuple[Session, ...]:
        if conversation is self.default:
            return self._inside() if self.outside else self.members.sessions
        return conversation.sessions

    def _inside(self) -> tuple[Session, ...]:
        """The default room's sessions while someone here parted it."""
        out = self.outside
        return tuple(s for s in self.members.sessions if s.user not in out)

    def leave_default(self, user: User) -> None:
        self.outside.add(user)

    def enter_default(self, user: User) -> bool:
        """C{user} is in the default room again; whether they had left it."""
        if user in self.outside:
            self.outside.discard(user)
            return True
        return False
