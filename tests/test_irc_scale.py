"""What an IRC client is told of its channels' members adds up to who is there: each JOIN,
PART, QUIT and NICK once, however arrivals, departures, renames and the client's own JOINs
fall within one reactor turn (the door works them out once for all its connections). Past
C{crowd_size} a channel is an auditorium: no JOIN, PART or QUIT of others, NAMES on demand."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chatd.doors.irc import IRCFactory
from chatd.testing import FakeClient, TestRoom, make_room

ROOMS = ("#dev", "#ops")


class Told:
    """One IRC client, and the members of each channel as its lines told them."""

    def __init__(self, factory: IRCFactory, nick: str) -> None:
        self.nick = nick
        self.transport = StringTransport()
        self.door = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        self.door.makeConnection(self.transport)
        self.channels: dict[str, set[str]] = {}
        self.send(f"NICK {nick}\r\nUSER u 0 * :U")  # its lines come at the turn's end

    def send(self, line: str) -> None:
        self.door.dataReceived(line.encode() + b"\r\n")
        self.read()

    def read(self) -> None:
        """Follow the lines so far; a JOIN of someone shown already, or a PART, QUIT or
        NICK of someone not shown, fails: each is told once."""
        lines = self.transport.value().decode("utf-8").splitlines()
        self.transport.clear()
        for line in lines:
            words = line.split(" ")
            if words[0] == ":chatd":
                if words[1] == "353":
                    shown = self.channels[words[4]]
                    shown.update(n.lstrip(":@").lower() for n in words[5:])
                continue
            who = words[0][1:].split("!")[0].lower()
            command, params = words[1], [w.lstrip(":") for w in words[2:]]
            if command == "JOIN":
                if who == self.nick:
                    assert params[0] not in self.channels, line
                    self.channels[params[0]] = set()
                else:
                    assert who not in self.channels[params[0]], f"{self.nick} told twice: {line}"
                    self.channels[params[0]].add(who)
            elif command == "PART":
                if who == self.nick:
                    del self.channels[params[0]]
                else:
                    assert who in self.channels[params[0]], f"{self.nick}: {line}"
                    self.channels[params[0]].discard(who)
            elif command == "QUIT":
                places = [c for c in self.channels.values() if who in c]
                assert places, f"{self.nick} told of a stranger: {line}"
                for members in places:
                    members.discard(who)
            elif command == "NICK":
                places = [c for c in self.channels.values() if who in c]
                assert places, f"{self.nick} told of a stranger: {line}"
                for members in places:
                    members.discard(who)
                    members.add(params[0].lower())
                if who == self.nick:
                    self.nick = params[0].lower()

    def check(self, room: TestRoom) -> None:
        """Each channel shown has the room's members, no more, no fewer."""
        api = self.door.channels_api
        for channel, members in self.channels.items():
            assert members == {n.lower() for n in api.names(channel)}, (self.nick, channel)


def arrive(room: TestRoom, name: str) -> FakeClient:
    """A line connection called C{name}, its arrival told when this reactor turn ends."""
    client = FakeClient("line", "10.0.0.1")
    client.room = room
    client.session = room.connect(client, name)
    return client


