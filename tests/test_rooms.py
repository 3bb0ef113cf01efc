"""Rooms on one node, as users on the line door see them (chatd.testing's FakeClient keeps
what telnet would show): /join, /part, /rooms, /topic, /who, /kick, /invite, history and
catch-up per room, an account's rooms on a second device."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.events import Message, Presence, Rooms
from chatd.testing import FakeClient, MemoryStore, TestRoom, make_room

PASSWORD = "correct horse battery"


def people(room: TestRoom, *names: str | None) -> list[FakeClient]:
    """Connections named C{names} (a guest for None), each having read what came so far."""
    clients = [room.join(name) for name in names]
    room.clock.advance(0)
    for c in clients:
        c.take()
    return clients


def device(room: TestRoom, account: str, create: bool = False) -> FakeClient:
    """A new connection logged in to C{account}."""
    (client,) = people(room, None)
    verb = "register" if create else "login"
    client.send(f"/{verb} {account} {PASSWORD}")
    room.clock.advance(0)
    client.take()
    return client


def test_a_line_user_in_two_rooms_sees_the_other_rooms_lines_prefixed():
    room = make_room()
    ann, bob, cy = people(room, "ann", "bob", "cy")
    assert ann.send("/join #dev")[0] == "* you joined #dev; what you type goes there"
    bob.send("/join #dev")
    room.clock.advance(0)
    ann.take()
    bob.send("the build is green")
    cy.send("lunch?")
    assert ann.take() == ["bob: the build is green", "[#lobby] cy: lunch?"]
    assert cy.take() == []  # #dev is not cy's
    ann.send("/join #lobby")  # back to a room already joined: it becomes the current one
    bob.send("merged")
    cy.send("pizza")
    assert ann.take() == ["[#dev] bob: merged", "cy: pizza"]


def test_someone_who_never_joins_sees_the_chat_as_before():
    room = make_room()
    ann, bob = people(room, "ann", "bob")
    bob.send("/join #dev")
    bob.send("only for dev")
    room.clock.advance(0)
    assert ann.take() == []
    bob.send("/join #lobby")
    bob.send("hello all")
    assert ann.take() == ["bob: hello all"]
    assert [m.room for m in room.store.saved] == ["#dev", "#lobby"]


def test_joins_and_leaves_are_told_in_their_room_only():
    room = make_room()
    ann, bob, cy = people(room, "ann", "bob", "cy")
    ann.send("/join #dev")
    room.clock.advance(0)
    bob.send("/join #dev")
    room.clock.advance(0)
    assert ann.take() == ["* bob joined"]
    assert cy.take() == []
    assert bob.send("/part") == ["* you left #dev", "* you are now talking in #lobby"]
    room.clock.advance(0)
    assert ann.take() == ["* bob left"]
    room.disconnect(ann.session)
    room.clock.advance(0)
    assert cy.take() == ["* ann left"]  # told once, in the default room everyone is in
    assert bob.take() == ["* ann left"]


def test_part_explains_what_it_cannot_do():
    room = make_room()
    (ann,) = people(room, "ann")
    assert ann.send("/part") == [
        "! #lobby is the only room you are in; /join another room first (/quit leaves the chat)"
    ]
    assert ann.send("/part #nowhere") == ["! you are not in #nowhere; /rooms lists yours"]
    assert ann.send("/part #a #b") == [
        "! one room name, or none for the current room; usage: /part [#room]"
    ]


def test_the_default_room_may_be_parted_from_another_room():
    room = make_room()
    ann, bob, cy = people(room, "ann", "bob", "cy")
    ann.send("/join #dev")
    room.clock.advance(0)
    assert ann.send("/part #lobby") == ["* you left #lobby"]  # still talking in #dev
    room.clock.advance(0)
    assert bob.take() == ["* ann left"]
    cy.send("only for the lobby")
    room.clock.advance(0)
    assert ann.take() == []
    assert bob.take() == ["cy: only for the lobby"]
    assert bob.send("/who") == ["* in #lobby (2): bob, cy"]
    assert "*   #lobby (2)" in ann.send("/rooms")  # listed, not marked as hers
    assert ann.send("/part") == [
        "! #dev is the only room you are in; /join another room first (/quit leaves the chat)"
    ]
    assert ann.send("/part #lobby") == ["! you are not in #lobby; /rooms lists yours"]
    lines = ann.send("/join #lobby")
    assert lines[0] == "* you joined #lobby; what you type goes there"
    assert "recent in #lobby" in " ".join(lines)
    room.clock.advance(0)
    assert bob.take() == ["* ann joined"]
    cy.send("welcome back")
    assert ann.take() == ["cy: welcome back"]


def test_parting_the_default_room_moves_every_device_and_the_page_list():
    room = make_room()
    one = device(room, "ann", create=True)
    two = device(room, "ann")
    one.send("/join #dev")
    one.send("/join #ops")
    one.send("/join #lobby")  # back to talking in #lobby
    two.send("/join #dev")  # the other device talks in #dev
    one.take(), two.take()
    room.receive(one.session, "/part")
    rooms = [e for e in one.events if isinstance(e, Rooms)]
    assert (rooms[-1].names, rooms[-1].current) == (["#dev", "#ops"], "#ops")
    assert one.take()[:2] == ["* you left #lobby", "* you are now talking in #ops"]
    assert two.take() == []  # still talking in #dev
    assert two.send("/who #lobby") == ["* in #lobby (0): "]


def test_someone_removed_from_their_only_room_is_back_in_the_default_room():
    room = make_room()
    ann, bob = people(room, None, "bob")
    ann.send("/register ann " + PASSWORD)
    ann.send("/join #dev")
    bob.send("/join #dev")
    bob.send("/part #lobby")
    room.clock.advance(0)
    ann.take(), bob.take()
    ann.send("/kick bob 5")
    room.clock.advance(0)
    assert bob.take() == [
        "* bob was removed from #dev for 5 minutes by ann",
        "* you were removed from #dev",
        "* you are now talking in #lobby",
    ]
    assert ann.take() == ["[#lobby] * bob joined"]  # ann talks in #dev
    assert bob.send("/who") == ["* in #lobby (2): ann, bob"]


def test_a_guest_logging_in_to_an_account_online_elsewhere_leaves_no_ghost_in_its_rooms():
    room = make_room()
    device(room, "ann", create=True)
    guest, cy = people(room, "guesty", "cy")
    guest.send("/join #dev")
    cy.send("/join #dev")
    guest.send("/login ann " + PASSWORD)
    room.clock.advance(0)
    cy.take()
    assert cy.send("/who") == ["* in #dev (1): cy"]


def test_a_new_connection_starts_in_the_default_room_again():
    room = make_room()
    (ann,) = people(room, "ann")
    ann.send("/join #dev")
    ann.send("/part #lobby")
    room.disconnect(ann.session)
    room.clock.advance(0)
    (again,) = people(room, "ann")
    assert again.send("/who #lobby") == ["* in #lobby (1): ann"]
    assert again.send("/part") == [
        "! #lobby is the only room you are in; /join another room first (/quit leaves the chat)"
    ]


@pytest.mark.parametrize(
    "name, why",
    [
        ("#", "a room name is # and 1 to 31 characters, such as #lobby"),
        ("#" + "x" * 40, "a room name is # and 1 to 31 characters, such as #lobby"),
        ("#a,b", "a room name starts with # and has letters, digits"),
        ("#_x", "a room name starts with # and has letters, digits"),
    ],
)
def test_bad_room_names_are_refused_with_the_rule(name, why):
    room = make_room()
    (ann,) = people(room, "ann")
    assert ann.send(f"/join {name}")[0].startswith(f"! {why}")
    assert [r.name for r in room.conversations()] == ["#lobby"]


def test_a_room_name_is_normalised_and_look_alikes_are_one_room():
    room = make_room()
    ann, bob = people(room, "ann", "bob")
    ann.send("/join dev")  # the # is added
    bob.send("/join #DEV")
    bob.send("/join #dеv")  # Cyrillic е: the same room, not a new one
    assert [r.name for r in room.conversations()] == ["#dev", "#lobby"]
    assert room.conversation("#Dev").names() == ["ann", "bob"]


@settings(deadline=None)
@given(st.text(max_size=40))
def test_any_join_argument_gets_an_answer_and_never_a_failure(name):
    room = make_room()
    (ann,) = people(room, "ann")
    answer = ann.send(f"/join {name}")
    assert answer
    assert not any("failed on the server" in line for line in answer)


def test_rooms_lists_members_and_topics():
    room = make_room()
    ann, bob = people(room, None, None)
    ann.send("/register ann " + PASSWORD)
    ann.send("/join #dev")
    ann.send("/topic builds and bugs")
    bob.send("/join #ops")
    room.clock.advance(0)
    ann.take()
    assert ann.send("/rooms") == [
        "* rooms (> where you talk, + yours):",
        "* > #dev (1): builds and bugs",
        "* + #lobby (2)",
        "*   #ops (1)",
    ]


def test_topic_shows_and_only_the_owner_sets_it():
    room = make_room()
    ann, bob = people(room, None, "bob")
    ann.send("/register ann " + PASSWORD)
    ann.send("/join #dev")
    bob.send("/join #dev")
    room.clock.advance(0)
    bob.take()
    assert bob.send("/topic") == ["* #dev has no topic"]
    assert bob.send("/topic mine now") == ["! only ann, its owner, may set the topic of #dev"]
    ann.send("/topic release on Friday")
    assert bob.take() == ["* ann set the topic: release on Friday"]
    assert bob.send("/topic") == ["* topic of #dev: release on Friday"]
    assert bob.send("/join #lobby") == ["* you are now talking in #lobby"]
    assert bob.send("/topic hi") == ["! only the owner may set the topic of #lobby"]


def test_who_lists_a_rooms_members():
    room = make_room()
    ann, bob, cy = people(room, "ann", "bob", "cy")
    ann.send("/join #dev")
    bob.send("/join #dev")
    assert cy.send("/who #dev") == ["* in #dev (2): ann, bob"]
    assert cy.send("/who") == ["* in #lobby (3): ann, bob, cy"]
    assert cy.send("/who #nope") == ["! there is no room #nope; /rooms lists them"]


def test_history_is_per_room():
    room = make_room()
    ann, bob = people(room, "ann", "bob")
    bob.send("in the lobby")
    ann.send("/join #dev")
    ann.send("in dev")
    lines = ann.send("/history")
    assert lines[0] == "* history (1):"
    assert lines[1].endswith("ann: in dev")
    lines = bob.send("/history")
    assert lines[0] == "* history (1):"
    assert lines[1].endswith("bob: in the lobby")


def test_a_joiner_sees_the_rooms_recent_lines():
    room = make_room()
    ann, bob = people(room, "ann", "bob")
    ann.send("/join #dev")
    ann.send("first in dev")
    lines = bob.send("/join #dev")
    assert "* recent in #dev (1):" in lines
    assert lines[-1].endswith("ann: first in dev")


def test_a_kicked_person_cannot_rejoin_until_the_time_is_up():
    room = make_room()
    ann, bob, cy = people(room, None, "bob", "cy")
    ann.send("/register ann " + PASSWORD)
    ann.send("/join #dev")
    bob.send("/join #dev")
    cy.send("/join #dev")
    room.clock.advance(0)
    for c in (ann, bob, cy):
        c.take()
    assert cy.send("/kick bob") == ["! only ann, its owner, may remove people from #dev"]
    ann.send("/kick bob 5")
    assert cy.take() == ["* bob was removed from #dev for 5 minutes by ann"]
    assert bob.take() == [
        "* bob was removed from #dev for 5 minutes by ann",
        "* you were removed from #dev",
        "* you are now talking in #lobby",
    ]
    assert bob.send("/join #dev") == ["! you were removed from #dev; you may rejoin in 5 minutes"]
    room.clock.advance(4 * 60)
    assert bob.send("/join #dev") == ["! you were removed from #dev; you may rejoin in 1 minute"]
    room.clock.advance(60)
    assert bob.send("/join #dev")[0] == "* you joined #dev; what you type goes there"
    assert ann.send("/kick nobody") == ["! nobody called nobody is in #dev"]
    assert ann.send("/kick bob soon") == [
        "! minutes is a whole number from 1 to 10080; usage: /kick <name> [minutes]"
    ]


def test_invite_only_holds():
    room = make_room()
    ann, bob, cy = people(room, None, "bob", "cy")
    ann.send("/register ann " + PASSWORD)
    ann.send("/join #secret")
    cy.send("/join #secret")  # in it before it became invite-only: stays invited
    ann.send("/invite bob")
    room.clock.advance(0)
    assert "* ann invited you to #secret; /join #secret" in bob.take()
    (dee,) = people(room, "dee")
    bob.take()
    assert dee.send("/join #secret") == ["! #secret is invite-only; ask its owner to /invite you"]
    assert bob.send("/join #secret")[0] == "* you joined #secret; what you type goes there"
    cy.send("/part #secret")
    assert cy.send("/join #secret")[0] == "* you joined #secret; what you type goes there"
    assert bob.send("/invite dee") == ["! only ann, its owner, may invite people to #secret"]


def test_guest_rooms_have_no_owner_and_expire_when_empty():
    room = make_room()
    ann, bob = people(room, "ann", "bob")
    ann.send("/join #tmp")
    assert ann.send("/kick bob") == [
        "! #tmp has no owner (a guest made it); rooms made by accounts have one"
    ]
    ann.send("/topic anyone may set this")
    assert room.conversation("#tmp").topic == "anyone may set this"
    ann.send("/part")
    assert room.conversation("#tmp") is None


def test_an_owned_room_outlives_its_members_and_a_restart():
    store = MemoryStore()
    room = make_room(store=store)
    (ann,) = people(room, None)
    ann.send("/register ann " + PASSWORD)
    ann.send("/join #kept")
    ann.send("/topic still here")
    ann.send("/part")
    assert room.conversation("#kept").topic == "still here"
    again = make_room(store=store)
    kept = again.conversation("#kept")
    assert kept is not None and kept.owner == "ann" and kept.topic == "still here"


def test_an_accounts_rooms_come_back_on_a_second_device():
    store = MemoryStore()
    room = make_room(store=store)
    phone = device(room, "ann", create=True)
    phone.send("/join #dev")
    phone.send("/join #ops")
    room.disconnect(phone.session)
    room.clock.advance(60)
    laptop = device(room, "ann")
    assert sorted(laptop.session.user.rooms) == ["#dev", "#ops"]
    (bob,) = people(room, "bob")
    bob.send("/join #dev")
    bob.send("hello ann")
    assert laptop.take()[-1] == "[#dev] bob: hello ann"  # the lobby is current on login
    # Both devices at once: a room joined on one is the other's too.
    tablet = device(room, "ann")
    tablet.send("/join #new")
    assert "#new" in laptop.session.user.rooms
    assert any(isinstance(e, Rooms) and "#new" in e.names for e in laptop.events)


def test_catch_up_at_login_covers_the_accounts_rooms_only():
    store = MemoryStore()
    room = make_room(store=store)
    ann = device(room, "ann", create=True)
    ann.send("/join #dev")
    room.disconnect(ann.session)
    room.clock.advance(60)
    (bob,) = people(room, "bob")
    bob.send("/join #dev")
    bob.send("for dev")
    bob.send("/join #other")
    bob.send("for other")
    bob.send("/join #lobby")
    bob.send("for the lobby")
    (back,) = people(room, None)
    lines = back.send(f"/login ann {PASSWORD}")
    start = lines.index("* missed while you were away (2):")
    shown = [line.split("] ")[-1] for line in lines[start + 1 :]]
    assert shown == ["bob: for dev", "bob: for the lobby"]
    assert lines[start + 1].startswith("[#dev] [")


def test_whispers_cross_rooms():
    room = make_room()
    ann, bob = people(room, "ann", "bob")
    ann.send("/join #dev")
    bob.send("/join #ops")
    (cy,) = people(room, "cy")
    bob.take()
    ann.send("/w bob psst")
    assert bob.take() == [">> ann: psst"]
    assert cy.take() == []
    assert room.store.saved == []  # not in any room's history


def test_limits_on_rooms_come_from_the_config():
    room = make_room(max_rooms_per_person=3, max_rooms=4, max_room_members=2)
    ann, bob, cy = people(room, "ann", "bob", "cy")
    ann.send("/join #a")
    ann.send("/join #b")
    assert ann.send("/join #c") == ["! you are in 3 rooms, as many as allowed; /part one first"]
    bob.send("/join #a")
    assert cy.send("/join #a") == ["! #a is full"]
    cy.send("/join #c")
    assert cy.send("/join #d") == ["! there are as many rooms as this server allows; join one"]


def test_events_carry_their_room():
    room = make_room()
    ann, bob = people(room, "ann", "bob")
    ann.send("/join #dev")
    bob.send("/join #dev")
    room.clock.advance(0)
    bob.send("hi")
    message = [e for e in ann.events if isinstance(e, Message)][-1]
    assert message.room == "#dev"
    lists = [e for e in ann.events if isinstance(e, Presence) and e.update]
    assert {p.room for p in lists} >= {"#dev"}
    assert room.history(10, "#dev").result[-1].text == "hi"
    assert room.history_after(0, 10, "#lobby").result == []


def test_say_to_a_room_not_joined_is_refused():
    room = make_room()
    (ann,) = people(room, "ann")
    with pytest.raises(Exception, match="you are not in #dev"):
        room.say(ann.session, "hi", to_room="#dev")


def test_a_room_made_by_a_guest_is_owned_by_the_account_it_logs_in_to():
    room = make_room()
    ann, bob = people(room, None, "bob")
    ann.send("/join #mine")
    ann.send("/register ann " + PASSWORD)
    bob.send("/join #mine")
    assert bob.send("/topic mine") == ["! only ann, its owner, may set the topic of #mine"]
    assert room.conversation("#mine").owner == "ann"


def test_logging_out_one_device_leaves_the_accounts_rooms_to_the_others():
    room = make_room()
    phone = device(room, "ann", create=True)
    phone.send("/join #dev")
    laptop = device(room, "ann")
    laptop.send("/join #dev")
    laptop.send("/logout")
    (bob,) = people(room, "bob")
    bob.send("in the lobby")
    assert laptop.take()[-1] == "bob: in the lobby"  # a guest in the lobby only: no prefix
    bob.send("/join #dev")
    bob.send("in dev")
    assert laptop.take() == []
    assert phone.take()[-1] == "bob: in dev"


def test_listeners_such_as_the_minechat_read_port_hear_the_default_room_only():
    room = make_room()
    listener = FakeClient("minechat")
    room.listen(listener)
    (ann,) = people(room, "ann")
    ann.send("/join #dev")
    ann.send("for dev")
    ann.send("/join #lobby")
    ann.send("for everyone")
    said = [e.text for e in listener.events if isinstance(e, Message)]
    assert said == ["for everyone"]


def test_a_kicked_guest_cannot_rejoin_under_another_name():
    room = make_room()
    (ann,) = people(room, None)
    ann.send("/register ann " + PASSWORD)
    ann.send("/join #dev")
    (bob,) = people(room, "bob")
    bob.send("/join #dev")
    ann.send("/kick bob")
    bob.send("/nick robert")
    assert bob.send("/join #dev") == ["! you were removed from #dev; you may rejoin in 10 minutes"]


def test_a_default_room_that_is_no_room_name_stops_the_start(tmp_path):
    from chatd.config import ConfigError, load

    ini = tmp_path / "chatd.ini"
    ini.write_text("[rooms]\ndefault_room = lobby room\n")
    with pytest.raises(ConfigError, match="default_room"):
        load(str(ini))
