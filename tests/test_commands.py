"""The built-in commands, as a user sees them (no sockets: fake clients, a driven clock)."""

from __future__ import annotations

import pytest

from chatd.testing import make_room


@pytest.fixture
def chat():
    room = make_room()
    clock = room.clock
    alice, bob = room.guest(), room.guest("ws")
    alice.take(), bob.take()
    return room, clock, alice, bob


@pytest.mark.parametrize("typed", ["/help", "/rules", "/HELP", "/help /", "/help //"])
def test_help_lists_every_command_on_one_telnet_screen(chat, typed):
    room, _, alice, _ = chat
    room.receive(alice.session, typed)
    lines = alice.take()
    shown = "\n".join(lines)
    words = shown.split()
    for cmd in room.commands:
        assert f"/{cmd.name}" in words
    assert "//" in shown
    assert len(lines) <= 22 and max(len(line) for line in lines) <= 80


def test_help_explains_one_command_with_its_aliases(chat):
    room, _, alice, _ = chat
    room.receive(alice.session, "/help /w")
    assert alice.take() == [
        "* /whisper <name> <text>  (also /w, /private, /msg)",
        "*   a private message to one user",
        "*   for example: /w Ann see you at six",
    ]
    room.receive(alice.session, "/help nosuch")
    assert alice.take() == ["! there is no command /nosuch; /help lists them all"]


@pytest.mark.parametrize("typed", ["/list", "/users"])
def test_list_shows_who_is_online(chat, typed):
    room, _, alice, _ = chat
    room.receive(alice.session, typed)
    assert alice.take() == ["* online (2): Guest1, Guest2"]


@pytest.mark.parametrize("alias", ["whisper", "w", "private", "msg"])
def test_a_whisper_reaches_only_its_recipient(alias):
    room = make_room()
    alice, bob, carol = room.guest(), room.guest(), room.guest()
    for c in (alice, bob, carol):
        c.take()
    room.receive(alice.session, f"/{alias} guest2 meet me at  noon")
    assert bob.take() == [">> Guest1: meet me at  noon"]
    assert alice.take() == ["* to Guest2: meet me at  noon"]
    assert carol.take() == []


@pytest.mark.parametrize(
    "typed, error",
    [
        ("/w Nobody hi", "! nobody called Nobody is online; /list shows who is"),
        ("/w Guest1 hi", "! you cannot send a private message to yourself"),
        ("/w Guest2", "! usage: /whisper <name> <text>"),
        ("/w", "! usage: /whisper <name> <text>"),
        ("/w Guest2 \x1b[2J", "! usage: /whisper <name> <text>"),
    ],
)
def test_whisper_mistakes_are_explained(chat, typed, error):
    room, _, alice, bob = chat
    room.receive(alice.session, typed)
    assert alice.take() == [error]
    assert bob.take() == []


def test_rename_is_announced_and_the_new_name_is_used(chat):
    room, _, alice, bob = chat
    room.receive(alice.session, "/rename Alice")
    assert alice.take() == ["* you are Alice"]  # once: the others read the notice
    assert bob.take() == ["* Guest1 is now known as Alice"]
    room.receive(alice.session, "hi")
    assert bob.take() == ["Alice: hi"]
    room.receive(bob.session, "/w alice psst")
    assert alice.take() == [">> Guest2: psst"]
    room.receive(alice.session, "/rename ALICE")  # a change of case is allowed
    assert room.online() == ["ALICE", "Guest2"]


@pytest.mark.parametrize(
    "typed, error",
    [
        ("/rename", "! usage: /rename <new_name>"),
        ("/rename two words", "! a name has no spaces; usage: /rename <new_name>"),
        ("/rename guest2", "! the name guest2 is taken; pick another"),
        ("/rename x", "! a name has 2 to 24 characters"),
        ("/rename " + "x" * 25, "! a name has 2 to 24 characters"),
        (
            "/rename bad!name",
            "! a name has letters, digits, '.', '-' or '_', and starts with a letter or digit",
        ),
        (
            "/rename -dash",
            "! a name has letters, digits, '.', '-' or '_', and starts with a letter or digit",
        ),
    ],
)
def test_rename_rules_are_explained(chat, typed, error):
    room, _, alice, bob = chat
    room.receive(alice.session, typed)
    assert alice.take() == [error]
    assert bob.take() == []
    assert alice.session.user.name == "Guest1"


def test_escape_sequences_never_end_up_in_a_name(chat):
    room, _, alice, bob = chat
    room.receive(alice.session, "/rename Ev\x1b]0;pwned\x07il\x07")
    assert bob.take() == ["* Guest1 is now known as Evil"]


@pytest.mark.parametrize("typed", ["/exit", "/quit"])
def test_exit_says_goodbye_and_closes(chat, typed):
    room, _, alice, _ = chat
    room.receive(alice.session, typed)
    assert alice.take() == ["* Goodbye, Guest1!"]
    assert alice.closed == "said goodbye"


def test_status_gives_chat_wide_and_personal_facts(chat):
    room, clock, alice, bob = chat
    room.receive(bob.session, "one")
    room.receive(alice.session, "two")
    clock.advance(125)
    alice.take()
    room.receive(alice.session, "/status")
    assert alice.take()[:3] == [
        "* chat: 2 online, 2 connections, 2 messages in 2m05s of uptime",
        "* you: Guest1, guest, here for 2m05s",
        "* your sessions (1): telnet from 10.0.0.1 for 2m05s (this one)",
    ]


def test_every_executed_command_is_in_the_audit_file(tmp_path):
    from chatd.audit import AuditLog

    room = make_room()
    room.audit = AuditLog(tmp_path / "chat_log.txt")
    room.audit.open()
    alice, _ = room.guest(), room.guest()
    room.receive(alice.session, "/w Guest2 secret plans")
    room.receive(alice.session, "/list")
    room.receive(alice.session, "just talking")
    room.receive(alice.session, "/nosuch")
    room.audit.close()
    assert (tmp_path / "chat_log.txt").read_text().splitlines() == [
        "2023-11-14T22:13:20Z Guest1 line 10.0.0.1 /whisper Guest2 secret plans",
        "2023-11-14T22:13:20Z Guest1 line 10.0.0.1 /list",
    ]


def test_an_async_command_runs_and_its_late_failure_is_explained():
    from twisted.internet import task

    from chatd.commands import UsageError, command

    room = make_room()

    clock = room.clock

    @command("later", usage="<seconds>")
    async def later(ctx, args):
        await task.deferLater(clock, float(args or 0), lambda: None)
        if not args:
            raise UsageError("say how long")
        ctx.reply(f"{args} seconds later")

    room.commands.add(later)
    alice = room.guest()
    alice.take()
    room.receive(alice.session, "/later 5")
    room.receive(alice.session, "/later")  # waits for the first: lines act in typed order
    clock.advance(0)
    assert alice.take() == []
    clock.advance(5)
    assert alice.take() == ["* 5 seconds later", "! say how long; usage: /later <seconds>"]


@pytest.mark.parametrize("typed", ["/list everyone", "/status please"])
def test_arguments_to_a_command_without_any_get_its_usage_line(chat, typed):
    room, _, alice, _ = chat
    room.receive(alice.session, typed)
    word, _, extra = typed[1:].partition(" ")
    assert alice.take() == [f"! nothing goes after the command, not '{extra}'; usage: /{word}"]
