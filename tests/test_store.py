"""The stores: what they keep, in which order, and how they refuse a bad database.

The behaviour every backend shares runs against SQLite and against a real PostgreSQL
(a fresh schema per test; see tests/postgres.py).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from chatd.events import Message
from chatd.store import NameTaken, Scheduled, Store, StoreError, queries
from chatd.store.postgres import PostgresStore
from chatd.store.schema import MIGRATIONS, POSTGRES, SQLITE
from chatd.store.sqlite import SQLiteStore
from tests.postgres import Outage, admin_connection, drop_connections, pg_url  # noqa: F401
from tests.support import line_client


class Backend:
    """Opens the same database again and again, as restarts of a server would."""

    def __init__(self, open_) -> None:
        self._open = open_
        self.started: list[Store] = []

    def opened(self) -> Store:
        store = self._open()
        store.start()
        self.started.append(store)
        return store

    def reopened(self) -> int:
        """The last message id a restarted server would see."""
        store = self._open()
        store._release()
        return store.last_id


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Iterator[Backend]:
    if request.param == "sqlite":
        backend = Backend(lambda: SQLiteStore.open(tmp_path / "chatd.sqlite3", reactor))
    else:
        url = request.getfixturevalue("pg_url")
        backend = Backend(lambda: PostgresStore.open(url, reactor))
    yield backend
    for store in backend.started:  # a test that failed before close(): its worker thread
        store.stop_thread()  # would keep the test run from exiting


# -- every backend ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_messages_come_back_newest_n_oldest_first(backend):
    store = backend.opened()
    for i in range(1, 8):
        await store.add_message(Message(i, 100.0 + i, "Ann", f"m{i}"))
    last3 = await store.messages(0, 7, 0.0, 3)
    assert [(m.id, m.sender, m.text) for m in last3] == [
        (5, "Ann", "m5"),
        (6, "Ann", "m6"),
        (7, "Ann", "m7"),
    ]
    assert [m.id for m in await store.messages(2, 5, 0.0, 10)] == [3, 4, 5]
    assert [m.id for m in await store.messages(0, 7, 106.0, 10)] == [6, 7]
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_burst_is_saved_and_confirmed_in_id_order(backend):
    store = backend.opened()
    confirmed: list[int] = []
    burst = [store.add_message(Message(i, 1.0, "Ann", "x")) for i in range(1, 2001)]
    for d in burst:
        d.addCallback(lambda m: confirmed.append(m.id))
    await defer.gatherResults(burst)
    assert confirmed == list(range(1, 2001))
    await store.close()
    assert backend.reopened() == 2000


@pytest_twisted.ensureDeferred
async def test_closing_finishes_what_was_asked_and_stops_the_thread(backend):
    """A server that stops must not be kept from exiting by the database's thread, nor
    lose what was asked just before it stopped."""
    store = backend.opened()
    saved = [store.add_message(Message(i, 1.0, "Ann", "x")) for i in range(1, 51)]
    await store.close()
    assert all(d.called for d in saved)
    assert not [t for t in threading.enumerate() if "chatd-store" in t.name]
    with pytest.raises(StoreError):
        await store.add_message(Message(51, 1.0, "Ann", "late"))
    assert backend.reopened() == 50


@pytest_twisted.ensureDeferred
async def test_ids_never_go_back_after_everything_is_purged(backend):
    store = backend.opened()
    await store.add_message(Message(41, 10.0, "Ann", "old"))
    assert await store.purge_messages(20.0) == 1
    assert await store.messages(0, 100, 0.0, 10) == []
    await store.close()
    assert backend.reopened() == 41


@pytest_twisted.ensureDeferred
async def test_accounts_tokens_and_cache_survive_reopening(backend):
    store = backend.opened()
    await store.create_account("Alice", "hash", "tokenhash", 1.0, 0)
    await store.add_token("alice", "revoked", 2.0)
    await store.remove_token("revoked")  # /logout
    await store.set_last_seen("alice", 9)
    await store.set_last_seen("ALICE", 5)  # a device that was away longer: not moved back
    await store.cache_put("k", "v")
    await store.cache_put("k", "v2")
    with pytest.raises(NameTaken):
        await store.create_account("ALICE", None, "other", 2.0, 0)
    assert await store.read_account_names() == ["Alice"]
    await store.close()
    store = backend.opened()
    assert store.account_names == ["Alice"]
    account = await store.account_for_token("tokenhash")
    assert (account.name, account.password_hash, account.last_seen) == ("Alice", "hash", 9)
    assert await store.account("aLiCe") == account
    assert await store.account("Bob") is None
    assert await store.account_for_token("nope") is None
    assert await store.account_for_token("revoked") is None
    assert await store.cache_get("k") == "v2"
    assert await store.cache_get("missing") is None
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_taken_name_does_not_lose_what_was_saved_with_it(backend):
    """Calls queued together share a transaction; refusing the name fails that call alone."""
    store = backend.opened()
    first = store.create_account("Alice", None, "t1", 1.0, 0)  # runs while the next two queue
    taken = store.create_account("alice", None, "t2", 2.0, 0)
    saved = store.add_message(Message(1, 2.0, "Bob", "hi"))
    await first
    with pytest.raises(NameTaken):
        await taken
    await saved
    assert [m.text for m in await store.messages(0, 1, 0.0, 10)] == ["hi"]
    assert await store.account_for_token("t2") is None
    await store.close()


@pytest_twisted.ensureDeferred
async def test_whispers_are_kept_until_taken_once(backend):
    store = backend.opened()
    await store.keep_whisper("Bob", Message(3, 1.0, "Ann", "psst? 100%", "Bob"))
    kept = await store.take_whispers("bob")
    assert [(m.sender, m.to, m.text) for m in kept] == [("Ann", "Bob", "psst? 100%")]
    assert await store.take_whispers("Bob") == []
    await store.close()
    assert backend.reopened() == 3


@pytest_twisted.ensureDeferred
async def test_scheduled_messages_are_rows_kept_per_node_over_restarts(backend):
    store = backend.opened()
    await store.save_scheduled("a", 2, "Ann", 100.5, "later, 100%?", None)
    await store.save_scheduled("a", 1, "Bob", 50.0, "psst", "Ann")
    await store.save_scheduled("b", 1, "Cy", 10.0, "other node", None)
    await store.save_scheduled("a", 3, "Ann", 200.0, "cancelled", None)
    await store.drop_scheduled("a", 3)
    await store.drop_scheduled("a", 99)  # not kept: nothing happens
    await store.save_scheduled("a", 2, "Ann", 120.0, "later, edited", None)  # replaced
    await store.close()
    store = backend.opened()
    assert await store.scheduled("a") == [
        Scheduled(1, "Bob", 50.0, "psst", "Ann"),
        Scheduled(2, "Ann", 120.0, "later, edited", None),
    ]
    assert await store.scheduled("b") == [Scheduled(1, "Cy", 10.0, "other node", None)]
    assert await store.scheduled("") == []
    await store.close()


# -- SQLite -----------------------------------------------------------------------------------


def test_a_fresh_database_has_the_current_schema_version(tmp_path):
    SQLiteStore.open(tmp_path / "db", reactor)._conn.close()
    (version,) = sqlite3.connect(tmp_path / "db").execute("PRAGMA user_version").fetchone()
    assert version == 3


def test_scheduled_messages_kept_as_one_blob_become_rows(tmp_path):
    """A database from before the scheduled table: the JSON each node kept in the cache."""
    db = tmp_path / "db"
    conn = sqlite3.connect(db)
    for statement in MIGRATIONS[0]:
        conn.execute(statement.format(**SQLITE))
    blob = [{"id": 4, "account": "Ann", "due": 9.5, "text": "hi", "to": None}]
    conn.execute("INSERT INTO cache VALUES ('scheduled-messages', ?)", (json.dumps(blob),))
    blob = [{"id": 7, "account": "Bob", "due": 3.0, "text": "yo", "to": "Ann"}]
    conn.execute("INSERT INTO cache VALUES ('scheduled-messages:n2', ?)", (json.dumps(blob),))
    conn.execute("INSERT INTO cache VALUES ('rates', '{}')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SQLiteStore.open(db, reactor)
    conn = store._conn
    assert queries.scheduled(conn, "") == [Scheduled(4, "Ann", 9.5, "hi", None)]
    assert queries.scheduled(conn, "n2") == [Scheduled(7, "Bob", 3.0, "yo", "Ann")]
    assert [row[0] for row in conn.execute("SELECT key FROM cache")] == ["rates"]
    conn.close()


def test_a_database_from_a_newer_chatd_is_refused(tmp_path):
    sqlite3.connect(tmp_path / "db").execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(StoreError, match="schema version 99, newer than this chatd"):
        SQLiteStore.open(tmp_path / "db", reactor)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "db").write_bytes(b"this is not a database at all, " * 100)
    with pytest.raises(StoreError, match="is not a chatd database or is damaged"):
        SQLiteStore.open(tmp_path / "db", reactor)


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path):
    first = SQLiteStore.open(tmp_path / "db", reactor)
    with pytest.raises(StoreError, match="is locked: is another chatd using the data dir"):
        SQLiteStore.open(tmp_path / "db", reactor)
    first._conn.close()


# -- PostgreSQL -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_nodes_writing_at_once_get_unique_ids_in_order(pg_url):  # noqa: F811
    """Two nodes each number their messages 1, 2, 3...; the database makes the ids unique,
    each node's in the order it sent them, and a reader sees them in id order."""
    nodes = [PostgresStore.open(pg_url, reactor), PostgresStore.open(pg_url, reactor)]
    for node in nodes:
        node.start()
    sent = [
        [node.add_message(Message(i, 1.0, name, f"{name}{i}")) for i in range(1, 301)]
        for node, name in zip(nodes, ["Ann", "Bob"], strict=True)
    ]
    got = [[m.id for m in await defer.gatherResults(ds)] for ds in sent]
    for ids in got:
        assert ids == sorted(ids)
    assert sorted(got[0] + got[1]) == list(range(1, 601))
    history = await nodes[1].messages(0, 600, 0.0, 1000)
    assert [m.id for m in history] == list(range(1, 601))
    assert [m.text for m in history if m.sender == "Ann"] == [f"Ann{i}" for i in range(1, 301)]
    for node in nodes:
        await node.close()
    assert PostgresStore.open(pg_url, reactor).last_id == 600


