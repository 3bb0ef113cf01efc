"""The SQLite store: what it keeps, in which order, and how it refuses a bad database."""

from __future__ import annotations

import sqlite3

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from chatd.events import Message
from chatd.store import NameTaken, StoreError
from chatd.store.sqlite import SQLiteStore


def opened(tmp_path) -> SQLiteStore:
    store = SQLiteStore.open(tmp_path / "chatd.sqlite3", reactor)
    store.start()
    return store


def reopened(tmp_path) -> int:
    """The last message id a restarted server would see."""
    store = SQLiteStore.open(tmp_path / "chatd.sqlite3", reactor)
    store._conn.close()
    return store.last_id


@pytest_twisted.ensureDeferred
async def test_messages_come_back_newest_n_oldest_first(tmp_path):
    store = opened(tmp_path)
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
async def test_a_burst_is_saved_and_confirmed_in_id_order(tmp_path):
    store = opened(tmp_path)
    confirmed: list[int] = []
    burst = [store.add_message(Message(i, 1.0, "Ann", "x")) for i in range(1, 2001)]
    for d in burst:
        d.addCallback(lambda m: confirmed.append(m.id))
    await defer.gatherResults(burst)
    assert confirmed == list(range(1, 2001))
    await store.close()
    assert reopened(tmp_path) == 2000


@pytest_twisted.ensureDeferred
async def test_ids_never_go_back_after_everything_is_purged(tmp_path):
    store = opened(tmp_path)
    await store.add_message(Message(41, 10.0, "Ann", "old"))
    assert await store.purge_messages(20.0) == 1
    assert await store.messages(0, 100, 0.0, 10) == []
    await store.close()
    assert reopened(tmp_path) == 41


@pytest_twisted.ensureDeferred
async def test_accounts_tokens_and_cache_survive_reopening(tmp_path):
    store = opened(tmp_path)
    await store.create_account("Alice", "hash", "tokenhash", 1.0, 0)
    await store.set_last_seen("alice", 9)
    await store.cache_put("k", "v")
    with pytest.raises(NameTaken):
        await store.create_account("ALICE", None, "other", 2.0, 0)
    await store.close()
    store = opened(tmp_path)
    assert store.account_names == ["Alice"]
    account = await store.account_for_token("tokenhash")
    assert (account.name, account.password_hash, account.last_seen) == ("Alice", "hash", 9)
    assert await store.account_for_token("nope") is None
    assert await store.cache_get("k") == "v"
    assert await store.cache_get("missing") is None
    await store.close()


@pytest_twisted.ensureDeferred
async def test_whispers_are_kept_until_taken_once(tmp_path):
    store = opened(tmp_path)
    await store.keep_whisper("Bob", Message(3, 1.0, "Ann", "psst", "Bob"))
    kept = await store.take_whispers("bob")
    assert [(m.sender, m.to, m.text) for m in kept] == [("Ann", "Bob", "psst")]
    assert await store.take_whispers("Bob") == []
    await store.close()
    assert reopened(tmp_path) == 3


def test_a_fresh_database_has_the_current_schema_version(tmp_path):
    SQLiteStore.open(tmp_path / "db", reactor)._conn.close()
    (version,) = sqlite3.connect(tmp_path / "db").execute("PRAGMA user_version").fetchone()
    assert version == 1


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
