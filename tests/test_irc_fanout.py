"""A channel's message to many IRC clients goes through the door's own fan-out
(L{IRCFactory.deliver_all}): each client still reads exactly what one delivery at a time
gave it, in the form its capabilities asked for, and nobody reads what was not theirs."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import pytest_twisted
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chatd.doors import irc_wire as wire
from chatd.doors.irc import IRCDoor, IRCFactory
from chatd.events import Message
from chatd.testing import FakeClient, TestRoom, make_room
from tests.support import line_client, ws_client
from tests.test_irc import irc

PASSWORD = "correct-horse-battery"


class Irc:
    """One IRC connection on a StringTransport, registered with the capabilities C{caps}
    (unless C{nick} is None: then it has only connected)."""

    def __init__(self, factory: IRCFactory, nick: str | None, caps: str = "") -> None:
        self.transport = StringTransport()
        self.clock = factory.room.clock
        self.door: IRCDoor = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        self.door.makeConnection(self.transport)
        if nick is None:
            return
        if caps:
            self.door.dataReceived(f"CAP LS 302\r\nCAP REQ :{caps}\r\n".encode())
        welcome = self.send(f"NICK {nick}\r\nUSER u 0 * :U" + ("\r\nCAP END" if caps else ""))
        assert any(" 001 " in line for line in welcome), welcome

    def send(self, line: str) -> list[str]:
        self.door.dataReceived(line.encode() + b"\r\n")
        return self.read()

    def read(self) -> list[str]:
        self.clock.advance(0)
        self.clock.advance(0)
        out = self.transport.value().decode("utf-8")
        self.transport.clear()
        return out.splitlines()


def privmsgs(lines: list[str]) -> list[str]:
    return [line for line in lines if " PRIVMSG " in line]


def setup() -> tuple[TestRoom, IRCFactory]:
    room = make_room(lines_per_second=0, messages_per_hour=0)
    room.clock.advance(1_700_000_000.25)  # a time whose server-time tag is easy to read
    return room, IRCFactory(room)


def say(room: TestRoom, name: str) -> FakeClient:
    """A line-door user called C{name}, to say things from outside the IRC door."""
    client = room.join(name)
    room.clock.advance(0)
    client.take()
    return client


def test_each_irc_client_reads_the_line_with_the_tags_it_asked_for():
    room, factory = setup()
    plain = Irc(factory, "plain")
    timed = Irc(factory, "timed", "server-time")
    tagged = Irc(factory, "tagged", "message-tags")
    both = Irc(factory, "both", "server-time message-tags")
    plain2 = Irc(factory, "plain2")
    ann = say(room, "ann")
    for client in (plain, timed, tagged, both, plain2):
        client.read()
    ann.send("hello there")
    stamp = wire.server_time(room.clock.seconds())
    said = room.store.saved[-1]
    line = ":ann!chat@chatd PRIVMSG #lobby :hello there"
    assert privmsgs(plain.read()) == [line]
    assert privmsgs(plain2.read()) == [line]
    assert privmsgs(timed.read()) == [f"@time={stamp} {line}"]
    assert privmsgs(tagged.read()) == [f"@msgid={said.id} {line}"]
    assert privmsgs(both.read()) == [f"@time={stamp};msgid={said.id} {line}"]


def test_the_sender_reads_its_own_line_only_with_echo_message():
    room, factory = setup()
    quiet = Irc(factory, "quiet")
    echoed = Irc(factory, "echoed", "echo-message server-time")
    other = Irc(factory, "other")
    for client in (quiet, echoed, other):
        client.read()
    assert privmsgs(quiet.send("PRIVMSG #lobby :from quiet")) == []
    assert privmsgs(other.read()) == [":quiet!chat@chatd PRIVMSG #lobby :from quiet"]
    assert privmsgs(echoed.read()) == [
        f"@time={wire.server_time(room.clock.seconds())} "
        ":quiet!chat@chatd PRIVMSG #lobby :from quiet"
    ]
    echo = privmsgs(echoed.send("PRIVMSG #lobby :from echoed"))
    assert [re.sub(r"^@\S+ ", "", line) for line in echo] == [
        ":echoed!chat@chatd PRIVMSG #lobby :from echoed"
    ]
    assert privmsgs(quiet.read()) == [":echoed!chat@chatd PRIVMSG #lobby :from echoed"]


def test_a_client_that_parted_the_channel_reads_nothing_more_of_it():
    room, factory = setup()
    stays, parts = Irc(factory, "stays"), Irc(factory, "parts")
    cy = say(room, "cy")
    for client in (stays, parts):
        client.send("JOIN #dev")
    cy.send("/join #dev")
    assert ":parts!chat@chatd PART :#dev" in parts.send("PART #dev")
    stays.read()
    cy.send("only for #dev")
    room.clock.advance(0)
    assert privmsgs(stays.read()) == [":cy!chat@chatd PRIVMSG #dev :only for #dev"]
    assert privmsgs(parts.read()) == []
    cy.send("/join #lobby")  # back in #lobby, whose lines both still read
    cy.send("for everyone")
    assert privmsgs(parts.read()) == [":cy!chat@chatd PRIVMSG #lobby :for everyone"]
    assert privmsgs(stays.read()) == [":cy!chat@chatd PRIVMSG #lobby :for everyone"]


def test_a_client_still_registering_reads_the_line_after_its_welcome():
    room, factory = setup()
    maker = room.join()
    maker.send(f"/register ann {PASSWORD}")
    room.clock.advance(0)
    room.disconnect(maker.session)
    room.clock.advance(11)
    room.clock.advance(0)
    bob = say(room, "bob")
    early = Irc(factory, None)  # logged in by SASL, so in the chat; CAP END not yet
    payload = base64.b64encode(f"\0ann\0{PASSWORD}".encode()).decode()
    early.send(
        f"CAP LS 302\r\nNICK ann\r\nUSER u 0 * :U\r\nCAP REQ :sasl server-time\r\n"
        f"AUTHENTICATE PLAIN\r\nAUTHENTICATE {payload}"
    )
    assert early.door.session is not None and early.door.early is not None  # in the chat
    watcher = Irc(factory, "watcher")
    watcher.read()
    bob.send("said while ann registers")
    room.clock.advance(0)
    assert privmsgs(watcher.read()) == [":bob!chat@chatd PRIVMSG #lobby :said while ann registers"]
    assert privmsgs(early.read()) == []
    welcome = early.send("CAP END")
    assert any(" 001 " in line for line in welcome)
    assert welcome.index(":ann!chat@chatd JOIN #lobby") < len(welcome) - 1
    said = [re.sub(r"^@time=\S+ ", "", line) for line in privmsgs(welcome)]
    assert said == [":bob!chat@chatd PRIVMSG #lobby :said while ann registers"]
    joined = welcome.index(":ann!chat@chatd JOIN #lobby")
    assert joined < next(i for i, line in enumerate(welcome) if " PRIVMSG " in line)


def test_a_channel_line_to_many_irc_clients_is_one_fanout_not_a_delivery_each(monkeypatch):
    room, factory = setup()
    clients = [Irc(factory, f"p{i}", "server-time" if i % 2 else "") for i in range(6)]
    ann = say(room, "ann")
    for client in clients:
        client.read()
    one_by_one: list[Any] = []
    per_client = IRCDoor.deliver

    def deliver(self: IRCDoor, event: Any) -> None:
        one_by_one.append(event)
        per_client(self, event)

    monkeypatch.setattr(IRCDoor, "deliver", deliver)
    ann.send("to all of you")
    assert [e for e in one_by_one if isinstance(e, Message)] == []
    for client in clients:
        assert [re.sub(r"^@time=\S+ ", "", line) for line in privmsgs(client.read())] == [
            ":ann!chat@chatd PRIVMSG #lobby :to all of you"
        ]
    ann.send("/whisper p0 just you")  # a whisper is per client still
    assert privmsgs(clients[0].read()) == [":ann!chat@chatd PRIVMSG p0 :just you"]
    assert [e.to for e in one_by_one if isinstance(e, Message)] == ["p0"]


# Every way an IRC client may differ for a channel's line: its tag capabilities and echo,
# and whether it shows the channel.
CAPS = ("server-time", "message-tags", "account-tag", "echo-message")
client_kinds = st.tuples(st.sets(st.sampled_from(CAPS)), st.booleans())


@settings(max_examples=60, deadline=None)
@example([(set(), False), ({"server-time", "echo-message"}, True)], 1, "#dev", "hi")
@example([({"message-tags"}, True), (set(), True)], 0, "#lobby", "x" * 700)
@given(
    st.lists(client_kinds, min_size=1, max_size=6),
    st.integers(0, 6),
    st.sampled_from(("#lobby", "#dev")),
    st.sampled_from(("hi", "x" * 700)),
)
def test_the_fanout_sends_each_irc_client_the_bytes_one_delivery_would(kinds, sender, room_, text):
    room, factory = setup()
    clients = []
    for i, (caps, in_dev) in enumerate(kinds):
        client = Irc(factory, f"p{i}", " ".join(sorted(caps)))
        if in_dev:
            client.send("JOIN #dev")
        clients.append(client)
    watcher = Irc(factory, "watcher")  # in both channels, never the sender: reads it
    watcher.send("JOIN #dev")
    for client in clients:
        client.read()
    origin = clients[sender].door if sender < len(clients) else None
    clients.append(watcher)
    sessions = tuple(c.door.session for c in clients)

    def message() -> Message:
        by = origin.session.user.name if origin is not None else "elsewhere"
        return Message(
            7, room.clock.seconds(), by, text, origin=origin and origin.session, room=room_
        )

    factory.deliver_all(sessions, message())
    fanned = [client.read() for client in clients]
    one = message()
    for session in sessions:
        session.client.deliver(one)
    assert fanned == [client.read() for client in clients]
    assert fanned[-1]


@pytest_twisted.async_yield_fixture
async def srv(serve):
    yield await serve(doors=("line", "irc", "web"), messages_per_hour=0)


@pytest_twisted.ensureDeferred
async def test_line_irc_and_websocket_users_in_one_room_each_read_their_doors_form(srv):
    tel = await line_client(srv.ports["line"])
    tel.send("/rename tel")
    await tel.expect(r"^\* you are tel$")
    web = await ws_client(srv.ports["web"], path="/ws")
    web.send("/rename web")
    await web.expect(r"^\* you are web$")
    plain = await irc(srv, "plain")
    timed = await irc(srv, "timed", caps="server-time echo-message")
    tel.send("from telnet")
    await web.expect(r"^tel: from telnet$")
    await plain.expect(r"^:tel!chat@chatd PRIVMSG #lobby :from telnet$")
    await timed.expect(r"^@time=\S+Z :tel!chat@chatd PRIVMSG #lobby :from telnet$")
    plain.send("PRIVMSG #lobby :from irc")
    await tel.expect(r"^plain: from irc$")
    await web.expect(r"^plain: from irc$")
    await timed.expect(r"^@time=\S+Z :plain!chat@chatd PRIVMSG #lobby :from irc$")
    timed.send("PRIVMSG #lobby :echoed")  # its own line back, in its own form
    await timed.expect(r"^@time=\S+Z :timed!chat@chatd PRIVMSG #lobby :echoed$")
    await plain.expect(r"^:timed!chat@chatd PRIVMSG #lobby :echoed$")
    await tel.expect(r"^timed: echoed$")
    web.send("from the web")
    await plain.expect(r"^:web!chat@chatd PRIVMSG #lobby :from the web$")
    await tel.expect(r"^web: from the web$")
    plain.send("PING :done")
    await plain.expect(r"PONG chatd :done$")
    assert not [line for line in plain.lines if "PRIVMSG #lobby :from irc" in line]
    for client in (tel, web, plain, timed):
        client.close()


@pytest.mark.parametrize("caps", ["", "server-time"])
def test_a_client_that_closed_reads_nothing(caps):
    room, factory = setup()
    going, staying = Irc(factory, "going", caps), Irc(factory, "staying", caps)
    ann = say(room, "ann")
    going.read(), staying.read()
    going.door.close("testing")  # closing: the connection is not gone from the Room yet
    assert going.door.session in room.members.present
    going.transport.clear()
    ann.send("after the close")
    assert privmsgs(going.read()) == []
    assert [re.sub(r"^@time=\S+ ", "", line) for line in privmsgs(staying.read())] == [
        ":ann!chat@chatd PRIVMSG #lobby :after the close"
    ]
