"""A connection arriving with a saved login token: a reload or a reconnect of the page.

The token is checked before the connection joins, so the others hear of the account
once, under its own name, and not at all when it was here a moment ago.
"""

from __future__ import annotations

import pytest

from chatd.crowd import REJOIN_GRACE
from chatd.room import Room
from chatd.testing import FakeClient, make_room


@pytest.fixture
def room() -> Room:
    return make_room()


def arrive(room: Room, token: str | None) -> FakeClient:
    client = FakeClient("json")
    room.arrive(client, token).addCallback(lambda session: setattr(client, "session", session))
    room.clock.advance(0)
    assert client.session is not None
    return client


def account(room: Room, name: str = "Alice") -> str:
    """Make an account from a guest who then leaves for good; its token."""
    guest = room.guest()
    token = room.register(guest.session, name, "correct horse").result
    room.disconnect(guest.session)
    room.clock.advance(REJOIN_GRACE)
    return token


def test_a_saved_login_joins_once_under_its_own_name(room):
    token = account(room)
    watcher = room.guest()
    watcher.take()
    alice = arrive(room, token)
    assert alice.take()[:2] == [
        "* you are Alice (logged in)",
        "* Welcome back, Alice! 2 online.",
    ]
    assert watcher.take() == ["* Alice joined"]
    assert room.find("alice").account == "Alice"


def test_a_reload_is_not_heard_of(room):
    token = account(room)
    watcher = room.guest()
    alice = arrive(room, token)
    watcher.take()
    room.disconnect(alice.session)
    room.clock.advance(1)
    again = arrive(room, token)
    room.clock.advance(REJOIN_GRACE)
    assert watcher.take() == []
    assert room.online() == ["Alice", watcher.session.name]
    assert again.session in room.find("alice").sessions


def test_leaving_for_good_is_told_after_the_grace(room):
    token = account(room)
    watcher = room.guest()
    alice = arrive(room, token)
    watcher.take()
    room.disconnect(alice.session)
    room.clock.advance(0)
    assert watcher.take() == []
    assert room.online() == [watcher.session.name]  # gone from the list at once
    room.clock.advance(REJOIN_GRACE)
    assert watcher.take() == ["* Alice left"]


def test_a_second_device_joins_the_same_user_quietly(room):
    token = account(room)
    watcher = room.guest()
    first = arrive(room, token)
    watcher.take()
    second = arrive(room, token)
    assert watcher.take() == []
    assert room.find("alice").sessions == [first.session, second.session]


def test_an_unknown_token_joins_as_a_guest_told_why(room):
    account(room)
    watcher = room.guest()
    watcher.take()
    stranger = arrive(room, "not-a-token")
    seen = stranger.take()
    assert seen[0].startswith("* you are Guest")
    assert "! your saved login is no longer valid; log in again" in seen
    assert watcher.take() == [f"* {stranger.session.name} joined"]


def test_no_token_is_an_ordinary_guest(room):
    guest = arrive(room, None)
    assert guest.take()[0] == f"* you are {guest.session.name}"
    assert guest.session.user.account is None
