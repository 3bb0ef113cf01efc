"""Test a chatd command without sockets, in a few lines (as C{treq.testing} does for HTTP).

    from chatd.testing import make_room

    def test_roll():
        room = make_room(commands=[roll])
        ann, bob = room.join("Ann"), room.join("Bob")
        ann.send("/roll d6")
        assert bob.take() == ["* Ann rolled d6: 4"]

L{make_room} builds the real Room, with an in-memory store that answers at once, a
L{Clock} the test advances, and guest names C{Guest1}, C{Guest2}, ... Each L{FakeClient}
keeps what its user would read on telnet.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from chatd import text
from chatd.commands import Command, Registry, discover
from chatd.config import Config
from chatd.events import Event, Message
from chatd.people import Session
from chatd.room import Room
from chatd.store import Account, NameTaken, Scheduled

__all__ = ["FakeClient", "MemoryStore", "TestRoom", "guest_names", "make_room"]


class FakeClient:
    """A door that keeps the events its user was sent, and the lines telnet would show."""

    def __init__(self, door: str = "line", peer: str = "10.0.0.1") -> None:
        self.door = door
        self.peer = peer
        self.events: list[Event] = []
        self._here: dict[int, str | None] = {}  # id(event) -> the current room when it came
        self.closed: str | None = None
        self.session: Session | None = None
        self.room: Room | None = None

    def deliver(self, event: Event) -> None:
        self.events.append(event)
        self._here[id(event)] = self.session.room if self.session else None

    def close(self, reason: str) -> None:
        self.closed = reason

    @property
    def lines(self) -> list[str]:
        """What a telnet user would read (own public lines are not echoed; lines of a room
        other than the current one are prefixed with it)."""
        viewer = self.session.user.name if self.session else None
        here = self.session.room if self.session else None
        out = []
        for e in self.events:
            if isinstance(e, Message) and e.to is None and e.origin is self.session:
                continue
            mine = e.mine(self.session) if isinstance(e, Message) else None
            rendered = text.line(e, viewer, self._here.get(id(e), here), mine)
            if rendered:
                out.extend(rendered.split("\n"))
        return out

    def take(self) -> list[str]:
        """The lines received since the last C{take}."""
        lines = self.lines
        self.events.clear()
        self._here.clear()
        return lines

    def send(self, line: str) -> list[str]:
        """Type C{line}; the lines received since the last C{take}, the answer among them."""
        assert self.room is not None and self.session is not None
        self.room.receive(self.session, line)
        return self.take()


class MemoryStore:
    """A store in memory that answers at once: messages, accounts, tokens and the cache.

    With C{numbers}, it numbers each saved message past the last one, as PostgreSQL does
    for the nodes of a cluster: share one between rooms on one bus to test them as nodes.
    """

    def __init__(self, numbers: bool = False) -> None:
        self.numbers = numbers
        self.saved: list[Message] = []
        self.accounts: dict[str, Account] = {}
        self.passwords: dict[str, str | None] = {}
        self.tokens: dict[str, str] = {}  # token hash -> account
        self.kept: dict[str, list[Message]] = {}
        self.cache: dict[str, str] = {}
        self.rows: dict[tuple[str, int], Scheduled] = {}  # scheduled messages
        self.memberships: dict[str, set[str]] = {}  # account (casefolded) -> rooms
        self.room_states: dict[str, str] = {}
        self.last_id = 0
        self.account_names: list[str] = []

    def start(self) -> None:
        pass

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def ping(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def recovered(self) -> defer.Deferred[None]:
        return defer.succeed(None)  # never in an outage

    def add_message(self, message: Message) -> defer.Deferred[Message]:
        if self.numbers:
            message.id = max((m.id for m in self.saved), default=0) + 1
        self.saved.append(message)
        return defer.succeed(message)

    def messages(
        self, after_id, through_id, since, limit, rooms=None
    ) -> defer.Deferred[list[Message]]:
        found = [
            m
            for m in self.saved
            if after_id < m.id <= through_id
            and m.time >= since
            and (rooms is None or m.room in rooms)
        ]
        return defer.succeed(found[-limit:] if limit else [])

    def join_room(self, account: str, room: str) -> defer.Deferred[None]:
        self.memberships.setdefault(account.casefold(), set()).add(room)
        return defer.succeed(None)

    def part_room(self, account: str, room: str) -> defer.Deferred[None]:
        self.memberships.get(account.casefold(), set()).discard(room)
        return defer.succeed(None)

    def save_room(self, room: str, state: str) -> defer.Deferred[None]:
        if state:
            self.room_states[room] = state
        else:
            self.room_states.pop(room, None)
        return defer.succeed(None)

    def claim_room(self, room: str, state: str) -> defer.Deferred[str]:
        return defer.succeed(self.room_states.setdefault(room, state))

    def rooms(self) -> defer.Deferred[list[str]]:
        return defer.succeed([self.room_states[k] for k in sorted(self.room_states)])

    def _with_rooms(self, account: Account | None) -> Account | None:
        if account is None:
            return None
        joined = tuple(sorted(self.memberships.get(account.name.casefold(), ())))
        return dataclasses.replace(account, rooms=joined)

    def purge_messages(self, before: float) -> defer.Deferred[int]:
        return defer.succeed(0)

    def create_account(self, name, password_hash, token_hash, now, last_seen):
        if name.casefold() in self.accounts:
            return defer.fail(NameTaken(name))
        self.accounts[name.casefold()] = Account(name, password_hash, last_seen)
        self.tokens[token_hash] = name.casefold()
        return defer.succeed(None)

    def account(self, name: str) -> defer.Deferred[Account | None]:
        return defer.succeed(self._with_rooms(self.accounts.get(name.casefold())))

    def account_for_token(self, token_hash: str) -> defer.Deferred[Account | None]:
        key = self.tokens.get(token_hash)
        return defer.succeed(None if key is None else self._with_rooms(self.accounts.get(key)))

    def set_password_hash(self, name: str, password_hash: str) -> defer.Deferred[None]:
        account = self.accounts[name.casefold()]
        self.accounts[name.casefold()] = dataclasses.replace(account, password_hash=password_hash)
        return defer.succeed(None)

    def add_token(self, name: str, token_hash: str, now: float) -> defer.Deferred[None]:
        self.tokens[token_hash] = name.casefold()
        return defer.succeed(None)

    def remove_token(self, token_hash: str) -> defer.Deferred[None]:
        self.tokens.pop(token_hash, None)
        return defer.succeed(None)

    def set_last_seen(self, name: str, last_id: int) -> defer.Deferred[None]:
        account = self.accounts.get(name.casefold())
        if account is not None:
            self.accounts[name.casefold()] = dataclasses.replace(account, last_seen=last_id)
        return defer.succeed(None)

    def keep_whisper(self, to: str, message: Message) -> defer.Deferred[Message]:
        self.kept.setdefault(to.casefold(), []).append(message)
        return defer.succeed(message)

    shared_ids = False  # one node's store, or nodes in a test that number alike

    def take_id(self, proposed: int) -> defer.Deferred[int]:
        return defer.succeed(proposed)

    def take_whispers(self, name: str) -> defer.Deferred[list[Message]]:
        return defer.succeed(self.kept.pop(name.casefold(), []))

    def read_account_names(self) -> defer.Deferred[list[str]]:
        return defer.succeed([a.name for a in self.accounts.values()])

    def cache_get(self, key: str) -> defer.Deferred[str | None]:
        return defer.succeed(self.cache.get(key))

    def cache_put(self, key: str, value: str) -> defer.Deferred[None]:
        self.cache[key] = value
        return defer.succeed(None)

    def save_scheduled(self, node, id, account, due, text, to) -> defer.Deferred[None]:
        self.rows[(node, id)] = Scheduled(id, account, due, text, to)
        return defer.succeed(None)

    def drop_scheduled(self, node: str, id: int) -> defer.Deferred[None]:
        self.rows.pop((node, id), None)
        return defer.succeed(None)

    def scheduled(self, node: str) -> defer.Deferred[list[Scheduled]]:
        mine = sorted((id, row) for (n, id), row in self.rows.items() if n == node)
        return defer.succeed([row for _, row in mine])


class TestRoom(Room):
    """The real Room, with a way to bring people in."""

    __test__ = False  # not a pytest test class

    def join(  # type: ignore[override]
        self, name: Any = None, peer: str = "10.0.0.1", door: str = "line"
    ) -> Any:
        """A new connection (renamed to C{name} when given), its greeting already taken.

        Given a session and a room name it is the Room's own L{Room.join} (C{/join}).
        """
        if isinstance(name, Session):
            return super().join(name, peer)
        client = self.guest(door, peer, announce=name is None)
        if name is not None:
            self.rename(client.session, name)
            self.clock.advance(0)  # the reactor turn ends: the join is announced
        client.take()
        return client

    def guest(self, door: str = "line", peer: str = "10.0.0.1", announce: bool = True) -> Any:
        """A new connection as a guest, with its greeting still to be read (to test it)."""
        client = FakeClient(door, peer)
        client.room = self
        client.session = self.connect(client)
        if announce:
            self.clock.advance(0)  # the reactor turn ends: the join is announced
        return client


def guest_names() -> Iterator[str]:
    """C{Guest1}, C{Guest2}, ...: one series, shared by rooms of one cluster, never clashes."""
    return (f"Guest{i}" for i in itertools.count(1))


def make_room(
    clock: Clock | None = None,
    commands: Iterable[Command] | None = None,
    store: Any = None,
    bus: Any = None,
    names: Iterator[str] | None = None,
    **settings: Any,
) -> TestRoom:
    """A started Room on C{clock} (a new L{Clock} by default) with C{commands} (by
    default every installed command plugin) and L{Config} C{settings}.

    Rooms that are nodes of one cluster share a C{bus} group, a C{store} (numbering, see
    L{MemoryStore}), a C{clock} and a series of guest C{names} (L{guest_names}).
    """
    if clock is None:
        clock = Clock()
        clock.advance(1_700_000_000)
    if names is None:
        names = guest_names()
    registry = discover() if commands is None else Registry(commands)
    room = TestRoom(
        Config(**settings),
        clock,
        registry,
        store if store is not None else MemoryStore(),
        defer.maybeDeferred,
        namer=lambda: next(names),
        bus=bus,
    )
    room.startService()
    return room
