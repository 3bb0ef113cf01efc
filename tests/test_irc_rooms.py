"""IRC channels are chatd rooms: an IRC client (the real door on a StringTransport, the
Room on a Clock) and line-door users (what telnet would show) in the same rooms."""

from __future__ import annotations

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chatd.bus.wire import from_wire, to_wire
from chatd.doors.irc import IRCFactory
from chatd.events import Notice
from chatd.room import Room
from chatd.testing import FakeClient, TestRoom, make_room
from tests.support import line_client
from tests.test_irc import irc
from tests.test_room_bus import join, nodes

PASSWORD = "correct-horse-battery"


class Irc:
    """One IRC connection: C{send} a line, read what came back since the last read."""

    def __init__(self, factory: IRCFactory, nick: str, password: str | None = None) -> None:
        self.transport = StringTransport()
        self.clock = factory.room.clock
        self.door = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        self.door.makeConnection(self.transport)
        login = f"PASS {password}\r\n" if password else ""
        self.welcome = self.send(f"{login}NICK {nick}\r\nUSER u 0 * :U")
        assert any(" 001 " in line for line in self.welcome), self.welcome

    def send(self, line: str) -> list[str]:
        self.door.dataReceived(line.encode() + b"\r\n")
        return self.read()

    def read(self) -> list[str]:
        self.clock.advance(0)
        self.clock.advance(0)
        out = self.transport.value().decode("utf-8")
        self.transport.clear()
        return out.splitlines()


def setup(**settings: object) -> tuple[TestRoom, IRCFactory]:
    room = make_room(**settings)
    return room, IRCFactory(room)


def account(room: TestRoom, name: str) -> None:
    """Make the account C{name} (from a line connection that then goes)."""
    maker = room.join()
    maker.send(f"/register {name} {PASSWORD}")
    room.clock.advance(0)
    room.disconnect(maker.session)
    room.clock.advance(11)  # past the rejoin grace: its "left" is said
    room.clock.advance(0)


def typed(client: FakeClient, line: str) -> list[str]:
    """A line-door user types C{line}; what they read after this reactor turn."""
    client.send(line)
    client.room.clock.advance(0)
    return client.take()


def typed_on(room: Room, client: FakeClient, line: str) -> list[str]:
    """A line-door user of node C{room} types C{line}; what they read after this turn."""
    room.receive(client.session, line)
    room.clock.advance(0)
    return client.take()


def numerics(lines: list[str], number: str) -> list[str]:
    return [line for line in lines if line.startswith(f":chatd {number} ")]


def names(lines: list[str]) -> list[str]:
    """The nicks of the NAMES replies among C{lines}, as shown (an owner with @)."""
    return [n for line in numerics(lines, "353") for n in line.split(" ", 5)[5].lstrip(":").split()]


def test_join_makes_a_room_and_a_line_user_in_it_talks_both_ways():
    room, factory = setup()
    ann = Irc(factory, "ann")
    joined = ann.send("JOIN #dev")
    assert ":ann!chat@chatd JOIN #dev" in joined
    assert names(joined) == ["ann"]
    assert numerics(joined, "366")
    assert not [line for line in joined if "what you type goes there" in line]
    bob = room.join("bob")
    assert ann.read() == [":bob!chat@chatd JOIN #lobby"]
    typed(bob, "/join #dev")
    assert ann.read() == [":bob!chat@chatd JOIN #dev"]
    ann.send("PRIVMSG #dev :hello from irssi")
    assert bob.take() == ["ann: hello from irssi"]
    typed(bob, "hi ann")
    assert ann.read() == [":bob!chat@chatd PRIVMSG #dev :hi ann"]
    assert [(m.room, m.text) for m in room.store.saved] == [
        ("#dev", "hello from irssi"),
        ("#dev", "hi ann"),
    ]


