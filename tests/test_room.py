"""The Room without sockets: fake clients, a driven clock, the real command plugins."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from chatd.events import Message
from chatd.room import GOODBYE_WAIT, Room, Session
from chatd.testing import FakeClient, MemoryStore, make_room


@pytest.fixture
def room() -> Room:
    return make_room()


def test_a_newcomer_is_named_welcomed_and_announced(room):
    alice = room.guest()
    assert alice.take()[:2] == [
        "* you are Guest1",
        "* Welcome to chatd, Guest1! 1 online. "
        "Type a message and press Enter; /help lists the commands.",
    ]
    bob = room.guest()
    assert "* Guest2 joined" in alice.take()
    assert "* Guest2 joined" not in bob.take()


def test_a_message_reaches_everyone_but_its_sender(room):
    alice, bob, carol = room.guest(), room.guest(), room.guest()
    for c in (alice, bob, carol):
        c.take()
    room.receive(alice.session, "hello all")
    assert bob.take() == ["Guest1: hello all"]
    assert carol.take() == ["Guest1: hello all"]
    assert alice.take() == []


def test_blank_lines_send_nothing(room):
    alice, bob = room.guest(), room.guest()
    bob.take()
    room.receive(alice.session, "   ")
    room.receive(alice.session, "\x1b[2J")
    assert bob.take() == []


@pytest.mark.parametrize(
    "typed, seen",
    [
        ("hi\x1b[2Jthere", "hithere"),  # clear screen
        ("a\x1b]0;owned\x07b", "ab"),  # window title (OSC ... BEL)
        ("a\x1b]0;owned\x1b\\b", "ab"),  # window title (OSC ... ST)
        ("ding\x07dong", "dingdong"),
        ("over\rwrite", "overwrite"),
        ("nul\x00l", "null"),
        ("8-bit\x9b2Jcsi", "8-bitcsi"),
        ("rtl\u202eevil", "rtlevil"),
        ("tab\there", "tab here"),
    ],
)
def test_control_characters_never_reach_others_raw(room, typed, seen):
    alice, bob = room.guest(), room.guest()
    bob.take()
    room.receive(alice.session, typed)
    assert bob.take() == [f"Guest1: {seen}"]


def test_a_line_starting_with_a_double_slash_is_sent_with_one(room):
    alice, bob = room.guest(), room.guest()
    bob.take()
    room.receive(alice.session, "//shrug is not a command")
    assert bob.take() == ["Guest1: /shrug is not a command"]


def test_unknown_commands_point_at_help(room):
    alice, bob = room.guest(), room.guest()
    alice.take(), bob.take()
    room.receive(alice.session, "/frobnicate now")
    assert alice.take() == ["! unknown command /frobnicate; /help lists the commands"]
    assert bob.take() == []


def test_a_disconnect_is_announced_and_frees_the_name(room):
    alice, bob = room.guest(), room.guest()
    alice.take()
    room.disconnect(bob.session)
    room.disconnect(bob.session)  # a door may report it twice
    room.clock.advance(0)  # the reactor turn ends: the leave is announced
    assert alice.take() == ["* Guest2 left"]
    assert room.online() == ["Guest1"]
    assert room.find("guest2") is None


def test_a_failing_door_does_not_stop_delivery_to_the_others(room):
    alice, bob, carol = room.guest(), room.guest(), room.guest()
    carol.take()

    def broken(event):
        raise RuntimeError("door bug")

    bob.deliver = broken
    room.receive(alice.session, "still here?")
    assert carol.take() == ["Guest1: still here?"]


def test_a_crashing_command_gives_a_clear_error_not_a_traceback():
    room = make_room()
    from chatd.commands import command

    @command("boom")
    def boom(ctx, args):
        raise ZeroDivisionError

    room.commands.add(boom)
    alice = room.guest()
    alice.take()
    room.receive(alice.session, "/boom")
    assert alice.take() == ["! /boom failed on the server; please try again later"]


def test_shutting_down_closes_every_connection_after_the_messages_being_saved(room):
    room.store = store = SlowStore()
    alice, bob = room.guest(), room.guest("ws")
    listener = FakeClient("minechat-read")
    room.listen(listener)
    alice.take(), bob.take()
    room.receive(alice.session, "last words")
    room.stopService()
    assert bob.closed is None  # not before "last words" is saved and sent
    store.finish()
    assert bob.take() == ["Guest1: last words", "* the server is shutting down"]
    assert alice.closed == bob.closed == listener.closed == "the server is shutting down"


def test_shutting_down_says_goodbye_even_when_the_store_stops_answering(room):
    room.store = SlowStore()
    alice, bob = room.guest(), room.guest()
    alice.take(), bob.take()
    room.receive(alice.session, "never saved")
    room.stopService()
    room.receive(bob.session, "typed while stopping")  # ignored: nothing is saved any more
    room.clock.advance(GOODBYE_WAIT)
    assert bob.take() == ["* the server is shutting down"]
    assert alice.closed == bob.closed == "the server is shutting down"
    assert len(room.store.pending) == 1


def test_a_rename_tells_every_device_of_the_user(room):
    phone = room.guest()
    laptop = FakeClient("ws")
    laptop.session = Session(laptop, phone.session.user, 0)
    room.members.add(laptop.session)
    bob = room.guest()
    phone.take(), laptop.take(), bob.take()
    room.receive(phone.session, "/rename Alice")
    for device in (phone, laptop):
        assert device.take() == ["* you are Alice"]  # the notice is for the others
    assert bob.take() == ["* Guest1 is now known as Alice"]


class SlowStore(MemoryStore):
    """A store whose saves finish only when the test says so, in the order they were made."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[defer.Deferred[Message], Message]] = []

    def add_message(self, message: Message) -> defer.Deferred[Message]:
        d: defer.Deferred[Message] = defer.Deferred()
        self.pending.append((d, message))
        return d

    def finish(self, fail: bool = False) -> None:
        d, message = self.pending.pop(0)
        if fail:
            d.errback(RuntimeError("disk full"))
        else:
            self.saved.append(message)
            d.callback(message)


