"""Limits and mutes belong to the person: changing identity (login, logout, register, a new
minechat account, a reconnect) never sheds them (issue cases 4, 5, 6 and 8 of hardening)."""

from __future__ import annotations

from tests.test_moderation import Chat, Door, muted_by_three


def said(reader: Door) -> list[str]:
    """The chat lines (not notices) a reader got since the last look."""
    return [line for line in reader.take() if not line.startswith(("* ", "! "))]


def refused(door: Door, line: str) -> str:
    answer = door.send(line)
    assert answer and answer[-1].startswith("! "), f"{line!r} was not refused: {answer}"
    return answer[-1]


def test_logging_out_and_in_again_gives_no_fresh_allowance() -> None:
    chat = Chat(messages_per_hour=2)
    chat.device("Ann", "10.0.0.7")  # a second device stays logged in
    phone = chat.device("Ann")
    bob = chat.join("10.0.0.2", name="Bob")
    phone.send("one")
    phone.send("two")
    assert "wait" in refused(phone, "three")
    phone.send("/logout")
    assert "you have sent 2 messages" in refused(phone, "as a guest now")
    chat.room.login_with_token(phone.session, chat._tokens["Ann"])
    phone.send("/logout")
    assert "you have sent 2 messages" in refused(phone, "and again")
    assert said(bob) == ["Ann: one", "Ann: two"]


def test_registering_gives_no_fresh_allowance() -> None:
    chat = Chat(messages_per_hour=1)
    guest = chat.join()
    bob = chat.join("10.0.0.2", name="Bob")
    guest.send("one")
    chat.room.register_account(guest.session, "Newbie")
    assert "you have sent 1 messages" in refused(guest, "two")
    assert said(bob) == ["Guest1: one"]


def test_a_muted_guest_stays_muted_after_registering() -> None:
    chat = Chat(reports_to_mute=3)
    troll = chat.join("10.0.0.9", name="Troll")
    muted_by_three(chat, troll)
    chat.room.register_account(troll.session, "Fresh")  # as a new minechat account does
    assert refused(troll, "hello again").startswith("! you are muted")


def test_a_muted_account_stays_muted_after_logging_out() -> None:
    chat = Chat(reports_to_mute=3)
    troll = chat.device("Troll", "10.0.0.9")
    muted_by_three(chat, troll)
    troll.send("/logout")
    assert refused(troll, "as a guest").startswith("! you are muted")
    again = chat.reconnect(troll)  # a guest's standing follows its address
    assert refused(again, "and now?").startswith("! you are muted")


def test_a_muted_guest_cannot_rename_and_renames_are_limited() -> None:
    chat = Chat(reports_to_mute=3, renames_per_hour=4)
    troll = chat.join("10.0.0.9", name="Troll")  # one rename
    bob = chat.join("10.0.0.2", name="Bob")
    for n in range(3):
        troll.send(f"/nick T{n}")
    assert refused(troll, "/nick T9") == (
        "! you have changed your name 4 times in the last hour; wait 1h00m before changing it again"
    )
    assert [line for line in bob.take() if "known as" in line] == [
        "* Troll is now known as T0",
        "* T0 is now known as T1",
        "* T1 is now known as T2",
    ]
    chat.clock.advance(3600)
    muted_by_three(chat, troll)
    assert refused(troll, "/nick Quiet").startswith("! you are muted")
    assert not any("Quiet" in line for line in bob.take())


def test_reporters_on_one_address_count_once_whatever_accounts_they_use() -> None:
    chat = Chat(reports_to_mute=3)
    victim = chat.join("10.0.0.5", name="Victim")
    sock_puppets = [chat.device(f"Puppet{n}", "10.0.0.66") for n in range(3)]
    answers = [p.send("/report Victim")[-1] for p in sock_puppets]
    assert answers[0] == "* you reported Victim"
    assert answers[1:] == ["! you have reported Victim already; it counts once"] * 2
    assert victim.send("still talking") == []


def test_a_scheduled_message_that_fell_due_while_down_goes_out_late_at_start_up() -> None:
    chat = Chat()
    ann = chat.device("Ann")
    ann.send("/send -t 60 after the restart")
    chat.room.stopService()
    again = Chat(chat.store, start=chat.clock.seconds() + 3600)  # back an hour later
    reader = Door(again.room, "10.0.0.2")
    reader.session = again.room.connect(reader)  # before the reactor's first turn ends
    again.clock.advance(0)
    late = [line for line in reader.take() if "after the restart" in line]
    assert len(late) == 1
    assert late[0].startswith("[") and late[0].endswith("] Ann: after the restart")


def test_a_connections_lines_take_effect_in_the_order_typed() -> None:
    """A line typed while a command of the same connection is still running waits for it
    (cluster-faults case 3: /login typed before /register finished after it)."""
    from twisted.internet import defer

    from chatd.commands import command

    chat = Chat()
    slow: defer.Deferred[None] = defer.Deferred()
    chat.room.commands.add(command("slow")(lambda ctx, args: slow))
    ann, bob = chat.join(name="Ann"), chat.join("10.0.0.2", name="Bob")
    ann.send("/slow")
    ann.send("/nick Annie")
    ann.send("after the slow one")
    assert said(bob) == []
    slow.callback(None)
    assert bob.take()[-2:] == ["* Ann is now known as Annie", "Annie: after the slow one"]