@pytest_twisted.ensureDeferred
async def test_whisper_ids_come_from_the_counter_every_node_shares(pg_url):  # noqa: F811
    """Each node proposes the id after the last it knows; the database gives a whisper and
    another node's message different ids."""
    a, b = PostgresStore.open(pg_url, reactor), PostgresStore.open(pg_url, reactor)
    a.start()
    b.start()
    assert a.shared_ids
    whisper = await a.take_id(1)
    message = await b.add_message(Message(1, 1.0, "Bob", "hello"))
    kept = Message(1, 1.0, "Ann", "later", "Cy")
    await b.keep_whisper("Cy", kept)
    assert sorted([whisper, message.id, kept.id]) == [1, 2, 3]
    await a.close()
    await b.close()


def test_scheduled_messages_kept_as_one_blob_become_rows_on_postgres(pg_url):  # noqa: F811
    conn = psycopg_connect(pg_url)
    for statement in MIGRATIONS[0]:
        conn.execute(statement.format(**POSTGRES))
    conn.execute("INSERT INTO meta VALUES ('schema_version', 1), ('last_id', 0)")
    blob = [{"id": 4, "account": "Ann", "due": 9.5, "text": "hi, 100%?", "to": None}]
    conn.execute("INSERT INTO cache VALUES ('scheduled-messages:n1', %s)", (json.dumps(blob),))
    conn.close()
    store = PostgresStore.open(pg_url, reactor)
    try:
        assert queries.scheduled(store._conn, "n1") == [Scheduled(4, "Ann", 9.5, "hi, 100%?", None)]
        assert store._conn.execute("SELECT count(*) FROM cache").fetchone() == (0,)
    finally:
        store._release()