def test_what_is_said_after_a_message_waits_until_the_message_is_saved(room):
    room.store = store = SlowStore()
    alice, bob = room.guest(), room.guest()
    alice.take(), bob.take()
    room.receive(alice.session, "next")
    room.receive(alice.session, "/rename Alice")
    room.receive(alice.session, "/w Guest2 psst")
    assert bob.take() == []  # nothing overtakes the message that is still being saved
    store.finish()
    assert bob.take() == ["Guest1: next", "* Guest1 is now known as Alice", ">> Alice: psst"]


def test_a_message_that_cannot_be_saved_is_reported_in_its_place(room):
    room.store = store = SlowStore()
    alice, bob = room.guest(), room.guest()
    alice.take(), bob.take()
    room.receive(alice.session, "lost")
    room.receive(alice.session, "kept")
    store.finish(fail=True)
    assert alice.take() == ["! your message could not be saved, so nobody got it; try again"]
    assert bob.take() == []
    store.finish()
    assert bob.take() == ["Guest1: kept"]


def test_goodbye_arrives_even_while_a_message_is_being_saved(room):
    room.store = store = SlowStore()
    alice, bob = room.guest(), room.guest()
    alice.take(), bob.take()
    room.receive(alice.session, "see you")
    room.receive(alice.session, "/exit")
    room.receive(alice.session, "typed after /exit")  # in the same packet, say
    assert alice.closed is None  # not before it has been told goodbye
    while store.pending:
        store.finish()
    assert alice.take() == ["* Goodbye, Guest1!"]
    assert alice.closed == "said goodbye"
    assert bob.take() == ["Guest1: see you"]


def test_a_delivery_that_fails_does_not_hold_up_the_ones_after_it(room):
    room.store = store = SlowStore()
    alice, bob = room.guest(), room.guest()
    alice.take(), bob.take()

    def broken(reason: str) -> None:
        raise RuntimeError("door is broken")

    alice.close = broken
    room.receive(alice.session, "bye")
    room.receive(alice.session, "/exit")
    room.receive(bob.session, "/w Guest1 still there?")
    store.finish()
    assert bob.take() == ["Guest1: bye", "* to Guest1: still there?"]


