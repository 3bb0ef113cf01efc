"""A database outage as a user meets it: every store call a user can cause (history,
catch-up at login, resuming with a token, register, login, scheduling) answers with the
clear `!` error, and the log holds no traceback for it (the store logs the outage once)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from chatd.store import StoreUnavailable
from chatd.testing import FakeClient, MemoryStore, make_room
from tests.support import line_client

OUTAGE = "the database is not answering right now; try again in a moment"


class FlakyStore(MemoryStore):
    """A MemoryStore whose named calls fail as an outage does while C{down} holds them;
    L{back} ends the outage as the store says it (L{recovered})."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()
        self.waiting: list[defer.Deferred[None]] = []

    def recovered(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self.waiting.append(d) if self.down else d.callback(None)
        return d

    def back(self) -> None:
        self.down = set()
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name != "down" and name in super().__getattribute__("down"):

            def unavailable(*args: Any, **kwargs: Any) -> defer.Deferred[Any]:
                return defer.fail(StoreUnavailable("the database test is unreachable"))

            return unavailable
        return value


ALL = {
    "messages",
    "account",
    "create_account",
    "account_for_token",
    "add_token",
    "take_whispers",
    "save_scheduled",
    "set_last_seen",
    "remove_token",
    "set_password_hash",
}


@pytest.fixture
def tracebacks() -> Iterator[list[dict]]:
    """Log events that carry a traceback."""
    found: list[dict] = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            found.append(event)

    globalLogPublisher.addObserver(observe)
    yield found
    globalLogPublisher.removeObserver(observe)


def errors(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("! ")]


def test_history_in_an_outage_is_a_clear_error_without_a_traceback(tracebacks):
    store = FlakyStore()
    room = make_room(store=store)
    ann = room.join("Ann")
    store.down |= ALL
    assert errors(ann.send("/history")) == [f"! /history could not be done: {OUTAGE}"]
    assert tracebacks == []


def test_register_and_login_in_an_outage_are_clear_errors_without_tracebacks(tracebacks):
    store = FlakyStore()
    room = make_room(store=store)
    ann = room.join("Ann")
    ann.send("/register Ann correct-horse-battery")
    ann.send("/logout")
    ann.take()
    store.down |= ALL
    assert errors(ann.send("/login Ann correct-horse-battery")) == [
        f"! /login could not be done: {OUTAGE}"
    ]
    assert errors(ann.send("/register Bea correct-horse-battery")) == [
        f"! /register could not be done: {OUTAGE}"
    ]
    assert tracebacks == []


def test_catch_up_in_an_outage_tells_the_user_without_a_traceback(tracebacks):
    store = FlakyStore()
    room = make_room(store=store)
    ann = room.join("Ann")
    ann.send("/register Ann correct-horse-battery")
    ann.send("/logout")
    ann.take()
    store.down |= {"messages", "take_whispers"}  # the login works, reading the past does not
    lines = ann.send("/login Ann correct-horse-battery")
    assert "* you are Ann (logged in)" in lines
    assert errors(lines) == [f"! what you missed while away could not be read: {OUTAGE} (/history)"]
    assert tracebacks == []


def test_resuming_with_a_token_in_an_outage_is_a_clear_error_without_a_traceback(tracebacks):
    store = FlakyStore()
    room = make_room(store=store)
    ann = room.join("Ann")
    lines = ann.send("/register Ann correct-horse-battery")
    token = lines[-1].removeprefix("*").strip()
    store.down |= ALL
    device = FakeClient()
    device.room = room
    d = room.arrive(device, token)
    device.session = d.result
    assert errors(device.take()) == [f"! your login could not be checked ({OUTAGE}); log in again"]
    assert tracebacks == []


def test_scheduling_in_an_outage_says_the_message_was_not_saved(tracebacks):
    store = FlakyStore()
    room = make_room(store=store)
    ann = room.join("Ann")
    ann.send("/register Ann correct-horse-battery")
    ann.take()
    store.down |= ALL
    lines = ann.send("/send -t 300 see you")
    assert any(
        line.startswith("! scheduled message #1 could not be saved (the database is not")
        for line in lines
    ), lines
    assert tracebacks == []


@pytest_twisted.ensureDeferred
async def test_a_real_outage_is_one_log_line_and_one_when_it_ends_and_clear_to_users(
    serve,
    outage,
    log,
    pg_url,
    tracebacks,
):
    proxy = outage(pg_url)
    server = await serve(doors=("line",), storage_url=proxy.url)
    ann = await line_client(server.ports["line"])
    ann.send("/register Ann correct-horse-battery")
    await ann.expect(r"^\* you are Ann \(logged in\)$")
    ann.send("/logout")
    await ann.expect(r"^\* you are ")
    proxy.cut()
    for _ in range(3):
        ann.send("/history")
        await ann.expect(rf"^! /history could not be done: {OUTAGE}$")
    ann.send("/login Ann correct-horse-battery")
    await ann.expect(rf"^! /login could not be done: {OUTAGE}$")
    proxy.restore()
    ann.send("/history")
    await ann.expect(r"^\* history")
    store = [e for e in log.events if e.get("log_namespace") == "chatd.store"]
    assert len([e for e in store if e["log_level"].name == "error"]) == 1  # it started
    infos = [e["log_format"] for e in store if e["log_level"].name == "info"]
    assert len([f for f in infos if "answers again" in f]) == 1  # and it ended
    assert tracebacks == []


def test_rooms_in_an_outage_still_join_and_part_without_tracebacks(tracebacks):
    store = FlakyStore()
    room = make_room(store=store)
    ann = room.join("Ann")
    ann.send("/register Ann correct-horse-battery")
    ann.take()
    store.down |= ALL | {"claim_room", "save_room", "join_room", "part_room"}
    assert "* you joined #dev; what you type goes there" in ann.send("/join #dev")
    ann.send("/topic plans")
    assert "* you left #dev" in ann.send("/part #dev")
    assert tracebacks == []


def test_rooms_changed_in_an_outage_are_kept_once_the_database_answers_again(tracebacks):
    store = FlakyStore()
    room = make_room(store=store)
    ann = room.join("Ann")
    ann.send("/register Ann correct-horse-battery")
    ann.send("/join #kept")
    store.down |= {"claim_room", "save_room", "join_room", "part_room"}
    ann.send("/topic plans")
    ann.send("/join #new")
    ann.send("/part #kept")
    ann.send("/join #kept")  # the last word on #kept: in it
    ann.send("/part #new")
    store.back()
    kept = json.loads(store.room_states["#kept"])
    assert kept["owner"] == "Ann" and kept["topic"] == "plans"
    assert json.loads(store.room_states["#new"])["owner"] == "Ann"  # made, claimed late
    assert store.memberships["ann"] == {"#kept"}  # a restart brings back what Ann sees now
    assert tracebacks == []