def test_a_postgres_schema_from_a_newer_chatd_is_refused(pg_url):  # noqa: F811
    PostgresStore.open(pg_url, reactor)._release()
    with psycopg_connect(pg_url) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99, newer than this chatd"):
        PostgresStore.open(pg_url, reactor)


def test_an_unreachable_postgres_stops_the_start_with_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"postgresql://postgres:secret@127.0.0.1:{port}/test"
    with pytest.raises(StoreError) as raised:
        PostgresStore.open(url, reactor)
    message = str(raised.value)
    assert f"postgresql://postgres@127.0.0.1:{port}/test is unreachable" in message
    assert "is PostgreSQL running?" in message
    assert "secret" not in message


@pytest_twisted.ensureDeferred
async def test_a_node_carries_on_after_postgres_drops_its_connections(pg_url):  # noqa: F811
    store = PostgresStore.open(pg_url, reactor)
    store.start()
    await store.add_message(Message(1, 1.0, "Ann", "before"))
    with admin_connection() as admin:
        drop_connections(admin, application_name(pg_url))
    await store.add_message(Message(2, 2.0, "Ann", "after"))
    assert [m.text for m in await store.messages(0, 2, 0.0, 10)] == ["before", "after"]
    await store.close()


@pytest_twisted.ensureDeferred
async def test_users_hear_when_postgres_is_down_and_chat_resumes_when_it_is_back(
    serve,
    pg_url,  # noqa: F811
):
    outage = Outage(pg_url)
    outage.restore()
    server = await serve(doors=("line",), storage_url=outage.url)
    try:
        alice = await line_client(server.ports["line"])
        bob = await line_client(server.ports["line"])
        alice_name = alice.lines[0].split()[-1]
        outage.cut()
        alice.send("anyone there?")
        await alice.expect(r"^! your message could not be saved, so nobody got it; try again$")
        assert not any("Traceback" in line or "psycopg" in line for line in alice.lines)
        outage.restore()
        alice.send("back again")
        await bob.expect(rf"^{alice_name}: back again$")
        assert not any("anyone there?" in line for line in bob.lines)
    finally:
        outage.cut()