def test_a_flooder_is_disconnected_after_what_it_was_told_before():
    room = make_room(lines_per_second=1)
    room.store = store = SlowStore()
    alice, bob = room.guest(), room.guest()
    alice.take(), bob.take()
    for line in ("one", "two", "three", "four"):
        room.receive(alice.session, line)
    assert alice.closed is None  # not before what it was told about "one"
    store.finish()
    assert bob.take() == ["Guest1: one"]
    assert alice.take() == [
        "! you are sending more than 1 lines a second; that line was dropped. "
        "Slow down, or you will be disconnected",
        "! disconnected for sending too many lines too fast",
    ]
    assert alice.closed == "flooding"


def test_a_crowd_joining_at_once_is_announced_in_one_notice():
    room = make_room()
    clock = room.clock
    alice = room.guest()
    alice.take()
    crowd = [FakeClient() for _ in range(5)]
    for client in crowd:
        client.session = room.connect(client)
    assert alice.take() == []  # announced when the reactor turn ends
    clock.advance(0)
    assert alice.take() == ["* Guest2, Guest3, Guest4 and 2 others joined"]
    assert [line for line in crowd[0].take() if "joined" in line] == [
        "* Guest3, Guest4, Guest5 and 1 other joined"  # the others, not themselves
    ]
    assert [line for line in crowd[4].take() if "joined" in line] == [
        "* Guest2, Guest3, Guest4 and 1 other joined"
    ]


def test_a_join_is_announced_before_what_the_newcomer_says():
    room = make_room()
    alice = room.guest()
    alice.take()
    bob = FakeClient()
    bob.session = room.connect(bob)
    room.receive(bob.session, "hi, just arrived")
    assert alice.take() == ["* Guest2 joined", "Guest2: hi, just arrived"]


def test_past_the_crowd_size_arrivals_and_departures_are_summed_up_every_few_seconds():
    room = make_room(crowd_size=3, crowd_summary=5.0)
    clock = room.clock
    present = [room.guest(announce=False) for _ in range(4)]
    clock.advance(0)
    alice = present[0]
    alice.take()
    late = [room.guest(announce=False) for _ in range(2)]
    room.disconnect(present[3].session)
    clock.advance(0)
    assert not [line for line in alice.take() if "joined" in line or "left" in line]
    assert "6 online" in " ".join(late[1].take())  # the greeting still counts everyone
    clock.advance(5)
    assert alice.take() == ["* 3 joined, 1 left"]  # the fourth made it crowded
    assert "* 3 joined, 1 left" in late[0].take()


def test_a_crowded_room_with_no_summaries_says_nothing_of_arrivals():
    room = make_room(crowd_size=2, crowd_summary=0)
    clock = room.clock
    present = [room.guest(announce=False) for _ in range(3)]
    clock.advance(0)
    present[0].take()
    room.guest(announce=False)
    clock.advance(60)
    assert not [line for line in present[0].take() if "joined" in line]


def test_the_log_names_every_arrival_in_one_line_per_reactor_turn(room, log):
    ann = room.guest(announce=False)
    room.clock.advance(0)  # a connection alone: a line of its own
    bob = room.guest("ws", "10.0.0.2", announce=False)
    carol = room.guest("line", "10.0.0.3", announce=False)
    room.disconnect(carol.session)  # in the same turn: logged after her arrival
    dave = room.guest("irc", "10.0.0.4", announce=False)
    room.clock.advance(0)
    assert [line for line in log.texts() if "connected" in line] == [
        f"{ann.session!r} connected",
        f"2 connected: {bob.session!r}, {carol.session!r}",
        f"{carol.session!r} disconnected: left",
        f"{dave.session!r} connected",
    ]
    assert "10.0.0.2" in repr(bob.session) and "ws" in repr(bob.session)
