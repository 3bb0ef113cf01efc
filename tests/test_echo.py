"""A whisper's echo keeps its form (`* to Bob: ...`) whatever happens before it is shown:
a slow save holds it in the order, and a rename or a login may land meanwhile."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chatd.doors.line import LineFactory
from chatd.doors.web import ChatWebSocketFactory
from chatd.events import Message
from chatd.testing import MemoryStore, make_room


class SlowStore(MemoryStore):
    """Saves messages only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[Message, defer.Deferred[Message]]] = []

    def add_message(self, message: Message) -> defer.Deferred[Message]:
        d: defer.Deferred[Message] = defer.Deferred()
        self.held.append((message, d))
        return d

    def answer(self) -> None:
        held, self.held = self.held, []
        for message, d in held:
            self.saved.append(message)
            d.callback(message)


def slow_room() -> Any:
    return make_room(store=SlowStore(), lines_per_second=0, messages_per_hour=0)


def test_the_echo_of_a_whisper_held_by_a_slow_save_survives_a_rename():
    room = slow_room()
    ann, bob = room.join("Ann"), room.join("Bob")
    ann.send("hello")  # its save is slow: what follows waits behind it
    ann.send("/whisper Bob psst")
    ann.send("/rename Annie")
    room.store.answer()
    assert "* to Bob: psst" in ann.take()
    assert ">> Ann: psst" in bob.take()


def test_the_echo_of_a_whisper_held_by_a_slow_save_survives_a_login():
    room = slow_room()
    ann, bob = room.join("Ann"), room.join("Bob")
    ann.send("/register Dora correct-horse-battery")
    ann.send("/logout")
    ann.take()
    sender = ann.session.user.name
    ann.send("hello")
    ann.send("/whisper Bob psst")
    ann.send("/login Dora correct-horse-battery")
    room.store.answer()
    lines = ann.take()
    assert "* to Bob: psst" in lines
    assert not any(line.startswith(">> ") for line in lines)
    assert f">> {sender}: psst" in bob.take()


class Telnet:
    """One line-door connection on a StringTransport: lines are rendered as delivered."""

    def __init__(self, factory: LineFactory) -> None:
        self.transport = StringTransport()
        self.clock = factory.room.clock
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        self.protocol.makeConnection(self.transport)
        self.clock.advance(0)

    def type(self, text: str) -> None:
        self.protocol.dataReceived(text.encode("utf-8") + b"\r\n")
        self.clock.advance(0)

    def read(self) -> list[str]:
        data = self.transport.value()
        self.transport.clear()
        return data.decode("utf-8").splitlines()


def test_a_telnet_whisper_echo_after_a_rename_reads_as_sent():
    room = slow_room()
    factory = LineFactory(room)
    ann, bob = Telnet(factory), Telnet(factory)
    ann.type("/rename Ann")
    bob.type("/rename Bob")
    ann.read(), bob.read()
    ann.type("hello")
    ann.type("/whisper Bob psst")
    ann.type("/rename Annie")
    room.store.answer()
    room.clock.advance(0)
    assert "* to Bob: psst" in ann.read()
    assert ">> Ann: psst" in bob.read()


def test_the_json_door_marks_the_senders_own_whisper_whatever_the_names():
    room = slow_room()
    factory = ChatWebSocketFactory(room)
    ann, bob = room.join("Ann"), room.join("Bob")
    sent: list[bytes] = []
    door = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
    door.door, door.state = "json", door.STATE_OPEN
    door.output = Recorder(sent)
    whisper = Message(7, 1.0, "Ann", "psst", "Bob", ann.session)
    room.rename(ann.session, "Annie")  # before the echo is shown
    for session in (ann.session, bob.session):
        door.session = session
        door.deliver(whisper)
    assert [json.loads(payload(frame))["mine"] for frame in sent] == [True, False]


def payload(frame: bytes) -> bytes:
    """The payload of one unmasked server frame under 64 KiB."""
    return frame[4:] if frame[1] & 0x7F == 126 else frame[2:]


class Recorder:
    def __init__(self, sent: list[bytes]) -> None:
        self.sent = sent

    def write(self, data: bytes) -> None:
        self.sent.append(data)
