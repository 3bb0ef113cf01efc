"""Fan-out through the line door's own path (LineFactory.deliver_all, Turn.write_all): what
each telnet user reads is what one delivery at a time gave them, in the order it was said."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chatd.doors.line import LineFactory
from chatd.events import Notice
from chatd.testing import make_room


class Telnet:
    """One line-door connection on a StringTransport."""

    def __init__(self, factory: LineFactory, name: str) -> None:
        self.transport = StringTransport()
        self.clock = factory.room.clock
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        self.protocol.makeConnection(self.transport)
        self.clock.advance(0)
        self.type(f"/rename {name}")
        self.read()

    def type(self, text: str) -> None:
        self.protocol.dataReceived(text.encode("utf-8") + b"\r\n")
        self.clock.advance(0)

    def read(self) -> list[str]:
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return data.decode("utf-8").splitlines()


def _people(*names: str) -> tuple[Any, list[Telnet]]:
    room = make_room(lines_per_second=0, messages_per_hour=0)
    factory = LineFactory(room)
    people = [Telnet(factory, name) for name in names]
    for person in people:
        person.read()
    return room, people


def test_a_public_line_reaches_everyone_but_its_sender_and_is_prefixed_outside_its_room():
    room, (ann, bob, cy) = _people("ann", "bob", "cy")
    cy.type("/join #dev")  # cy's current room is #dev now; cy is still in #lobby
    ann.read(), bob.read(), cy.read()
    ann.type("hi all")
    assert ann.read() == []
    assert bob.read() == ["ann: hi all"]
    assert cy.read() == ["[#lobby] ann: hi all"]


def test_who_is_in_the_room_is_asked_again_once_someone_changes_rooms():
    """The door keeps who was in the room between messages; a /join or /part
    (the room's people stay the same, their current rooms change) must show at once."""
    room, (ann, bob, cy) = _people("ann", "bob", "cy")
    ann.type("one")
    assert bob.read() == ["ann: one"] and cy.read() == ["ann: one"]
    cy.type("/join #dev")
    cy.read()
    ann.type("two")
    assert bob.read() == ["ann: two"] and cy.read() == ["[#lobby] ann: two"]
    cy.type("/join #lobby")  # in it already: it becomes the current room again
    cy.read()
    ann.type("three")
    assert bob.read() == ["ann: three"] and cy.read() == ["ann: three"]
    bob.type("/join #ops")
    bob.read()
    cy.type("four")
    assert ann.read() == ["cy: four"] and bob.read() == ["[#lobby] cy: four"]
    assert cy.read() == []


def test_a_room_line_reaches_its_members_only():
    room, (ann, bob, cy) = _people("ann", "bob", "cy")
    ann.type("/join #dev")
    bob.type("/join #dev")
    bob.type("/join #lobby")  # back in #lobby: #dev's lines come prefixed
    ann.read(), bob.read(), cy.read()
    ann.type("merged")
    assert bob.read() == ["[#dev] ann: merged"]
    assert cy.read() == []
    assert ann.read() == []


def test_a_whisper_in_a_fanout_turn_is_per_viewer():
    room, (ann, bob, cy) = _people("ann", "bob", "cy")
    ann.type("/whisper bob psst")
    assert ann.read() == ["* to bob: psst"]
    assert bob.read() == [">> ann: psst"]
    assert cy.read() == []


def test_what_one_turn_writes_arrives_in_the_order_it_was_written():
    room, (ann, bob, cy) = _people("ann", "bob", "cy")
    # One turn: a fan-out, a notice to one person, another fan-out.
    room.all_rooms.fanout(room.all_rooms.default.name, Notice("first", None))
    bob.protocol.deliver(Notice("just for bob"))
    room.all_rooms.fanout(room.all_rooms.default.name, Notice("second", None))
    assert bob.read() == ["* first", "* just for bob", "* second"]
    assert cy.read() == ["* first", "* second"]


def test_a_notice_to_one_person_before_a_fanout_comes_first():
    room, (ann, bob) = _people("ann", "bob")
    bob.protocol.deliver(Notice("just for bob"))
    room.all_rooms.fanout(room.all_rooms.default.name, Notice("everyone", None))
    assert bob.read() == ["* just for bob", "* everyone"]
    assert ann.read() == ["* everyone"]


def test_people_on_other_doors_get_the_same_fanout():
    room, (ann,) = _people("ann")
    bob = room.join("bob")  # a door without a fan-out of its own (chatd.testing's)
    ann.read()
    ann.type("hello")
    assert bob.take() == ["ann: hello"]
    bob.send("hi ann")
    assert ann.read() == ["bob: hi ann"]


def test_sessions_keep_their_order_through_joins_and_leaves():
    room = make_room()
    people = [room.join(f"p{i}") for i in range(5)]
    room.disconnect(people[1].session)
    late = room.join("late")
    assert [s.user.name for s in room.members.sessions] == ["p0", "p2", "p3", "p4", "late"]
    assert late.session in room.members.present
    assert people[1].session not in room.members.present


def test_a_delivery_that_disconnects_someone_does_not_stop_the_fanout():
    room = make_room()
    ann, bob, cy = room.join("ann"), room.join("bob"), room.join("cy")

    def deliver_and_drop(event: Any, deliver: Any = bob.deliver) -> None:
        deliver(event)
        room.disconnect(cy.session)

    bob.take(), cy.take()
    bob.deliver = deliver_and_drop  # type: ignore[method-assign]
    ann.send("hello")
    assert "ann: hello" in bob.take()
    assert "ann: hello" in cy.take()