step = st.one_of(
    st.tuples(st.sampled_from(("arrive", "leave", "rename")), st.integers(0, 3)),
    st.tuples(st.sampled_from(("join", "part")), st.integers(0, 3), st.sampled_from(ROOMS)),
    st.tuples(st.sampled_from(("irc join", "irc part")), st.integers(0, 1), st.sampled_from(ROOMS)),
    st.just(("irc arrives",)),
    st.just(("turn",)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(step, max_size=30))
def test_what_irc_clients_are_told_adds_up_to_who_is_there(steps):
    room = make_room()
    factory = IRCFactory(room)
    ircs = [Told(factory, "ann")]
    room.clock.advance(0)
    people: dict[int, FakeClient] = {}
    names: dict[int, str] = {}

    def settle() -> None:
        room.clock.advance(0)
        room.clock.advance(0)
        for irc in ircs:
            irc.read()
            irc.check(room)

    for step in steps:
        kind, *rest = step
        if kind == "arrive" and rest[0] not in people:
            names[rest[0]] = f"p{rest[0]}"
            people[rest[0]] = arrive(room, names[rest[0]])
        elif kind == "leave" and rest[0] in people:
            room.disconnect(people.pop(rest[0]).session)
        elif kind == "rename" and rest[0] in people:
            new = f"q{rest[0]}" if names[rest[0]].startswith("p") else f"p{rest[0]}"
            people[rest[0]].send(f"/rename {new}")
            names[rest[0]] = new
        elif kind in ("join", "part") and rest[0] in people:
            people[rest[0]].send(f"/{kind} {rest[1]}")
        elif kind in ("irc join", "irc part") and rest[0] < len(ircs):
            ircs[rest[0]].send(f"{kind.split()[1].upper()} {rest[1]}")
        elif kind == "irc arrives" and len(ircs) < 2:
            ircs.append(Told(factory, "bea"))
        elif kind == "turn":
            settle()
    settle()


def test_a_crowd_arriving_with_an_irc_client_is_each_shown_once():
    room = make_room()
    factory = IRCFactory(room)
    ann = Told(factory, "ann")
    room.clock.advance(0)
    crowd = [arrive(room, f"p{i}") for i in range(5)]
    bea = Told(factory, "bea")  # in the same turn: the crowd is in her NAMES already
    for _ in range(2):
        room.clock.advance(0)
    ann.read()
    bea.read()
    assert {f"p{i}" for i in range(5)} <= bea.channels["#lobby"]
    ann.check(room)
    bea.check(room)
    # In one turn: one leaves, one is renamed, and cy connects (her NAMES is as they are).
    room.disconnect(crowd[0].session)
    crowd[1].send("/rename q1")
    cy = Told(factory, "cy")
    for _ in range(2):
        room.clock.advance(0)
    for irc in (ann, bea, cy):
        irc.read()
        irc.check(room)
        assert "p0" not in irc.channels["#lobby"]
        assert "q1" in irc.channels["#lobby"]


def heard(client: Told) -> list[str]:
    """The lines C{client} was sent since last asked (not followed: see L{Told.read})."""
    lines = client.transport.value().decode("utf-8").splitlines()
    client.transport.clear()
    return lines


def moves(lines: list[str], me: str) -> list[str]:
    """The JOIN, PART and QUIT lines among C{lines} about others than C{me}."""
    return [
        line
        for line in lines
        if line.split(" ")[1] in ("JOIN", "PART", "QUIT") and not line.startswith(f":{me}!")
    ]


def names_of(lines: list[str], channel: str) -> set[str]:
    return {
        nick.lstrip(":@")
        for line in lines
        if line.split(" ")[1:2] == ["353"] and line.split(" ")[4] == channel
        for nick in line.split(" ")[5:]
    }


def test_in_a_crowded_channel_irc_clients_hear_no_arrivals_or_departures_but_names_has_them():
    room = make_room(crowd_size=3, crowd_summary=5.0)
    factory = IRCFactory(room)
    people = [arrive(room, f"p{i}") for i in range(4)]  # four people: crowded already
    ann = Told(factory, "ann")
    room.clock.advance(0)
    told = heard(ann)
    assert ":ann!chat@chatd JOIN #lobby" in told  # her own JOIN, and who is there
    assert {f"p{i}" for i in range(4)} <= names_of(told, "#lobby")
    people += [arrive(room, "p4"), arrive(room, "p5")]
    room.disconnect(people[0].session)
    for _ in range(3):
        room.clock.advance(5)  # the crowded room's member lists and summaries go out
    told = heard(ann)
    assert moves(told, "ann") == []
    assert any(" NOTICE #lobby :" in line and "joined" in line for line in told)
    people[1].send("hello all")
    room.clock.advance(0)
    assert ":p1!chat@chatd PRIVMSG #lobby :hello all" in heard(ann)
    ann.door.dataReceived(b"NAMES #lobby\r\n")
    room.clock.advance(0)
    shown = names_of(heard(ann), "#lobby")
    assert {"p4", "p5", "ann"} <= shown
    assert "p0" not in shown


def test_below_the_crowd_size_irc_clients_hear_each_arrival_and_departure_again():
    room = make_room(crowd_size=3, crowd_summary=5.0)
    factory = IRCFactory(room)
    ann = Told(factory, "ann")
    room.clock.advance(0)
    p0 = arrive(room, "p0")
    room.clock.advance(0)
    assert moves(heard(ann), "ann") == [":p0!chat@chatd JOIN #lobby"]
    crowd = [arrive(room, f"p{i}") for i in range(1, 5)]  # six in all: crowded
    room.clock.advance(0)
    assert moves(heard(ann), "ann") == []
    for client in crowd:
        room.disconnect(client.session)  # two again; the update that says so is silent too
    for _ in range(3):
        room.clock.advance(5)
    assert moves(heard(ann), "ann") == []
    arrive(room, "p5")
    room.clock.advance(0)
    room.disconnect(p0.session)
    room.clock.advance(0)
    assert moves(heard(ann), "ann") == [
        ":p5!chat@chatd JOIN #lobby",
        ":p0!chat@chatd QUIT :left the chat",
    ]
