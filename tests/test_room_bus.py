"""Rooms of several nodes in one process: LocalBus groups and one shared store, a driven
clock. What the Room does with the bus, without Redis or PostgreSQL (tests/test_cluster.py
runs real processes against both)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.task import Clock

from chatd.bus import LocalBus
from chatd.config import Config
from chatd.events import Presence
from chatd.room import Room
from chatd.testing import FakeClient, MemoryStore, guest_names, make_room


def nodes(
    count: int = 2, store: MemoryStore | None = None, **settings
) -> tuple[list[Room], MemoryStore, Clock]:
    """Nodes "a", "b", ... of one room on one clock, sharing C{store} (a new one if None),
    which numbers messages as PostgreSQL does."""
    clock = Clock()
    clock.advance(1_700_000_000)
    store = store or MemoryStore(numbers=True)
    group: list[LocalBus] = []
    names = guest_names()
    rooms = []
    for node in "abcdefgh"[:count]:
        bus = LocalBus(group)
        bus.startService()
        rooms.append(make_room(clock, store=store, bus=bus, names=names, node=node, **settings))
    return rooms, store, clock


@contextmanager
def at_once(*rooms: Room) -> Iterator[None]:
    """What C{rooms} publish meanwhile reaches the other nodes only afterwards, in order:
    what two nodes do at the same moment, neither having heard of the other's."""
    held: list[tuple[Any, str, dict[str, Any]]] = []
    buses = [room.bus for room in rooms]
    for bus in buses:
        bus._deliver = lambda kind, payload, bus=bus: held.append((bus, kind, payload))
    try:
        yield
    finally:
        for bus in buses:
            del bus._deliver
        for bus, kind, payload in held:
            bus._deliver(kind, payload)


def join(room: Room, name: str) -> FakeClient:
    client = FakeClient()
    client.session = room.connect(client)
    room.receive(client.session, f"/nick {name}")
    room.clock.advance(0)  # the reactor turn ends: the member list goes out
    client.take()
    return client


def test_messages_whispers_and_renames_reach_the_other_node_once():
    (a, b), _, _ = nodes()
    alice, bob = join(a, "Alice"), join(b, "Bob")
    a.receive(alice.session, "hello")
    a.receive(alice.session, "/whisper Bob psst")
    a.receive(alice.session, "/nick Alicia")
    assert bob.take() == [
        "Alice: hello",
        ">> Alice: psst",
        "* Alice is now known as Alicia",
    ]
    a.clock.advance(0)  # the reactor turn ends: the member list goes out
    b.receive(bob.session, "/list")
    assert bob.take() == ["* online (2): Alicia, Bob"]


def test_send_to_a_guest_on_another_node_arrives_like_a_whisper():
    (a, b), _, _ = nodes()
    alice, guest = join(a, "Alice"), join(b, "Wanderer")  # a guest: no account to keep it for
    alice.take()
    a.receive(alice.session, "/send -u wanderer meet at six")
    assert guest.take() == [">> Alice: meet at six"]
    assert alice.take() == ["* to Wanderer: meet at six"]
    a.receive(alice.session, "/send -u Nobody hello?")
    assert alice.take() == ["! nobody called Nobody is online; /list shows who is"]


def test_status_counts_everyone_online_and_says_how_many_are_on_this_server():
    (a, b), _, _ = nodes()
    join(a, "Alice")
    bob = join(b, "Bob")
    b.receive(bob.session, "/status")
    assert bob.take()[0].startswith("* chat: 2 online (1 on this server), 1 connection, ")


def test_a_name_in_use_on_another_node_is_refused():
    (a, b), _, _ = nodes()
    join(a, "Alice")
    bob = join(b, "Bob")
    b.receive(bob.session, "/nick alice")
    assert bob.take() == ["! the name alice is taken; pick another"]


def test_after_a_gap_lost_messages_come_from_the_store_once_and_in_order():
    (a, b), store, _ = nodes()
    alice, bob = join(a, "Alice"), join(b, "Bob")
    a.receive(alice.session, "seen live")
    bob.take()
    b.bus.group.remove(b.bus)  # node b stops hearing the bus
    a.receive(alice.session, "lost 1")
    b.receive(bob.session, "said meanwhile")  # newer than "lost 1": recovery must not skip it
    a.receive(alice.session, "lost 2")
    b.bus.group.append(b.bus)
    b.bus._gap()
    assert bob.take() == ["Alice: lost 1", "Alice: lost 2"]
    b.bus._gap()  # the same gap twice shows nothing twice
    assert bob.take() == []
    assert [m.id for m in store.saved] == [1, 2, 3, 4]


