"""Rooms across two nodes of one chat (LocalBus groups in one process, one shared store):
messages, members, topics, kicks and invitations reach the other node."""

from __future__ import annotations

import json

from twisted.internet import defer

from chatd.room import Room
from chatd.testing import FakeClient, MemoryStore
from tests.test_room_bus import join, nodes

PASSWORD = "correct horse battery"


def account(room: Room, name: str) -> FakeClient:
    client = join(room, name + "x")
    room.receive(client.session, f"/register {name} {PASSWORD}")
    room.clock.advance(0)
    client.take()
    return client


def send(room: Room, client: FakeClient, line: str) -> list[str]:
    room.receive(client.session, line)
    room.clock.advance(0)
    return client.take()


def test_a_room_spans_nodes_and_the_other_rooms_lines_are_prefixed():
    (a, b), store, clock = nodes()
    ann, bob, cy = join(a, "ann"), join(b, "bob"), join(b, "cy")
    send(a, ann, "/join #dev")
    send(b, bob, "/join #dev")
    for c in (ann, bob, cy):
        c.take()
    send(a, ann, "hello dev")
    assert bob.take() == ["ann: hello dev"]
    assert cy.take() == []
    send(b, cy, "hello lobby")
    assert ann.take() == ["[#lobby] cy: hello lobby"]
    assert send(a, ann, "/who") == ["* in #dev (2): ann, bob"]
    assert send(b, cy, "/who #dev") == ["* in #dev (2): ann, bob"]
    assert [m.room for m in store.saved] == ["#dev", "#lobby"]
    assert send(b, bob, "/history")[-2:][0] == "* history (1):"


def test_topics_kicks_and_invitations_hold_on_the_other_node():
    (a, b), _, clock = nodes()
    ann = account(a, "ann")
    bob, cy = join(b, "bob"), join(b, "cy")
    send(a, ann, "/join #dev")
    send(b, bob, "/join #dev")
    ann.take()
    send(a, ann, "/topic ship it")
    assert bob.take() == ["* ann set the topic: ship it"]
    assert send(b, bob, "/topic") == ["* topic of #dev: ship it"]
    assert send(b, bob, "/topic mine") == ["! only ann, its owner, may set the topic of #dev"]

    send(a, ann, "/kick bob 2")
    assert bob.take() == [
        "* bob was removed from #dev for 2 minutes by ann",
        "* you were removed from #dev",
        "* you are now talking in #lobby",
    ]
    assert send(b, bob, "/join #dev") == [
        "! you were removed from #dev; you may rejoin in 2 minutes"
    ]
    assert send(a, ann, "/who") == ["* in #dev (1): ann"]
    clock.advance(120)
    assert send(b, bob, "/join #dev")[0] == "* you joined #dev; what you type goes there"

    send(a, ann, "/invite bob")
    assert send(b, cy, "/join #dev") == ["! #dev is invite-only; ask its owner to /invite you"]
    send(a, ann, "/invite cy")
    assert cy.take() == ["* ann invited you to #dev; /join #dev"]
    assert send(b, cy, "/join #dev")[0] == "* you joined #dev; what you type goes there"


def test_a_room_made_on_one_node_is_listed_on_the_other_with_its_members():
    (a, b), _, _ = nodes()
    ann, bob = join(a, "ann"), join(b, "bob")
    send(a, ann, "/join #ops")
    lines = send(b, bob, "/rooms")
    assert "*   #ops (1)" in lines
    send(a, ann, "/part")
    assert "*   #ops (1)" not in send(b, bob, "/rooms")


class Database(MemoryStore):
    """One database for both nodes that keeps accounts' rooms, numbering messages as
    PostgreSQL does."""

    def add_message(self, message):
        message.id = max([m.id for m in self.saved], default=0) + 1
        return super().add_message(message)


def test_an_accounts_rooms_come_back_when_it_logs_in_on_the_other_node():
    (a, b), _, clock = nodes(store=Database())
    ann = account(a, "ann")
    send(a, ann, "/join #dev")
    a.disconnect(ann.session)
    clock.advance(60)
    bob = join(a, "bob")
    send(a, bob, "/join #dev")
    again = join(b, "annx")
    lines = send(b, again, f"/login ann {PASSWORD}")
    assert "* you are in #lobby, #dev" in lines
    send(a, bob, "welcome back")
    assert again.take() == ["[#dev] bob: welcome back"]
    assert send(a, bob, "/who") == ["* in #dev (2): ann, bob"]


