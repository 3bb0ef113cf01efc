"""History: /history, catching up on login, whispers kept for later, expiry, resuming."""

from __future__ import annotations

import functools

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThreadPool

from chatd.commands import discover
from chatd.config import Config
from chatd.events import History
from chatd.room import Room
from chatd.store.sqlite import SQLiteStore
from tests.support import line_client
from tests.test_accounts import Device, registered


@pytest_twisted.async_yield_fixture
async def srv(serve):
    yield await serve(doors=("line",), messages_per_hour=0, lines_per_second=0)


@pytest_twisted.async_yield_fixture
async def timed(tmp_path):
    """A Room on a driven clock (the store still works in its real thread)."""
    clock = task.Clock()
    clock.advance(1_000_000)
    store = SQLiteStore.open(tmp_path / "chatd.sqlite3", reactor)
    in_thread = functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())
    config = Config(data_dir=str(tmp_path), messages_per_hour=0, lines_per_second=0)
    room = Room(config, clock, discover(), store, in_thread)
    room.startService()
    yield room, clock
    await room.stopService()


async def said(room, session, *texts):
    """Say C{texts} and wait until they are saved and delivered."""
    for text in texts:
        room.say(session, text)
    await room.store.cache_get("flush")  # queued after the messages, so fires after them


@pytest_twisted.ensureDeferred
async def test_history_shows_the_last_messages_with_their_times(srv):
    ann = await line_client(srv.ports["line"])
    bob = await line_client(srv.ports["line"])
    for i in range(1, 26):
        ann.send(f"line {i}")
    await bob.expect(r": line 25$")
    bob.send("/history 3")
    await bob.expect(r"^\* history \(3\):$")
    for i in (23, 24, 25):
        await bob.expect(rf"^\[\d\d:\d\d:\d\d\] \w+: line {i}$")
    bob.send("/history")
    await bob.expect(r"^\* history \(20\):$")
    bob.send("/history lots")
    await bob.expect(r"^! n is a whole number from 1 to 500; usage: /history \[n\]$")


@pytest_twisted.ensureDeferred
async def test_everyone_gets_messages_in_id_order(srv):
    room = srv.room
    got = Device()
    room.connect(got)
    speakers = [room.connect(Device()) for _ in range(3)]
    for i in range(300):
        room.say(speakers[i % 3], f"m{i}")
    await room.store.cache_get("after the messages")
    ids = [e.id for e in got.events if e.kind == "message"]
    assert len(ids) == 300 and ids == sorted(ids)
    assert [m.id for m in await room.history_after(ids[-3], 10)] == ids[-2:]


@pytest_twisted.ensureDeferred
async def test_an_account_catches_up_on_what_it_missed(srv):
    alice, _ = await registered(srv)
    alice.close()
    await alice.closed
    bob = await line_client(srv.ports["line"])
    for i in range(1, 4):
        bob.send(f"while you were out {i}")
    bob.send("/history 1")
    await bob.expect(r"^\[.*while you were out 3$")
    back = await line_client(srv.ports["line"])
    back.send("/login Alice correct horse")
    await back.expect(r"^\* missed while you were away \(3\):$")
    await back.expect(r"^\[\d\d:\d\d:\d\d\] \w+: while you were out 3$")


@pytest_twisted.ensureDeferred
async def test_a_whisper_to_an_offline_account_waits_for_its_login(srv):
    alice, _ = await registered(srv)
    alice.close()
    await alice.closed
    bob = await line_client(srv.ports["line"])
    bob.send("/w alice see you tomorrow")
    await bob.expect(r"^\* Alice is offline and will get it when they log in$")
    bob.send("/w nobody hello")
    await bob.expect(r"^! nobody called nobody is online")
    back = await line_client(srv.ports["line"])
    back.send("/login Alice correct horse")
    await back.expect(r"^\* private messages while away \(1\):$")
    await back.expect(r"^\[\d\d:\d\d:\d\d\] >> \w+: see you tomorrow$")
    back.close()
    await back.closed
    again = await line_client(srv.ports["line"])
    again.send("/login Alice correct horse")
    await again.expect(r"^\* you are Alice")
    again.send("/status")
    await again.expect(r"^\* your sessions")
    assert not any("see you tomorrow" in line for line in again.lines)


@pytest_twisted.ensureDeferred
async def test_history_forgets_messages_older_than_the_ttl(timed):
    room, clock = timed
    device = Device()
    session = room.connect(device)
    await said(room, session, "old news")
    clock.advance(3000)
    await said(room, session, "fresh")
    assert [m.text for m in await room.history(20)] == ["old news", "fresh"]
    clock.advance(601)  # "old news" is now past the hour; the purge runs every minute
    assert [m.text for m in await room.history(20)] == ["fresh"]
    await room.store.cache_get("after the purge")
    assert [m.text for m in await room.store.messages(0, room.sequence.newest_shown, 0.0, 20)] == [
        "fresh"
    ]


@pytest_twisted.ensureDeferred
async def test_history_is_sent_as_a_history_event(timed):
    room, _ = timed
    device = Device()
    session = room.connect(device)
    await said(room, session, "one", "two")
    await room.receive(session, "/history 5")
    (event,) = [e for e in device.events if isinstance(e, History)]
    assert event.reason == "history" and [m.text for m in event.messages] == ["one", "two"]


@pytest_twisted.ensureDeferred
async def test_a_message_that_cannot_be_saved_is_not_sent(timed):
    room, _ = timed
    speaker, listener = Device(), Device()
    session = room.connect(speaker)
    room.connect(listener)
    room.store.add_message = lambda m: defer.fail(OSError("disk full"))
    room.say(session, "lost")
    assert speaker.events[-1].text.startswith("your message could not be saved, so nobody got it")
    assert not any(e.kind == "message" for e in listener.events)


@pytest_twisted.ensureDeferred
async def test_catching_up_sends_at_most_catch_up_messages(serve):
    server = await serve(doors=("line",), catch_up=2, lines_per_second=0)
    alice, _ = await registered(server)
    alice.close()
    await alice.closed
    bob = await line_client(server.ports["line"])
    for i in range(1, 6):
        bob.send(f"news {i}")
    bob.send("/history 1")
    await bob.expect(r"news 5$")
    back = await line_client(server.ports["line"])
    back.send("/login Alice correct horse")
    await back.expect(r"^\* missed while you were away \(2\):$")
    await back.expect(r"news 4$")
    await back.expect(r"news 5$")