def test_everyone_sees_messages_in_id_order_even_when_the_bus_is_slower():
    (a, b), _, _ = nodes()
    alice, bob, carol = join(a, "Alice"), join(b, "Bob"), join(b, "Carol")
    carol.take()
    b.bus.group.remove(b.bus)  # what a publishes has not reached b yet
    a.receive(alice.session, "first")
    b.receive(bob.session, "second")
    b.bus.group.append(b.bus)
    a.receive(alice.session, "third")
    assert carol.take() == ["Alice: first", "Bob: second", "Alice: third"]
    assert alice.take().count("Bob: second") == 1


def test_reports_on_different_nodes_add_up_to_a_mute_on_every_node():
    (a, b), _, _ = nodes()
    mallory = join(a, "Mallory")  # from 10.0.0.1, as every FakeClient
    reporters = [join(a, "Ann"), join(b, "Ben"), join(b, "Cid")]
    for i, (client, room) in enumerate(zip(reporters, (a, b, b), strict=True)):
        client.peer = f"10.0.1.{i}"  # three people
        room.receive(client.session, "/report Mallory")
    assert reporters[1].take()[-1] == "* Mallory was muted for 10m00s after complaints"
    a.receive(mallory.session, "still here?")
    assert mallory.take()[-1].startswith("! you are muted for 10m00s more")
    again = join(b, "Mal")  # back on the other node, from the same address
    b.receive(again.session, "and now?")
    assert again.take()[-1].startswith("! you are muted for 10m00s more")
    assert not any("still here?" in line or "and now?" in line for line in reporters[2].take())


def test_an_account_has_one_allowance_on_every_node():
    (a, b), _, _ = nodes(messages_per_hour=2)
    phone, laptop, bob = FakeClient(), FakeClient(), join(b, "Bob")
    phone.session, laptop.session = a.connect(phone), b.connect(laptop)
    token = a.register_account(phone.session, "Ann").result[1]
    b.login_with_token(laptop.session, token)
    a.receive(phone.session, "from the phone")
    b.receive(laptop.session, "from the laptop")
    bob.take()
    b.receive(laptop.session, "one too many")
    assert laptop.take()[-1].startswith("! you have sent 2 messages in the last hour")
    assert bob.take() == []


def test_each_node_keeps_and_sends_its_own_scheduled_messages_after_a_restart():
    (a, b), store, _ = nodes()
    tokens = []
    for room, name in ((a, "Ann"), (b, "Cid")):
        client = FakeClient()
        client.session = room.connect(client)
        tokens.append(room.register_account(client.session, name).result[1])
        room.receive(client.session, f"/send -t 600 later from {name}")
    for room in (a, b):
        room.stopService()
    (a, b), _, clock = nodes(store=store)  # both restarted (on a new clock: new processes)
    for room, token in zip((a, b), tokens, strict=True):
        client = FakeClient()
        client.session = room.connect(client)
        room.login_with_token(client.session, token)
    reader = join(b, "Reader")
    clock.advance(600)
    lines = reader.take()
    assert lines.count("Ann: later from Ann") == lines.count("Cid: later from Cid") == 1


def test_member_lists_drop_a_node_that_stopped_at_the_next_refresh():
    (a, b), _, clock = nodes()
    alice = join(a, "Alice")
    join(b, "Bob")
    b.bus.stopService()  # as if its presence expired in Redis
    alice.events.clear()
    clock.advance(Config().presence_ttl)
    assert [e.names for e in alice.events if isinstance(e, Presence)] == [["Alice"]]


def clashing(room: Room, *names: str) -> None:
    """Guest names for C{room} from C{names}: nodes given the same list clash."""
    room.names.namer = iter(names).__next__


def listed(room: Room, client: FakeClient) -> list[str]:
    room.receive(client.session, "/list")
    return client.take()


