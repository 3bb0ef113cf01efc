"""The rooms kept in the store hold from the first connection on, and across an outage of
the database: nobody gets into a kept room its rules keep out while the server starts, a
server whose database is down at start-up still starts (and says what it could not read),
and what an outage kept from the database is written once it answers again."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from chatd.config import Config
from chatd.conversation import Conversation
from chatd.service import ChatService, build
from chatd.store import queries
from chatd.store.postgres import PostgresStore
from chatd.store.sqlite import SQLiteStore
from tests.support import OFF, TIMEOUT, LineClient, line_client, pause

INVITE_ONLY = r"^! #secret is invite-only; ask its owner to /invite you$"


def secret() -> str:
    """The kept state of #secret: Ann's, invite-only, nobody invited."""
    room = Conversation("#secret", owner="ann")
    room.invite_only = True
    return room.state()


async def keep(store: Any, state: str) -> None:
    store.start()
    await store.save_room("#secret", state)
    await store.close()


def line_door(data_dir: Any, **settings: Any) -> Config:
    door = {**OFF, "line": "tcp:0:interface=127.0.0.1"}
    return Config(**door, data_dir=str(data_dir), **settings)


def line_port(service: ChatService) -> int:
    return service.getServiceNamed("line").port.getHost().port


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(int(TIMEOUT / 0.05)):
        if condition():
            return
        await pause(0.05)
    raise AssertionError("timed out")


@pytest_twisted.ensureDeferred
async def test_a_guest_connecting_while_the_server_starts_cannot_get_into_an_invite_only_room(
    tmp_path,
):
    await keep(SQLiteStore.open(tmp_path / "chatd.sqlite3", reactor), secret())
    service = build(line_door(tmp_path), reactor)
    store = service.room.store
    reading: defer.Deferred[None] = defer.Deferred()
    read = store.rooms
    store.rooms = lambda: reading.addCallback(lambda _: read())  # a slow database at start
    started = defer.maybeDeferred(service.startService)
    try:
        guest = LineClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", line_port(service))
        await endpoint.connect(Factory.forProtocol(lambda: guest))
        guest.send("/join #secret")  # at once, while the kept rooms are being read
        await pause(0.2)
        reading.callback(None)
        await started
        await guest.expect(INVITE_ONLY)
        guest.close()
    finally:
        await defer.maybeDeferred(service.stopService)


@pytest_twisted.ensureDeferred
async def test_a_broken_sqlite_database_at_start_up_is_said_and_the_server_starts(tmp_path, log):
    service = build(line_door(tmp_path), reactor)

    def broken() -> defer.Deferred[list[str]]:
        return defer.fail(sqlite3.OperationalError("disk I/O error"))

    service.room.store.rooms = broken
    try:
        await defer.maybeDeferred(service.startService)
        guest = await line_client(line_port(service))  # greeted: the server is up
        (said,) = [t for t in log.texts() if "kept rooms could not be read" in t]
        assert "their owners, topics, kicks and invite-only rules do not hold" in said
        guest.close()
    finally:
        await defer.maybeDeferred(service.stopService)


@pytest_twisted.ensureDeferred
async def test_a_database_down_at_start_up_is_said_and_the_rooms_are_read_once_it_answers(
    tmp_path, outage, pg_url, log
):
    await keep(PostgresStore.open(pg_url, reactor), secret())
    proxy = outage(pg_url)
    service = build(line_door(tmp_path, storage_url=proxy.url, storage_timeout=1.0), reactor)
    proxy.cut()  # it went down just after the server opened it
    try:
        await defer.maybeDeferred(service.startService)
        first = await line_client(line_port(service))  # greeted: the server is up
        (said,) = [t for t in log.texts() if "kept rooms could not be read" in t]
        assert "they are read once the database answers" in said
        assert "unreachable" in said
        proxy.restore()  # nobody does anything: the server notices by itself
        kept = service.room.conversation
        await until(lambda: kept("#secret") is not None and kept("#secret").invite_only)
        late = await line_client(line_port(service))
        late.send("/join #secret")
        await late.expect(INVITE_ONLY)
        first.close()
        late.close()
    finally:
        await defer.maybeDeferred(service.stopService)


def kept_topic(pg_url: str) -> str | None:
    """The topic of #kept as the database has it (read as a restarted server would)."""
    with psycopg.connect(pg_url) as conn:
        states = [json.loads(raw) for raw in queries.rooms(conn)]
    return next((s["topic"] for s in states if s["name"] == "#kept"), None)


@pytest_twisted.ensureDeferred
async def test_a_topic_set_in_a_database_outage_is_kept_once_it_answers_again(
    serve, outage, pg_url
):
    proxy = outage(pg_url)
    server = await serve(doors=("line",), storage_url=proxy.url, storage_timeout=1.0)
    ann = await line_client(server.ports["line"])
    ann.send("/register Ann correct-horse-battery")
    await ann.expect(r"^\* you are Ann \(logged in\)$")
    ann.send("/join #kept")
    await ann.expect(r"^\* you joined #kept")
    await until(lambda: kept_topic(pg_url) == "")
    proxy.cut()
    ann.send("/topic plans")
    await ann.expect(r"^\* Ann set the topic: plans$")
    ann.send("/history")  # the store works in order: the topic was not saved either
    await ann.expect(r"^! /history could not be done: the database is not answering")
    proxy.restore()  # and nobody does anything more
    await until(lambda: kept_topic(pg_url) == "plans")
    ann.close()