def test_each_message_goes_to_its_channel_and_never_to_one_not_joined():
    room, factory = setup()
    ann = Irc(factory, "ann")
    cy = Irc(factory, "cy")  # in #lobby only
    ann.send("JOIN #dev")
    ann.send("JOIN #ops")  # the chat's current room of ann's session is #ops now
    bob = room.join("bob")
    typed(bob, "/join #dev")
    cy.read()
    ann.read()
    ann.send("PRIVMSG #lobby :to the lobby")
    ann.send("PRIVMSG #dev :to dev")
    ann.send("PRIVMSG #dev,#lobby :to both")
    assert [(m.room, m.text) for m in room.store.saved] == [
        ("#lobby", "to the lobby"),
        ("#dev", "to dev"),
        ("#dev", "to both"),
        ("#lobby", "to both"),
    ]
    assert cy.read() == [
        ":ann!chat@chatd PRIVMSG #lobby :to the lobby",
        ":ann!chat@chatd PRIVMSG #lobby :to both",
    ]
    assert bob.take() == [
        "[#lobby] ann: to the lobby",
        "ann: to dev",
        "ann: to both",
        "[#lobby] ann: to both",
    ]
    typed(bob, "only dev")
    assert not [line for line in cy.read() if "only dev" in line]
    assert ann.read() == [":bob!chat@chatd PRIVMSG #dev :only dev"]
    assert cy.send("PRIVMSG #dev :may I?") == [
        ":chatd 404 cy #dev :you are not in #dev; JOIN #dev first"
    ]
    assert numerics(cy.send("PRIVMSG #nowhere :hello?"), "403")


def test_join_refusals_are_numerics_saying_why():
    room, factory = setup(max_room_members=2, max_rooms_per_person=3)
    ann = Irc(factory, "ann")
    bad = ann.send("JOIN #a!b")
    assert numerics(bad, "403") and "a room name starts with #" in bad[0]
    assert numerics(ann.send("JOIN #a,#b"), "366")
    assert "as many as allowed" in numerics(ann.send("JOIN #c"), "405")[0]
    bob = Irc(factory, "bob")
    bob.send("JOIN #a")
    cy = Irc(factory, "cy")
    assert numerics(cy.send("JOIN #a"), "471") == [":chatd 471 cy #a :#a is full"]


@settings(max_examples=100, deadline=None)
@given(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0 ,"),
        min_size=1,
        max_size=40,
    )
)
def test_any_channel_name_is_joined_or_refused_with_a_numeric(name):
    room, factory = setup()
    ann = Irc(factory, "ann")
    answer = ann.send(f"JOIN #{name}")
    joined = [x for x in answer if x.startswith(":ann!chat@chatd JOIN ")]
    refused = [x for x in answer if x.startswith(":chatd 403 ann ")]
    assert len(joined + refused) == 1, answer
    if joined:  # shown under the room's own name, and talked in
        channel = joined[0].split()[-1]
        ann.send(f"PRIVMSG #{name} :hi")
        assert [(m.room, m.text) for m in room.store.saved] == [(channel, "hi")]


def test_part_leaves_the_room_and_others_see_part_not_quit():
    room, factory = setup()
    ann = Irc(factory, "ann")
    cy = Irc(factory, "cy")
    ann.send("JOIN #dev")
    cy.send("JOIN #dev")
    ann.read()
    bob = room.join("bob")
    assert ann.read() == [":bob!chat@chatd JOIN #lobby"]
    typed(bob, "/join #dev")
    assert ann.read() == [":bob!chat@chatd JOIN #dev"]
    cy.read()
    assert cy.send("PART #dev :lunch") == [":cy!chat@chatd PART #dev :lunch"]
    assert ann.read() == [":cy!chat@chatd PART :#dev"]
    assert bob.take() == ["* cy left"]
    assert numerics(cy.send("PART #dev"), "442")
    assert numerics(cy.send("PRIVMSG #dev :hi"), "404")
    typed(bob, "/part #dev")
    assert ann.read() == [":bob!chat@chatd PART :#dev"]
    typed(bob, "/join #dev")
    ann.read()
    room.disconnect(bob.session)
    room.clock.advance(0)
    assert ann.read() == [":bob!chat@chatd QUIT :left the chat"]  # once, for every channel


def test_someone_leaving_the_default_room_for_another_is_a_part_not_a_quit():
    room, factory = setup()
    ann = Irc(factory, "ann")
    bob = room.join("bob")
    typed(bob, "/join #dev")
    ann.read()
    typed(bob, "/part #lobby")
    assert ann.read() == [":bob!chat@chatd PART :#lobby"]  # still online: only in #dev


