"""Old names for chatd.testing, kept only for tests/test_rooms_bus.py until it uses
chatd.testing directly (other work is editing it); then delete this file.

Use C{chatd.testing.make_room} and C{TestRoom.guest} in new tests.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from chatd.testing import FakeClient, MemoryStore, TestRoom
from chatd.testing import make_room as _make_room

__all__ = ["FakeClient", "MemoryStore", "join", "make_room"]


def make_room(**settings) -> tuple[TestRoom, Clock]:
    room = _make_room(**settings)
    return room, room.clock


def join(room: TestRoom, door: str = "line") -> FakeClient:
    return room.guest(door)
