"""Fakes for testing the Room without sockets: a door that records, a store that answers at once."""

from __future__ import annotations

import itertools

from twisted.internet import defer
from twisted.internet.task import Clock

from chatd import text
from chatd.commands import discover
from chatd.config import Config
from chatd.events import Event, Message
from chatd.room import Room, Session
from chatd.store import Account, NameTaken


class FakeClient:
    """A door that keeps the text lines its user would see."""

    def __init__(self, door: str = "line", peer: str = "10.0.0.1") -> None:
        self.door = door
        self.peer = peer
        self.events: list[Event] = []
        self.closed: str | None = None
        self.session: Session | None = None

    def deliver(self, event: Event) -> None:
        self.events.append(event)

    def close(self, reason: str) -> None:
        self.closed = reason

    @property
    def lines(self) -> list[str]:
        """What a telnet user would read (own public lines are not echoed)."""
        viewer = self.session.user.name if self.session else None
        out = []
        for e in self.events:
            if isinstance(e, Message) and e.to is None and e.origin is self.session:
                continue
            rendered = text.line(e, viewer)
            if rendered:
                out.extend(rendered.split("\n"))
        return out

    def take(self) -> list[str]:
        lines = self.lines
        self.events.clear()
        return lines


class MemoryStore:
    """A store that answers at once, so a test sees the result of a call right after it."""

    last_id = 0
    account_names: list[str] = []

    def __init__(self) -> None:
        self.saved: list[Message] = []
        self.accounts: dict[str, Account] = {}  # casefolded name -> account
        self.tokens: dict[str, str] = {}  # token hash -> casefolded name

    def start(self) -> None:
        pass

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def add_message(self, message: Message) -> defer.Deferred[Message]:
        self.saved.append(message)
        return defer.succeed(message)

    def messages(self, after_id, through_id, since, limit) -> defer.Deferred[list[Message]]:
        found = [m for m in self.saved if after_id < m.id <= through_id and m.time >= since]
        return defer.succeed(found[-limit:])

    def purge_messages(self, before: float) -> defer.Deferred[int]:
        return defer.succeed(0)

    def create_account(self, name, password_hash, token_hash, when, last_seen):
        if name.casefold() in self.accounts:
            return defer.fail(NameTaken(name))
        self.accounts[name.casefold()] = Account(name, password_hash, last_seen)
        self.tokens[token_hash] = name.casefold()
        return defer.succeed(None)

    def account_for_token(self, token_hash: str) -> defer.Deferred[Account | None]:
        return defer.succeed(self.accounts.get(self.tokens.get(token_hash, "")))

    def set_last_seen(self, name: str, message_id: int) -> defer.Deferred[None]:
        account = self.accounts[name.casefold()]
        self.accounts[name.casefold()] = Account(account.name, account.password_hash, message_id)
        return defer.succeed(None)

    def take_whispers(self, account: str) -> defer.Deferred[list[Message]]:
        return defer.succeed([])

    def __getattr__(self, name: str):
        raise AssertionError(f"these tests do not expect store.{name}")


def make_room(**settings) -> tuple[Room, Clock]:
    clock = Clock()
    clock.advance(1_700_000_000)
    names = (f"Guest{i}" for i in itertools.count(1))
    room = Room(
        Config(**settings),
        clock,
        discover(),
        MemoryStore(),
        defer.maybeDeferred,
        namer=lambda: next(names),
    )
    room.startService()
    return room, clock


def join(room: Room, door: str = "line") -> FakeClient:
    client = FakeClient(door)
    client.session = room.connect(client)
    room.clock.advance(0)  # the reactor turn ends: the join is announced
    return client
