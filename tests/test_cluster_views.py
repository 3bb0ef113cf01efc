"""What a node says of the whole cluster: C{/status} lists an account's sessions on every
node (naming a node that does not answer in time), and C{/list} answers at once from the
last known list while the bus is away or frozen, saying it may be out of date.

Nodes of one process on LocalBus groups and a driven clock (tests/test_room_bus.py)."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.bus import LocalBus
from chatd.cluster import ASK_TIMEOUT
from chatd.commands import discover
from chatd.config import Config
from chatd.room import Room
from chatd.testing import FakeClient, MemoryStore

STALE = (
    "* the other servers did not answer at once: the list that follows may be out of date "
    "(their people as last heard)"
)


class FreezableBus(LocalBus):
    """A LocalBus whose questions (who is online, where) can go unanswered, as a frozen
    Redis leaves them; or that says it is away, as a cut one does."""

    frozen = False
    away = False

    def online(self) -> defer.Deferred[list[str]]:
        return defer.Deferred() if self.frozen else super().online()

    def by_node(self) -> defer.Deferred[dict[str, list[str]]]:
        return defer.Deferred() if self.frozen else super().by_node()

    def answering(self) -> bool:
        return not self.away


def nodes(*names: str) -> tuple[list[Room], list[FreezableBus], Clock]:
    clock = Clock()
    clock.advance(1_700_000_000)
    store, group = MemoryStore(), []
    guests = (f"Guest{i}" for i in itertools.count(1))
    rooms, buses = [], []
    for node in names:
        bus = FreezableBus(group, node=node)
        bus.startService()
        config = Config(node=node, messages_per_hour=0, lines_per_second=0)
        room = Room(
            config, clock, discover(), store, defer.maybeDeferred, lambda: next(guests), bus=bus
        )
        room.startService()
        rooms.append(room)
        buses.append(bus)
    return rooms, buses, clock


def connect(room: Room, peer: str) -> FakeClient:
    client = FakeClient(peer=peer)
    client.room = room
    client.session = room.connect(client)
    room.clock.advance(0)
    client.take()
    return client


def sessions_line(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("* your sessions"))


def test_status_lists_an_accounts_sessions_on_every_node():
    (a, b), _, _ = nodes("a", "b")
    here = connect(a, "10.0.0.1")
    here.send("/register Ann correct-horse-battery")
    there = connect(b, "10.0.0.2")
    there.send("/login Ann correct-horse-battery")
    a.clock.advance(0)
    here.take()
    lines = here.send("/status")
    assert sessions_line(lines).startswith("* your sessions (2): telnet from 10.0.0.1 for ")
    assert "telnet from 10.0.0.2 for " in sessions_line(lines)
    assert sessions_line(lines).endswith(" on server b")
    assert not any("did not answer" in line for line in lines)


def test_status_names_a_node_that_does_not_answer_in_time():
    (a, b), _, clock = nodes("a", "b")
    here = connect(a, "10.0.0.1")
    here.send("/register Ann correct-horse-battery")
    there = connect(b, "10.0.0.2")
    there.send("/login Ann correct-horse-battery")
    clock.advance(0)
    here.take()
    silent = LocalBus(a.link.bus.group, node="c")  # a node whose chat does not answer
    silent.startService()
    silent.present = ["Ann"]
    assert here.send("/status") == []  # waiting for the nodes to answer
    clock.advance(ASK_TIMEOUT)
    lines = here.take()
    assert "on server b" in sessions_line(lines)
    assert "* (not listed: your sessions on server c, which did not answer in time)" in lines


def test_list_answers_at_once_from_the_last_known_list_while_the_bus_is_away():
    (a, b), (bus_a, _), _ = nodes("a", "b")
    ann, bob = connect(a, "10.0.0.1"), connect(b, "10.0.0.2")
    ann.send("/nick Ann")
    bob.send("/nick Bob")
    a.clock.advance(0)
    ann.take()
    assert ann.send("/list") == ["* online (2): Ann, Bob"]
    bus_a.away = True
    assert ann.send("/list") == [STALE, "* online (2): Ann, Bob"]


def test_list_answers_within_the_deadline_and_then_at_once_while_the_bus_is_frozen():
    (a, b), (bus_a, _), clock = nodes("a", "b")
    ann, bob = connect(a, "10.0.0.1"), connect(b, "10.0.0.2")
    ann.send("/nick Ann")
    bob.send("/nick Bob")
    clock.advance(0)
    ann.take()
    bus_a.frozen = True
    assert ann.send("/list") == []
    clock.advance(ASK_TIMEOUT)
    assert ann.take() == [STALE, "* online (2): Ann, Bob"]
    # The question is still unanswered: the next /list does not wait for it again.
    assert ann.send("/list") == [STALE, "* online (2): Ann, Bob"]


def test_a_guests_status_on_a_cluster_answers_at_once():
    (a, _b), (bus_a, _), _ = nodes("a", "b")
    guest: Any = connect(a, "10.0.0.1")
    bus_a.frozen = True
    lines = guest.send("/status")
    assert sessions_line(lines).startswith("* your sessions (1): telnet from 10.0.0.1 for ")
