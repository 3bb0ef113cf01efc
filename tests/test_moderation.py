"""Message limits, reports and mutes, and /send now or later: the Room on a driven clock."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.commands import CommandError, command, discover
from chatd.config import Config
from chatd.events import Message
from chatd.gate import LOGIN_FIRST
from chatd.room import Room
from chatd.store import Account, Scheduled
from tests.fakes import FakeClient


class Door(FakeClient):
    """A connection from C{peer}; keeps what its user would read."""

    def __init__(self, room: Room, peer: str, door: str = "line") -> None:
        super().__init__(door, peer)
        self.room = room

    def send(self, line: str) -> list[str]:
        """Type a line; what this user reads in answer."""
        self.room.clock.advance(0)  # a reactor turn ends before anyone types
        self.take()
        self.room.receive(self.session, line)
        return self.take()


class Store:
    """Just enough of a store, answering at once, for guests and token-only accounts."""

    last_id = 0
    account_names: list[str] = []

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, str] = {}
        self.cache: dict[str, str] = {}
        self.rows: dict[tuple[str, int], Scheduled] = {}  # scheduled messages

    def start(self) -> None:
        pass

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def add_message(self, message: Message) -> defer.Deferred[Message]:
        return defer.succeed(message)

    def purge_messages(self, before: float) -> defer.Deferred[int]:
        return defer.succeed(0)

    def messages(self, *args: Any) -> defer.Deferred[list[Message]]:
        return defer.succeed([])

    def rooms(self) -> defer.Deferred[list[str]]:
        return defer.succeed([])

    def save_room(self, room: str, state: str) -> defer.Deferred[None]:
        return defer.succeed(None)

    def claim_room(self, room: str, state: str) -> defer.Deferred[str]:
        return defer.succeed(state)

    def join_room(self, account: str, room: str) -> defer.Deferred[None]:
        return defer.succeed(None)

    def part_room(self, account: str, room: str) -> defer.Deferred[None]:
        return defer.succeed(None)

    def take_whispers(self, account: str) -> defer.Deferred[list[Message]]:
        return defer.succeed([])

    def create_account(self, name: str, password_hash: Any, token_hash: str, *_: Any) -> Any:
        self.accounts[name] = Account(name, password_hash, 0)
        self.tokens[token_hash] = name
        return defer.succeed(None)

    def read_account_names(self) -> defer.Deferred[list[str]]:
        return defer.succeed(list(self.accounts))

    def account_for_token(self, token_hash: str) -> defer.Deferred[Account | None]:
        name = self.tokens.get(token_hash)
        return defer.succeed(self.accounts[name] if name else None)

    def set_last_seen(self, name: str, message_id: int) -> defer.Deferred[None]:
        return defer.succeed(None)

    def cache_get(self, key: str) -> defer.Deferred[str | None]:
        return defer.succeed(self.cache.get(key))

    def cache_put(self, key: str, value: str) -> defer.Deferred[None]:
        self.cache[key] = value
        return defer.succeed(None)

    def save_scheduled(self, node, id, account, due, text, to) -> defer.Deferred[None]:
        self.rows[(node, id)] = Scheduled(id, account, due, text, to)
        return defer.succeed(None)

    def drop_scheduled(self, node: str, id: int) -> defer.Deferred[None]:
        self.rows.pop((node, id), None)
        return defer.succeed(None)

    def scheduled(self, node: str) -> defer.Deferred[list[Scheduled]]:
        mine = sorted((id, row) for (n, id), row in self.rows.items() if n == node)
        return defer.succeed([row for _, row in mine])


class Chat:
    """A room on a driven clock, and a way to connect people to it."""

    def __init__(
        self, store: Store | None = None, start: float = 1_700_000_000, **settings: Any
    ) -> None:
        self.store = store or Store()
        self.clock = Clock()
        self.clock.advance(start)
        names = (f"Guest{i}" for i in itertools.count(1))
        self.room = Room(
            Config(**settings),
            self.clock,
            discover(),
            self.store,
            defer.maybeDeferred,
            namer=lambda: next(names),
        )
        self.room.startService()
        self._tokens: dict[str, str] = {}

    def join(self, peer: str = "10.0.0.1", name: str | None = None) -> Door:
        """A new connection; a guest, renamed to C{name} when given."""
        door = Door(self.room, peer)
        door.session = self.room.connect(door)
        if name is not None:
            self.room.rename(door.session, name)
        self.clock.advance(0)  # the reactor turn ends: the join is announced
        door.take()
        return door

    def device(self, account: str, peer: str = "10.0.0.1") -> Door:
        """A connection logged in to C{account} (created on first use)."""
        door = self.join(peer)
        if account in self._tokens:
            self.room.login_with_token(door.session, self._tokens[account])
        else:
            d = self.room.register_account(door.session, account)
            self._tokens[account] = d.result[1]
        door.take()
        return door

    def reconnect(self, door: Door) -> Door:
        self.room.disconnect(door.session)
        return self.join(door.peer)


def sent(reader: Door, line: str) -> bool:
    return any(line in seen for seen in reader.take())


# -- the message limit ---------------------------------------------------------------------


def test_the_limit_refuses_the_next_message_and_says_how_long_to_wait() -> None:
    chat = Chat(messages_per_hour=3)
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    for n in range(3):
        assert ann.send(f"hello {n}") == []
        chat.clock.advance(600)
    assert bob.take() == ["Ann: hello 0", "Ann: hello 1", "Ann: hello 2"]
    assert ann.send("one more") == [
        "! you have sent 3 messages in the last hour; wait 30m00s before sending more"
    ]
    assert bob.take() == []
    chat.clock.advance(30 * 60)
    ann.send("one more")
    assert bob.take() == ["Ann: one more"]


def test_private_messages_and_send_count_but_help_and_list_do_not() -> None:
    chat = Chat(messages_per_hour=3)
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    for _ in range(5):
        ann.send("/help")
        ann.send("/list")
    ann.send("/w Bob one")
    ann.send("/send two")
    ann.send("/send -u Bob -t 60 three")
    assert ann.send("/send -u Bob four")[0].startswith("! you have sent 3 messages")
    assert ann.send("/w Bob five")[0].startswith("! you have sent 3 messages")
    chat.clock.advance(60)
    assert bob.take() == [">> Ann: one", "Ann: two", ">> Ann: three"]


def test_a_refused_command_does_not_use_up_a_message() -> None:
    chat = Chat(messages_per_hour=1)
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    assert ann.send("/w Nobody hi")[0].startswith("! nobody called Nobody")
    assert ann.send("/send -t 0 hi")[0].startswith("! the delay is 1 to 86400 seconds")
    ann.send("hi")
    assert bob.take() == ["Ann: hi"]


def test_the_limit_holds_across_two_devices_of_one_account() -> None:
    chat = Chat(messages_per_hour=2)
    phone, laptop = chat.device("Ann"), chat.device("Ann", "10.0.0.7")
    bob = chat.join("10.0.0.2", name="Bob")
    phone.send("from the phone")
    laptop.send("from the laptop")
    assert laptop.send("again")[0].startswith("! you have sent 2 messages in the last hour")
    assert phone.send("again")[0].startswith("! you have sent 2 messages in the last hour")
    chat.room.disconnect(phone.session)
    chat.room.disconnect(laptop.session)
    assert chat.device("Ann").send("back")[0].startswith("! you have sent 2 messages")
    assert [line for line in bob.take() if line.startswith("Ann:")] == [
        "Ann: from the phone",
        "Ann: from the laptop",
    ]


def test_a_guests_limit_follows_its_address_not_its_connection() -> None:
    chat = Chat(messages_per_hour=1)
    first, second = chat.join(), chat.join()
    elsewhere = chat.join("10.0.0.3")
    bob = chat.join("10.0.0.2", name="Bob")
    first.send("one")
    assert second.send("two")[-1].startswith("! you have sent 1 messages in the last hour")
    again = chat.reconnect(first)
    assert again.send("three")[-1].startswith("! you have sent 1 messages")
    elsewhere.send("four")
    said = [line.split(": ")[1] for line in bob.take() if not line.startswith("* ")]
    assert said == ["one", "four"]


def test_zero_messages_per_hour_switches_the_limit_off() -> None:
    chat = Chat(messages_per_hour=0, lines_per_second=0)
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    for n in range(100):
        ann.send(f"m{n}")
    assert len(bob.take()) == 100
    assert "* messages: no limit" in ann.send("/status")


# -- reports and mutes ---------------------------------------------------------------------


def muted_by_three(chat: Chat, target: Door) -> list[Door]:
    reporters = [chat.join(f"10.0.1.{n}", name=f"R{n}") for n in range(3)]
    for r in reporters:
        r.send(f"/report {target.session.user.name}")
    return reporters


def test_reports_from_three_users_mute_for_the_configured_time() -> None:
    chat = Chat(reports_to_mute=3, mute_seconds=600)
    troll = chat.join("10.0.0.9", name="Troll")
    r0, r1, r2 = (chat.join(f"10.0.1.{n}", name=f"R{n}") for n in range(3))
    assert r0.send("/report Troll") == ["* you reported Troll"]
    assert r1.send("/ban Troll") == ["* you reported Troll"]
    troll.send("still talking")
    assert r0.take() == ["Troll: still talking"]
    r2.send("/report Troll")
    assert r0.take() == ["* Troll was muted for 10m00s after complaints"]
    assert troll.take() == ["* Troll was muted for 10m00s after complaints"]
    chat.clock.advance(60)
    assert troll.send("hello?") == [
        "! you are muted for 9m00s more; nobody sees what you send until then"
    ]
    assert troll.send("/w R0 hello?")[0].startswith("! you are muted for 9m00s")
    assert troll.send("/send -t 5 hello?")[0].startswith("! you are muted for 9m00s")
    chat.clock.advance(540)
    troll.send("I am back")
    assert r0.take() == ["Troll: I am back"]


def test_the_same_reporter_counts_once_even_from_a_new_guest_connection() -> None:
    chat = Chat(reports_to_mute=2)
    troll = chat.join("10.0.0.9", name="Troll")
    reporter = chat.join(name="Ann")
    reporter.send("/report Troll")
    assert reporter.send("/report Troll") == ["! you have reported Troll already; it counts once"]
    again = chat.reconnect(reporter)
    assert again.send("/report Troll") == ["! you have reported Troll already; it counts once"]
    troll.take()
    troll.send("not muted")
    assert again.take() == ["Troll: not muted"]


def test_nobody_reports_themselves_or_someone_absent() -> None:
    chat = Chat()
    ann = chat.join(name="Ann")
    assert ann.send("/report Ann") == ["! you cannot report yourself"]
    assert ann.send("/report Zed") == ["! nobody called Zed is online; /list shows who is"]
    assert ann.send("/report") == ["! usage: /report <name>"]


def test_a_muted_guest_is_still_muted_after_reconnecting_under_a_new_name() -> None:
    chat = Chat(reports_to_mute=3, mute_seconds=600)
    troll = chat.join("10.0.0.9", name="Troll")
    r0, *_ = muted_by_three(chat, troll)
    again = chat.reconnect(troll)
    assert again.send("new me")[0].startswith("! you are muted for 10m00s more")
    assert "* muted: 10m00s more" in again.send("/status")
    other = chat.join("10.0.0.10")
    r0.take()
    other.send("a different address")
    assert r0.take() == [f"{other.session.user.name}: a different address"]


def test_an_account_mute_holds_on_every_device_and_after_reconnecting() -> None:
    chat = Chat(reports_to_mute=3, mute_seconds=600)
    phone = chat.device("Troll", "10.0.0.9")
    laptop = chat.device("Troll", "10.0.0.8")
    muted_by_three(chat, phone)
    assert laptop.send("from the laptop")[0].startswith("! you are muted")
    chat.room.disconnect(phone.session)
    chat.room.disconnect(laptop.session)
    back = chat.device("Troll", "10.0.0.7")
    assert back.send("back")[0].startswith("! you are muted")
    # Others behind the same address (a NAT, a proxy, localhost) are not muted with it.
    assert chat.join("10.0.0.9").send("as a guest") == []


def test_reports_can_be_switched_off() -> None:
    chat = Chat(reports_to_mute=0)
    ann = chat.join(name="Ann")
    chat.join("10.0.0.2", name="Bob")
    assert ann.send("/report Bob") == ["! reports are switched off on this server"]


# -- /send, /cancel, /scheduled --------------------------------------------------------------


def test_send_now_to_everyone_or_to_one_user() -> None:
    chat = Chat()
    ann, bob, cy = (chat.join(f"10.0.0.{i}", name=n) for i, n in enumerate(("Ann", "Bob", "Cy")))
    bob.take(), cy.take()
    ann.send("/send hello all")
    assert bob.take() == ["Ann: hello all"]
    assert ann.send("/send -u Bob psst") == ["* to Bob: psst"]
    assert bob.take() == [">> Ann: psst"]
    assert cy.take() == ["Ann: hello all"]


def test_send_later_arrives_after_the_delay() -> None:
    chat = Chat()
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    assert ann.send("/send -t 90 see you  later") == [
        "* message #1 will go to everyone in 1m30s; /cancel cancels it"
    ]
    chat.clock.advance(89)
    assert bob.take() == []
    chat.clock.advance(1)
    assert bob.take() == ["Ann: see you  later"]
    assert ann.take() == ["* your scheduled message #1 was sent"]


def test_send_later_to_one_user_with_long_options() -> None:
    chat = Chat()
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    cy = chat.join("10.0.0.3", name="Cy")
    bob.take()
    assert ann.send("/send --username=bob --time 30 -- -t-like text") == [
        "* message #1 will go to Bob in 30s; /cancel cancels it"
    ]
    chat.clock.advance(30)
    assert bob.take() == [">> Ann: -t-like text"]
    assert cy.take() == []


def test_cancel_cancels_the_last_scheduled_message() -> None:
    chat = Chat()
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    ann.send("/send -t 60 first")
    ann.send("/send -t 120 second")
    ann.send("/send -t 30 third")
    assert ann.send("/cancel") == ["* cancelled #3 in 30s to everyone: third"]
    assert ann.send("/cancel 1") == ["* cancelled #1 in 1m00s to everyone: first"]
    chat.clock.advance(200)
    assert bob.take() == ["Ann: second"]
    assert ann.send("/cancel") == ["! you have no scheduled messages"]


def test_scheduled_lists_yours_on_every_device_of_an_account() -> None:
    chat = Chat()
    phone, laptop = chat.device("Ann"), chat.device("Ann", "10.0.0.7")
    chat.join("10.0.0.2", name="Bob")
    phone.send("/send -t 60 one")
    phone.send("/send -u Bob -t 3600 two")
    assert laptop.send("/scheduled") == [
        "* your scheduled messages:",
        "*   #1 in 1m00s to everyone: one",
        "*   #2 in 1h00m to Bob: two",
    ]
    assert laptop.send("/cancel") == ["* cancelled #2 in 1h00m to Bob: two"]
    assert chat.join().send("/scheduled") == [
        "* you have no scheduled messages; /send -t SECONDS text schedules one"
    ]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            "/send",
            "! nothing to send; usage: /send [-u|--username NAME] [-t|--time SECONDS] <text>",
        ),
        ("/send -t 5", "! nothing to send; usage:"),
        ("/send -t", "! -t needs a value; usage:"),
        ("/send -x 5 hi", "! unknown option -x (put -- before a text that starts with -)"),
        ("/send -t soon hi", "! -t takes a whole number of seconds, 1 to 86400; usage:"),
        ("/send -t 0 hi", "! the delay is 1 to 86400 seconds"),
        ("/send -t 86401 hi", "! the delay is 1 to 86400 seconds"),
        ("/send -u Zed hi", "! nobody called Zed is online; /list shows who is"),
        ("/send -u Ann hi", "! you cannot send a private message to yourself"),
        ("/cancel soon", "! give the number /scheduled shows, or nothing for the last one; usage:"),
        ("/cancel 7", "! you have no scheduled messages"),
    ],
)
def test_bad_sends_are_explained(line: str, error: str) -> None:
    ann = Chat().join(name="Ann")
    answer = ann.send(line)
    assert len(answer) == 1 and answer[0].startswith(error)


def test_pending_messages_are_bounded() -> None:
    chat = Chat(messages_per_hour=0)
    ann = chat.join(name="Ann")
    for n in range(10):
        ann.send(f"/send -t 60 m{n}")
    assert ann.send("/send -t 60 one too many") == [
        "! you already have 10 scheduled messages; /scheduled lists them, /cancel cancels the last"
    ]


def test_a_guest_who_left_sends_nothing_later() -> None:
    chat = Chat()
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    ann.send("/send -t 60 ghost")
    chat.room.disconnect(ann.session)
    chat.clock.advance(0)  # the reactor turn ends: the leave is announced
    bob.take()
    chat.clock.advance(60)
    assert bob.take() == []


def test_an_account_sends_later_from_whichever_device_is_online() -> None:
    chat = Chat()
    phone = chat.device("Ann")
    bob = chat.join("10.0.0.2", name="Bob")
    phone.send("/send -t 60 still here")
    laptop = chat.device("Ann", "10.0.0.7")
    chat.room.disconnect(phone.session)
    bob.take()
    chat.clock.advance(60)
    assert bob.take() == ["Ann: still here"]
    assert laptop.take() == ["* your scheduled message #1 was sent"]


def test_an_accounts_scheduled_messages_survive_a_restart() -> None:
    chat = Chat()
    ann = chat.device("Ann")
    ann.send("/send -t 60 cancelled")
    ann.send("/send -t 120 see you after the restart")
    ann.send("/cancel 1")
    chat.join("10.0.0.2").send("/send -t 60 a guest's is not kept")
    chat.room.stopService()
    again = Chat(chat.store)
    again._tokens = chat._tokens
    ann = again.device("Ann")
    bob = again.join("10.0.0.2", name="Bob")
    assert ann.send("/scheduled") == [
        "* your scheduled messages:",
        "*   #2 in 2m00s to everyone: see you after the restart",
    ]
    assert ann.send("/send -t 60 numbering goes on")[0].startswith("* message #3 will go")
    again.clock.advance(120)
    assert bob.take() == ["Ann: numbering goes on", "Ann: see you after the restart"]


def test_a_scheduled_message_is_not_sent_while_muted_or_to_someone_gone() -> None:
    chat = Chat(reports_to_mute=3)
    troll = chat.join("10.0.0.9", name="Troll")
    bob = chat.join("10.0.0.2", name="Bob")
    troll.send("/send -t 60 later")
    troll.send("/send -u Bob -t 30 psst")
    chat.room.disconnect(bob.session)
    chat.clock.advance(30)
    assert troll.take()[-1] == (
        "! your scheduled message #2 was not sent: nobody called Bob is online; /list shows who is"
    )
    r0, *_ = muted_by_three(chat, troll)
    r0.take()
    chat.clock.advance(30)
    assert r0.take() == []
    assert troll.take()[-1] == "! your scheduled message #1 was not sent: you are muted"


def test_status_shows_your_own_standing() -> None:
    chat = Chat(messages_per_hour=2)
    ann = chat.join(name="Ann")
    assert "* messages left: 2 of 2 per hour" in ann.send("/status")
    ann.send("/send -t 60 later")
    ann.send("now")
    status = ann.send("/status")
    assert "* messages left: 0 of 2 per hour (next in 1h00m)" in status
    assert "* scheduled messages (1, /cancel cancels the last):" in status
    assert "*   #1 in 1m00s to everyone: later" in status


# -- flood control through the Room ----------------------------------------------------------


def test_a_flooding_connection_is_warned_then_disconnected() -> None:
    chat = Chat(lines_per_second=5, messages_per_hour=0)
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    answers = [ann.send(f"spam {n}") for n in range(12)]
    assert [a for a in answers if a] == [
        [
            "! you are sending more than 5 lines a second; that line was dropped. "
            "Slow down, or you will be disconnected"
        ],
        ["! disconnected for sending too many lines too fast"],
    ]
    assert ann.closed == "flooding"
    assert [line.split(": ")[1] for line in bob.take()] == [f"spam {n}" for n in range(5)]


def test_connections_over_the_cap_are_told_closed_and_ignored() -> None:
    chat = Chat(connections_per_address=2)
    chat.join(), chat.join()
    bob = chat.join("10.0.0.2", name="Bob")
    third = Door(chat.room, "10.0.0.1")
    session = chat.room.connect(third)
    assert third.take() == [
        "! too many connections from your address (at most 2 at once); close one and try again"
    ]
    assert third.closed is not None
    assert bob.take() == []  # nobody joined
    chat.room.receive(session, "sneaky")
    assert bob.take() == []
    chat.room.disconnect(session)
    assert chat.room.connect(Door(chat.room, "10.0.0.1")).user.name == ""  # no place was freed


def test_read_only_listeners_count_against_the_address_too() -> None:
    chat = Chat(connections_per_address=1)
    chat.join()
    listener = Door(chat.room, "10.0.0.1", "minechat-read")
    chat.room.listen(listener)
    assert listener.closed is not None
    assert listener not in chat.room.members.listeners


# -- nothing outlives its reason -------------------------------------------------------------


def test_a_guest_who_leaves_leaves_no_timers_behind() -> None:
    chat = Chat(messages_per_hour=0)
    armed = len(chat.clock.getDelayedCalls())
    ann = chat.join(name="Ann")
    for n in range(10):
        ann.send(f"/send -t 86400 m{n}")
    chat.room.disconnect(ann.session)
    chat.clock.advance(0)  # the member list update
    assert len(chat.clock.getDelayedCalls()) == armed


@pytest.mark.parametrize("online_elsewhere", [False, True])
def test_a_guest_who_logs_in_is_told_its_scheduled_messages_were_cancelled(
    online_elsewhere: bool,
) -> None:
    chat = Chat()
    if online_elsewhere:
        chat.device("Ann", "10.0.0.7")
    else:
        chat.room.disconnect(chat.device("Ann").session)
    bob = chat.join("10.0.0.2", name="Bob")
    guest = chat.join()
    guest.send("/send -t 60 one")
    guest.send("/send -u Bob -t 90 two")
    chat.room.login_with_token(guest.session, chat._tokens["Ann"])
    assert "* your scheduled messages as a guest (#1, #2) were cancelled; schedule them again" in (
        guest.take()
    )
    assert guest.send("/cancel") == ["! you have no scheduled messages"]
    bob.take()
    chat.clock.advance(90)
    assert bob.take() == []


def test_reports_older_than_a_mute_no_longer_count() -> None:
    chat = Chat(reports_to_mute=3, mute_seconds=600)
    troll = chat.join("10.0.0.9", name="Troll")
    r0, r1, r2 = (chat.join(f"10.0.1.{n}", name=f"R{n}") for n in range(3))
    r0.send("/report Troll")
    chat.clock.advance(601)
    r1.send("/report Troll")
    assert r2.send("/report Troll") == ["* you reported Troll"]
    assert troll.send("still here") == []
    assert r0.send("/report Troll") == ["* Troll was muted for 10m00s after complaints"]


def test_mutes_and_reports_of_people_who_never_came_back_are_forgotten() -> None:
    chat = Chat(reports_to_mute=3, mute_seconds=600)
    troll, other = chat.join("10.0.0.9", name="Troll"), chat.join("10.0.0.8", name="Other")
    muted_by_three(chat, troll)
    chat.join("10.0.1.9").send("/report Other")
    chat.room.disconnect(troll.session)
    chat.room.disconnect(other.session)
    chat.clock.pump([60] * 11)
    assert chat.room.moderation._muted == {}
    assert chat.room.moderation._reports == {}


@pytest.mark.parametrize("line", ["hi", "/w Bob hi", "/send hi", "/send -t 60 hi"])
def test_with_login_required_a_guest_is_always_asked_to_log_in(line: str) -> None:
    chat = Chat(messages_per_hour=1, login_required=True)
    chat.device("Bob", "10.0.0.2")
    guest = chat.join()
    for _ in range(3):
        assert guest.send(line) == [f"! {LOGIN_FIRST}"]


def test_a_counted_command_that_fails_later_gives_the_message_back() -> None:
    chat = Chat(messages_per_hour=1)
    later: defer.Deferred[None] = defer.Deferred()
    chat.room.commands.add(command("slow", counted=True)(lambda ctx, args: later))
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    ann.send("/slow")
    later.errback(CommandError("the far end said no"))
    assert ann.take() == ["! the far end said no"]
    ann.send("hi")
    assert bob.take() == ["Ann: hi"]