def test_part_of_the_lobby_leaves_it_for_everyone_but_not_as_the_last_room():
    room, factory = setup()
    ann, cy = Irc(factory, "ann"), Irc(factory, "cy")
    bob = room.join("bob")
    ann.read()
    cy.read()
    assert ann.send("PART #lobby") == [
        ":chatd 400 ann PART :#lobby is the only room you are in; /join another room first "
        "(/quit leaves the chat)"
    ]
    assert cy.read() == []
    ann.send("JOIN #dev")
    assert ann.send("PART #lobby :bye") == [":ann!chat@chatd PART #lobby :bye"]
    assert cy.read() == [":ann!chat@chatd PART :#lobby"]  # still online: in #dev
    assert bob.take() == ["* ann left"]
    typed(bob, "anyone?")
    assert ann.read() == []
    assert names(cy.send("NAMES #lobby")) == ["bob", "cy"]
    assert ":chatd 322 cy #lobby 2 :" in cy.send("LIST")
    assert numerics(ann.send("PART #lobby"), "442")
    assert numerics(ann.send("PART #dev"), "400")  # now the last room
    assert ":ann!chat@chatd JOIN #lobby" in ann.send("JOIN #lobby")
    assert cy.read() == [":ann!chat@chatd JOIN #lobby"]
    assert bob.take() == ["* ann joined"]


def test_the_lobby_parted_on_another_device_is_parted_on_irc_too():
    room, factory = setup()
    account(room, "ann")
    phone = room.join()
    typed(phone, f"/login ann {PASSWORD}")
    ann = Irc(factory, "ann", password=PASSWORD)
    typed(phone, "/join #dev")
    ann.read()
    typed(phone, "/part #lobby")
    assert ann.read() == [":ann!chat@chatd PART :#lobby"]
    again = Irc(factory, "ann", password=PASSWORD)  # a new device: in the rooms the account is
    assert ":ann!chat@chatd JOIN #lobby" not in again.welcome + again.read()


def test_mode_plus_i_says_what_makes_a_room_invite_only():
    room, factory = setup()
    account(room, "ann")
    ann = Irc(factory, "ann", password=PASSWORD)
    bob = Irc(factory, "bob")
    ann.send("JOIN #dev")
    assert ann.send("MODE #dev +i") == [
        ":chatd 472 ann i :chatd has no mode to set for this: #dev becomes invite-only when "
        "its owner invites someone, with INVITE nick #dev (/invite nick in #dev)"
    ]
    assert numerics(ann.send("MODE #dev -i"), "324") == [":chatd 324 ann #dev +nt"]
    ann.send("INVITE bob #dev")
    bob.read()
    assert ann.send("MODE #dev +i") == [":chatd 324 ann #dev +int"]
    assert ann.send("MODE #dev -i") == [
        ":chatd 472 ann i :#dev stays invite-only: chatd has no way to open it again; "
        "its owner lets people in with INVITE nick #dev"
    ]


def test_a_rename_elsewhere_is_one_nick_and_topic_changes_show_in_their_channel():
    room, factory = setup()
    account(room, "ann")
    ann = Irc(factory, "ann", password=PASSWORD)
    ann.send("JOIN #dev")
    bob = room.join("bob")
    typed(bob, "/join #dev")
    ann.read()
    typed(bob, "/rename bobby")
    assert ann.read() == [":bob!chat@chatd NICK bobby"]
    assert numerics(ann.send("TOPIC #dev"), "331")
    refused = Irc(factory, "cy").send("TOPIC #dev :mine now")
    ann.read()
    assert refused == [":chatd 482 cy #dev :only ann, its owner, may set the topic of #dev"]
    assert ann.send("TOPIC #dev :release on friday") == [
        ":ann!chat@chatd TOPIC #dev :release on friday"
    ]
    assert "* ann set the topic: release on friday" in bob.take()
    assert numerics(ann.send("TOPIC #dev"), "332") == [":chatd 332 ann #dev :release on friday"]


def test_names_who_list_and_mode_show_the_rooms():
    room, factory = setup()
    account(room, "ann")
    ann = Irc(factory, "ann", password=PASSWORD)
    assert names(ann.send("JOIN #dev")) == ["@ann"]
    bob = Irc(factory, "bob")
    assert names(bob.send("JOIN #dev")) == ["@ann", "bob"]
    ann.send("TOPIC #dev :the dev room")
    who = ann.send("WHO #dev")
    assert [w.split()[3:9] for w in numerics(who, "352")] == [
        ["#dev", "chat", "chatd", "chatd", "ann", "H@"],
        ["#dev", "chat", "chatd", "chatd", "bob", "H"],
    ]
    listed = numerics(ann.send("LIST"), "322")
    assert ":chatd 322 ann #dev 2 :the dev room" in listed
    assert ":chatd 322 ann #lobby 2 :" in listed
    assert numerics(ann.send("LIST #DEV"), "322") == [":chatd 322 ann #dev 2 :the dev room"]
    assert numerics(ann.send("MODE #dev"), "324") == [":chatd 324 ann #dev +nt"]
    assert numerics(bob.send("WHOIS ann"), "319") == [":chatd 319 bob ann :#lobby @#dev"]


