"""Fakes for testing the Room without sockets: chatd.testing's, as plugin authors get them."""

from __future__ import annotations

from twisted.internet.task import Clock

from chatd.testing import FakeClient, MemoryStore, TestRoom
from chatd.testing import make_room as _make_room

__all__ = ["FakeClient", "MemoryStore", "join", "make_room"]


def make_room(**settings) -> tuple[TestRoom, Clock]:
    room = _make_room(**settings)
    return room, room.clock


def join(room: TestRoom, door: str = "line") -> FakeClient:
    client = FakeClient(door)
    client.room = room
    client.session = room.connect(client)
    room.clock.advance(0)  # the reactor turn ends: the join is announced
    return client