def test_two_guests_named_alike_on_two_nodes_end_apart_and_the_later_node_says_why():
    (a, b), _, clock = nodes()
    for room in (a, b):
        clashing(room, "Sam", "Max")
    first, second = FakeClient(), FakeClient()
    first.session, second.session = a.connect(first), b.connect(second)  # the same moment
    first.take(), second.take()
    clock.advance(0)
    assert second.take() == [
        "* Sam joined",  # the one on node a
        "* you are Max",
        "* someone on another server already had the name Sam; "
        "you are now Max (/nick picks another)",
    ]
    assert first.take() == ["* Sam joined", "* the other Sam is now known as Max"]
    assert listed(a, first) == listed(b, second) == ["* online (2): Max, Sam"]


def test_renames_racing_on_two_nodes_end_with_two_names():
    (a, b), _, clock = nodes()
    first, second = join(a, "Ann"), join(b, "Bob")
    with at_once(a, b):
        a.receive(first.session, "/nick Kim")
        b.receive(second.session, "/nick kim")  # before node a's new name is heard of
    first.take(), second.take()
    clock.advance(0)
    new = second.session.name
    assert new.casefold() != "kim"
    assert second.take() == [
        f"* you are {new}",
        f"* someone on another server already had the name Kim; "
        f"you are now {new} (/nick picks another)",
    ]
    assert first.take() == [f"* the other kim is now known as {new}"]
    assert listed(a, first) == listed(b, second) == [f"* online (2): {new}, Kim"]


def test_an_account_keeps_its_name_when_a_guest_on_an_earlier_node_takes_it():
    (a, b), _, clock = nodes()
    guest, ann = join(a, "Guest"), FakeClient()
    ann.session = b.connect(ann)
    with at_once(a, b):
        a.receive(guest.session, "/nick Ann")  # node b has not heard of this guest yet
        b.register_account(ann.session, "Ann")  # the same moment
    clock.advance(0)
    new = guest.session.name
    assert (ann.session.name, ann.session.user.account) == ("Ann", "Ann")
    assert new != "Ann"
    assert (
        f"* someone on another server already had the name Ann; "
        f"you are now {new} (/nick picks another)"
    ) in guest.take()
    assert ann.take()[-1] == f"* the other Ann is now known as {new}"
    assert listed(a, guest) == listed(b, ann) == [f"* online (2): Ann, {new}"]


def test_an_account_made_on_another_node_is_reserved_while_it_is_offline():
    (a, b), _, clock = nodes()
    ann = FakeClient()
    ann.session = b.connect(ann)
    b.register_account(ann.session, "Ann")
    b.receive(ann.session, "/exit")
    clock.advance(0)
    guest = join(a, "Guest")
    a.receive(guest.session, "/nick ann")
    assert guest.take() == [
        "! the name Ann belongs to an account; /login Ann <password> if it is yours"
    ]


def test_a_clash_the_bus_lost_is_settled_after_the_gap():
    (a, b), _, clock = nodes()
    for room in (a, b):
        clashing(room, "Sam", "Max")
    first, second = FakeClient(), FakeClient()
    b.bus.group.remove(b.bus)  # node b hears nothing: neither node a's Sam nor its claim
    first.session, second.session = a.connect(first), b.connect(second)
    clock.advance(0)
    b.bus.group.append(b.bus)
    first.take()
    b.bus._gap()
    clock.advance(0)
    assert first.take() == ["* the other Sam is now known as Max"]
    assert second.take()[-1] == (
        "* someone on another server already had the name Sam; "
        "you are now Max (/nick picks another)"
    )
    assert listed(a, first) == listed(b, second) == ["* online (2): Max, Sam"]


def test_an_account_made_while_the_bus_was_cut_off_is_reserved_after_the_gap():
    (a, b), store, clock = nodes()
    b.bus.group.remove(b.bus)  # node b hears nothing of what node a does
    ann = FakeClient()
    ann.session = a.connect(ann)
    a.register_account(ann.session, "Ann")
    a.receive(ann.session, "/exit")
    clock.advance(0)
    taker = join(b, "ann")  # meanwhile, a guest on node b took the name
    b.bus.group.append(b.bus)
    b.bus._gap()
    clock.advance(0)
    new = taker.session.name
    assert new != "ann"
    assert taker.take()[-1] == (
        f"* someone on another server already had the name Ann; "
        f"you are now {new} (/nick picks another)"
    )
    guest = join(b, "Guest")
    b.receive(guest.session, "/nick ann")
    assert guest.take() == [
        "! the name Ann belongs to an account; /login Ann <password> if it is yours"
    ]