def test_kick_by_the_owner_holds_until_the_time_is_up():
    room, factory = setup(kick_minutes=5)
    account(room, "ann")
    ann = Irc(factory, "ann", password=PASSWORD)
    bob = Irc(factory, "bob")
    ann.send("JOIN #dev")
    bob.send("JOIN #dev")
    line = room.join("cy")
    typed(line, "/join #dev")
    ann.read()
    bob.read()
    assert numerics(bob.send("KICK #dev ann"), "482") == [
        ":chatd 482 bob #dev :only ann, its owner, may remove people from #dev"
    ]
    assert numerics(ann.send("KICK #dev nobody"), "441")
    kick = ":ann!chat@chatd KICK #dev bob :bob was removed from #dev for 5 minutes by ann"
    assert kick in ann.send("KICK #dev bob :spam")
    assert kick in bob.read()
    assert "* bob was removed from #dev for 5 minutes by ann" in line.take()
    typed(line, "still here?")
    assert not [x for x in bob.read() if "still here" in x]
    assert numerics(bob.send("PRIVMSG #dev :let me in"), "404")
    assert numerics(bob.send("JOIN #dev"), "474") == [
        ":chatd 474 bob #dev :you were removed from #dev; you may rejoin in 5 minutes"
    ]
    room.clock.advance(4 * 60)
    assert "1 minute" in numerics(bob.send("JOIN #dev"), "474")[0]
    room.clock.advance(60)
    assert ":bob!chat@chatd JOIN #dev" in bob.send("JOIN #dev")
    assert ":bob!chat@chatd JOIN #dev" in ann.read()


def test_invite_makes_the_room_invite_only_and_lets_the_invited_in():
    room, factory = setup()
    account(room, "ann")
    ann = Irc(factory, "ann", password=PASSWORD)
    bob = Irc(factory, "bob")
    dee = Irc(factory, "dee")
    ann.send("JOIN #secret")
    invited = ann.send("INVITE bob #secret")
    assert numerics(invited, "341") == [":chatd 341 ann bob #secret"]
    assert ":chatd NOTICE #secret :#secret is now invite-only" in invited  # a room's notice
    assert ":ann!chat@chatd INVITE bob #secret" in bob.read()
    assert numerics(ann.send("MODE #secret"), "324") == [":chatd 324 ann #secret +int"]
    assert numerics(dee.send("JOIN #secret"), "473") == [
        ":chatd 473 dee #secret :#secret is invite-only; ask its owner to /invite you"
    ]
    assert ":bob!chat@chatd JOIN #secret" in bob.send("JOIN #secret")
    assert numerics(bob.send("INVITE dee #secret"), "482")
    assert numerics(ann.send("INVITE bob #secret"), "443")
    assert numerics(ann.send("INVITE ghost #secret"), "401")


def test_chathistory_reads_one_channels_history():
    room, factory = setup()
    ann = Irc(factory, "ann")
    ann.send("JOIN #dev")
    ann.send("PRIVMSG #dev :dev one")
    ann.send("PRIVMSG #lobby :lobby one")
    ann.send("PRIVMSG #dev :dev two")
    got = ann.send("CHATHISTORY LATEST #dev * 10")
    said = [x.split(" :", 1)[1] for x in got if " PRIVMSG " in x]
    assert [s.split("] ", 1)[1] for s in said] == ["dev one", "dev two"]
    assert all(" PRIVMSG #dev :" in x for x in got if " PRIVMSG " in x)
    outsider = Irc(factory, "eve")  # a room's history is its members'
    refused = outsider.send("CHATHISTORY LATEST #dev * 10")
    assert refused == [
        ":chatd FAIL CHATHISTORY INVALID_TARGET LATEST #dev * "
        ":you are not in #dev; JOIN #dev to read its history"
    ]