def test_an_unknown_storage_url_stops_the_start_with_a_clear_error(tmp_path):
    from chatd.config import Config
    from chatd.store import open_store

    with pytest.raises(StoreError, match=r"storage_url mysql:\.\.\. is not supported"):
        open_store(Config(data_dir=str(tmp_path), storage_url="mysql://x@y/z"), reactor)


def application_name(url: str) -> str:
    return url.rpartition("application_name=")[2]


def psycopg_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


@pytest_twisted.ensureDeferred
async def test_history_memberships_and_rooms_are_kept_per_room(backend):
    store = backend.opened()
    await store.add_message(Message(1, 10.0, "Ann", "lobby"))
    await store.add_message(Message(2, 11.0, "Ann", "dev", room="#dev"))
    await store.add_message(Message(3, 12.0, "Bob", "ops", room="#ops"))
    dev = await store.messages(0, 10, 0.0, 10, ["#dev"])
    assert [(m.id, m.text, m.room) for m in dev] == [(2, "dev", "#dev")]
    both = await store.messages(0, 10, 0.0, 10, ["#lobby", "#ops"])
    assert [(m.text, m.room) for m in both] == [("lobby", "#lobby"), ("ops", "#ops")]
    assert [m.room for m in await store.messages(0, 10, 0.0, 10)] == ["#lobby", "#dev", "#ops"]
    assert await store.messages(0, 10, 0.0, 10, []) == []
    await store.create_account("Alice", "hash", "tokenhash", 1.0, 0)
    await store.join_room("alice", "#dev")
    await store.join_room("ALICE", "#ops")
    await store.join_room("Alice", "#ops")  # twice is once
    await store.part_room("Alice", "#dev")
    await store.save_room("#ops", '{"name": "#ops", "owner": "Alice"}')
    await store.save_room("#gone", '{"name": "#gone"}')
    await store.save_room("#gone", "")
    await store.close()
    store = backend.opened()
    assert (await store.account("alice")).rooms == ("#ops",)
    assert (await store.account_for_token("tokenhash")).rooms == ("#ops",)
    assert await store.rooms() == ['{"name": "#ops", "owner": "Alice"}']
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_new_room_is_kept_for_the_first_to_claim_it(backend):
    store = backend.opened()
    first = await store.claim_room("#x", '{"name": "#x", "owner": "Ann"}')
    second = await store.claim_room("#x", '{"name": "#x", "owner": "Bob"}')  # a moment later
    assert first == second == '{"name": "#x", "owner": "Ann"}'
    await store.close()
    store = backend.opened()
    assert await store.rooms() == ['{"name": "#x", "owner": "Ann"}']
    await store.close()


def test_messages_from_before_rooms_are_in_the_default_room(tmp_path):
    db = tmp_path / "db"
    conn = sqlite3.connect(db)
    for step in MIGRATIONS[:2]:
        for statement in step:
            if isinstance(statement, str):
                conn.execute(statement.format(**SQLITE))
    conn.execute("INSERT INTO messages (id, time, sender, text) VALUES (1, 5.0, 'Ann', 'old')")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = SQLiteStore.open(db, reactor)
    [old] = queries.messages(store._conn, 0, 10, 0.0, 10, ("#lobby",))
    assert (old.text, old.room) == ("old", "#lobby")
    store._conn.close()
