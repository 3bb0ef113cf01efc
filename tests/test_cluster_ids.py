"""Ids are unique across the cluster: a whisper's id comes from the store's one counter
when other nodes take ids from it too, never from this node's own count (which another
node's message may have taken meanwhile)."""

from __future__ import annotations

import itertools

from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.bus import LocalBus
from chatd.commands import discover
from chatd.config import Config
from chatd.events import Message
from chatd.room import Room
from chatd.testing import FakeClient, MemoryStore


class CountingStore(MemoryStore):
    """One database for every node, with one id counter, as PostgreSQL's meta.last_id."""

    shared_ids = True

    def __init__(self) -> None:
        super().__init__()
        self.counter = 0

    def _take(self, proposed: int) -> int:
        self.counter = max(self.counter + 1, proposed)
        return self.counter

    def take_id(self, proposed: int) -> defer.Deferred[int]:
        return defer.succeed(self._take(proposed))

    def add_message(self, message: Message) -> defer.Deferred[Message]:
        message.id = self._take(message.id)
        return super().add_message(message)

    def keep_whisper(self, to: str, message: Message) -> defer.Deferred[Message]:
        message.id = self._take(message.id)
        return super().keep_whisper(to, message)


def nodes(count: int = 2) -> list[Room]:
    clock = Clock()
    clock.advance(1_700_000_000)
    store, group = CountingStore(), []
    guests = (f"Guest{i}" for i in itertools.count(1))
    rooms = []
    for node in "abc"[:count]:
        bus = LocalBus(group, node=node)
        bus.startService()
        config = Config(node=node, messages_per_hour=0, lines_per_second=0)
        room = Room(
            config, clock, discover(), store, defer.maybeDeferred, lambda: next(guests), bus=bus
        )
        room.startService()
        rooms.append(room)
    return rooms


def join(room: Room, name: str) -> FakeClient:
    client = FakeClient()
    client.room = room
    client.session = room.connect(client)
    room.receive(client.session, f"/nick {name}")
    room.clock.advance(0)
    client.take()
    return client


def messages(client: FakeClient) -> list[Message]:
    return [e for e in client.events if isinstance(e, Message)]


def test_whispers_and_messages_of_two_nodes_never_share_an_id():
    a, b = nodes()
    ann, bob = join(a, "Ann"), join(b, "Bob")
    ann.take()
    a.receive(ann.session, "/whisper Bob psst")  # node a has given out no id yet
    b.receive(bob.session, "hello")  # nor has node b
    a.receive(ann.session, "hi")
    b.receive(bob.session, "/whisper Ann back")
    ids = {m.text: m.id for m in messages(ann) + messages(bob)}  # as each node knows them
    assert sorted(ids) == ["back", "hello", "hi", "psst"]
    assert len(set(ids.values())) == 4, ids
    assert ann.take() == [
        "* to Bob: psst",
        "Bob: hello",
        ">> Bob: back",
    ]


def test_a_public_message_after_a_whisper_id_is_not_skipped():
    """A whisper id this node counted for itself, taken meanwhile by another node's public
    message, made this node think that message was shown: one lost on the way was never
    read from the store."""
    a, b = nodes()
    ann, bob = join(a, "Ann"), join(b, "Bob")
    ann.take()
    a.receive(ann.session, "/whisper Bob psst")
    group = a.link.bus.group
    group.remove(a.link.bus)  # b's next message does not reach a by the bus
    b.receive(bob.session, "lost on the way")
    group.append(a.link.bus)
    b.receive(bob.session, "arrives")
    assert ann.take() == ["* to Bob: psst", "Bob: lost on the way", "Bob: arrives"]