def test_an_accounts_rooms_are_its_channels_on_every_device():
    room, factory = setup()
    account(room, "ann")
    phone = room.join()
    typed(phone, f"/login ann {PASSWORD}")
    typed(phone, "/join #dev")
    ann = Irc(factory, "ann", password=PASSWORD)
    assert ":ann!chat@chatd JOIN #lobby" in ann.welcome
    assert ":ann!chat@chatd JOIN #dev" in ann.welcome + ann.read()
    typed(phone, "/join #ops")
    assert ":ann!chat@chatd JOIN #ops" in ann.read()
    typed(phone, "/part #ops")
    assert ann.read() == [":ann!chat@chatd PART :#ops"]


def test_the_structured_notice_crosses_nodes():
    notice = Notice("ann is now known as bob", None, "renamed", ("ann", "bob"))
    back = from_wire(to_wire(notice))
    assert (back.text, back.about, back.subject) == (notice.text, "renamed", ("ann", "bob"))
    plain = from_wire(to_wire(Notice("hello", "#dev")))
    assert (plain.room, plain.about, plain.subject) == ("#dev", None, ())


@pytest_twisted.ensureDeferred
async def test_a_telnet_user_and_an_irc_user_talk_in_dev_over_sockets(serve):
    server = await serve(doors=("line", "irc"), messages_per_hour=0)
    bob = await line_client(server.ports["line"])
    bob.send("/rename bob")
    await bob.expect("you are bob")
    bob.send("/join #dev")
    await bob.expect("you joined #dev")
    ann = await irc(server, "ann")
    lurker = await irc(server, "cy")
    ann.send("JOIN #dev")
    await ann.expect(r"^:chatd 366 ann #dev ")
    ann.send("PRIVMSG #dev :hello dev")
    await bob.expect(r"^ann: hello dev$")
    bob.send("hello ann")
    await ann.expect(r"^:bob!chat@chatd PRIVMSG #dev :hello ann$")
    bob.send("/join #lobby")
    await bob.expect("you are now talking in #lobby")
    bob.send("in the lobby")
    await lurker.expect(r"PRIVMSG #lobby :in the lobby$")
    assert not [x for x in lurker.lines if "#dev" in x]


def test_a_channel_spans_nodes():
    (a, b), store, clock = nodes()
    ann = Irc(IRCFactory(a), "ann")
    bob = join(b, "bob")
    bob.room = b
    ann.send("JOIN #dev")
    ann.read()
    typed(bob, "/join #dev")
    assert ann.read() == [":bob!chat@chatd JOIN #dev"]
    typed(bob, "hello from node b")
    assert ann.read() == [":bob!chat@chatd PRIVMSG #dev :hello from node b"]
    ann.send("PRIVMSG #dev :hello from node a")
    assert bob.take() == ["ann: hello from node a"]
    typed(bob, "/rename bobby")  # told over the bus with what it is, not only its words
    assert ann.read()[0] == ":bob!chat@chatd NICK bobby"
    assert names(ann.send("NAMES #dev")) == ["ann", "bobby"]
    typed(bob, "/part #dev")
    assert ann.read() == [":bobby!chat@chatd PART :#dev"]  # still online, on node b
    assert [m.room for m in store.saved] == ["#dev", "#dev"]


def test_an_invitation_from_another_node_is_an_invite_line():
    (a, b), _, _ = nodes()
    ann = join(a, "annx")
    typed_on(a, ann, f"/register ann {PASSWORD}")
    bob = Irc(IRCFactory(b), "bob")
    typed_on(a, ann, "/join #secret")
    bob.read()
    typed_on(a, ann, "/invite bob")
    assert bob.read() == [":ann!chat@chatd INVITE bob #secret"]


def test_a_rename_on_another_node_is_one_nick_line_in_every_shared_channel():
    (a, b), _, _ = nodes()
    ann = Irc(IRCFactory(a), "ann")
    bob = join(b, "bob")
    ann.send("JOIN #dev")
    typed_on(b, bob, "/join #dev")
    ann.read()
    typed_on(b, bob, "/rename bobby")
    assert ann.read() == [":bob!chat@chatd NICK bobby"]
    assert names(ann.send("NAMES #dev")) == ["ann", "bobby"]
    typed_on(b, bob, "still here")
    assert ann.read() == [":bobby!chat@chatd PRIVMSG #dev :still here"]
