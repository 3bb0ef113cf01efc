"""The IRC door on a StringTransport against the real Room: whatever a stranger sends, the
door answers and stays up; and the Room methods the door uses keep the chat's rules."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chatd.doors.irc import IRCFactory
from chatd.errors import CommandError
from chatd.testing import make_room


class Wire:
    """One IRC connection on a StringTransport."""

    def __init__(self, factory: IRCFactory) -> None:
        self.transport = StringTransport()
        self.clock = factory.room.clock
        self.door = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        self.door.makeConnection(self.transport)

    def send(self, data: bytes) -> list[str]:
        self.door.dataReceived(data)
        self.clock.advance(0)
        out = self.transport.value().decode("utf-8")
        self.transport.clear()
        return out.splitlines()


def registered(factory: IRCFactory, nick: str = "ann") -> Wire:
    wire = Wire(factory)
    assert any(" 001 " in line for line in wire.send(f"NICK {nick}\r\nUSER u 0 * :U\r\n".encode()))
    return wire


commands = st.sampled_from(
    ["PRIVMSG", "NOTICE", "JOIN", "PART", "NAMES", "WHO", "WHOIS", "TOPIC", "LIST", "MODE",
     "KICK", "INVITE", "NICK", "AWAY", "CHATHISTORY", "CAP", "AUTHENTICATE", "PING", "ISON",
     "USERHOST", "HELP", "STATUS", "FROB", "USER", "PASS"]
)  # fmt: skip
params = st.lists(st.text(st.characters(blacklist_characters="\r\n\0"), max_size=30), max_size=5)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(commands, params), min_size=1, max_size=8))
def test_any_commands_are_answered_and_the_door_stays_up(lines):
    room = make_room(lines_per_second=0, messages_per_hour=0)
    factory = IRCFactory(room)
    ann = registered(factory)
    for command, args in lines:
        line = " ".join([command, *args]).encode("utf-8", "surrogatepass")
        answer = ann.send(line + b"\r\n")
        if command in ("PONG", "TAGMSG"):
            continue
        assert not ann.transport.disconnecting or command == "QUIT"
        assert all(len(a.encode()) <= 512 or a.startswith("@") for a in answer)
        assert not [a for a in answer if "failed on the server" in a], (line, answer)
    assert not [e for e in room.members.sessions if e.user.name == ""]


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_before_registration_leave_the_door_working(data):
    room = make_room()
    factory = IRCFactory(room)
    wire = Wire(factory)
    wire.send(data.replace(b"\n", b" ") + b"\r\n")
    assert any(" 001 " in line for line in wire.send(b"NICK ann\r\nUSER u 0 * :U\r\n"))


def test_speak_keeps_the_rooms_rules_and_refunds_a_whisper_that_was_not_sent():
    room = make_room(messages_per_hour=2)
    bob = room.guest("line")
    ann = room.guest("line")
    with pytest.raises(CommandError, match="nobody called nobody"):
        room.speak(ann.session, "hi", to="nobody")
    room.speak(ann.session, "one")
    room.speak(ann.session, "two")  # the failed whisper did not count
    with pytest.raises(CommandError, match="you have sent 2 messages"):
        room.speak(ann.session, "three")
    assert [m.text for m in room.store.saved] == ["one", "two"]
    assert bob.session is not None


def test_connect_takes_a_free_name_and_a_guest_name_otherwise():
    room = make_room()
    bob = room.guest("line")
    first = room.guest("line")
    ann = room.connect(first.__class__("irc"), "ann")
    assert ann.user.name == "ann"
    taken = room.connect(first.__class__("irc"), bob.session.user.name)
    assert taken.user.name != bob.session.user.name
    assert room.name_problem("ann") == "the name ann is taken; pick another"


def test_chathistory_windows_by_msgid_and_timestamp():
    from chatd.doors.irc_wire import history_ref as _ref
    from chatd.doors.irc_wire import history_window as _window
    from chatd.events import Message

    history = [Message(i, 1000.0 + i, "ann", f"m{i}") for i in range(1, 11)]

    def ids(sub: str, *refs: str, limit: int = 3) -> list[int]:
        return [m.id for m in _window(sub, history, [_ref(r) for r in refs], limit)]

    assert ids("LATEST", "*") == [8, 9, 10]
    assert ids("LATEST", "msgid=9") == [10]
    assert ids("BEFORE", "msgid=5") == [2, 3, 4]
    assert ids("AFTER", "msgid=5") == [6, 7, 8]
    assert ids("AFTER", "timestamp=1970-01-01T00:16:45.000Z") == [6, 7, 8]  # 1005 s
    assert ids("AROUND", "msgid=5", limit=4) == [3, 4, 5, 6]
    assert ids("BETWEEN", "msgid=2", "msgid=9", limit=10) == [3, 4, 5, 6, 7, 8]
    assert ids("BETWEEN", "msgid=9", "msgid=2", limit=2) == [7, 8]  # from the later end
    assert _ref("msgid=abc") is None and _ref("timestamp=soon") is None