class SlowClaims(Database):
    """A database whose answers to new rooms come later, so two nodes can make one room
    before either hears of the other's."""

    def __init__(self):
        super().__init__()
        self.claims = []

    def claim_room(self, room, state):
        d = defer.Deferred()
        self.claims.append((d, room, state))
        return d

    def answer(self):
        claims, self.claims = self.claims, []
        for d, room, state in claims:
            d.callback(self.room_states.setdefault(room, state))


def test_a_room_made_on_two_nodes_at_the_same_moment_has_one_owner_on_both():
    store = SlowClaims()
    (a, b), _, clock = nodes(store=store)
    ann, bob = account(a, "ann"), account(b, "bob")
    a.receive(ann.session, "/join #x")
    b.receive(bob.session, "/join #x")  # b has not heard of a's #x yet
    store.answer()  # a's came first
    clock.advance(0)
    assert "* #x was made on another server at the same moment; ann owns it" in bob.take()
    assert not any("owns it" in line for line in ann.take())
    assert send(b, bob, "/topic mine") == ["! only ann, its owner, may set the topic of #x"]
    send(a, ann, "/topic ours")
    assert bob.take() == ["* ann set the topic: ours"]
    assert send(b, bob, "/kick ann") == ["! only ann, its owner, may remove people from #x"]
    assert send(b, bob, "/who") == ["* in #x (2): ann, bob"]
    assert [json.loads(s)["owner"] for s in store.room_states.values()] == ["ann"]


def test_a_state_without_an_owner_does_not_take_the_owner_away():
    (a, b), _, _ = nodes()
    ann, bob = account(a, "ann"), join(b, "bob")
    send(a, ann, "/join #dev")
    b.rooms.heard_state(json.dumps({"name": "#dev", "owner": None, "topic": "hi"}))
    assert send(b, bob, "/join #dev")[0] == "* you joined #dev; what you type goes there"
    assert send(b, bob, "/topic mine") == ["! only ann, its owner, may set the topic of #dev"]


def test_who_parted_the_default_room_on_one_node_is_out_of_it_on_the_other():
    (a, b), _, clock = nodes()
    ann, bob = join(a, "ann"), join(b, "bob")
    send(a, ann, "/join #dev")
    send(a, ann, "/part #lobby")
    assert bob.take() == ["* ann left"]
    assert send(b, bob, "/who #lobby") == ["* in #lobby (1): bob"]
    send(b, bob, "lobby only")
    assert ann.take() == []
    send(a, ann, "/join #lobby")
    assert bob.take() == ["* ann joined"]
    assert send(b, bob, "/who #lobby") == ["* in #lobby (2): ann, bob"]


def test_an_invitation_lets_in_a_guest_kicked_on_another_node():
    (a, b), _, _ = nodes()
    ann = account(a, "ann")
    bob = join(b, "bob")
    send(a, ann, "/join #dev")
    send(b, bob, "/join #dev")
    send(a, ann, "/kick bob 5")
    bob.take()
    assert send(b, bob, "/join #dev") == [
        "! you were removed from #dev; you may rejoin in 5 minutes"
    ]
    send(a, ann, "/invite bob")
    bob.take()
    assert send(b, bob, "/join #dev")[0] == "* you joined #dev; what you type goes there"


def test_a_guest_kicked_from_another_node_cannot_rejoin_under_a_new_name():
    (a, b), _, _ = nodes()
    ann = account(a, "ann")
    bob = join(b, "bob")
    send(a, ann, "/join #dev")
    send(b, bob, "/join #dev")
    send(a, ann, "/kick bob 5")
    send(b, bob, "/nick bobby")
    bob.take()
    assert send(b, bob, "/join #dev") == [
        "! you were removed from #dev; you may rejoin in 5 minutes"
    ]
    other = join(a, "cy")  # from the same address, on the owner's node
    assert send(a, other, "/join #dev") == [
        "! you were removed from #dev; you may rejoin in 5 minutes"
    ]
