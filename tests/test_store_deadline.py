"""A PostgreSQL that stops answering: every call fails within the deadline with a clear
error, nothing failed is saved after all, and the store carries on when the database does.

Against the real PostgreSQL, reached through a fault proxy (tests/faultproxy.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.logger import globalLogPublisher

from chatd.events import Message
from chatd.store import StoreUnavailable
from chatd.store.postgres import PostgresStore
from tests.faultproxy import FaultProxy
from tests.postgres import admin_connection, pg_url  # noqa: F401 - pg_url is a fixture

DEADLINE = 1.0  # seconds, the store's [storage] timeout in these tests
WAIT = 20.0  # seconds the test waits for an answer before it calls the store hung


@pytest_twisted.async_yield_fixture
async def proxied(pg_url: str) -> AsyncIterator[tuple[PostgresStore, FaultProxy]]:  # noqa: F811
    proxy = await FaultProxy.to_url(reactor, pg_url, 5432)
    # Opening blocks (it is meant for start-up): off the reactor, which runs the proxy.
    store = await threads.deferToThread(PostgresStore.open, proxy.url(pg_url), reactor, DEADLINE)
    store.start()
    yield store, proxy
    await proxy.heal()
    await store.close()
    await proxy.cut()


@pytest.fixture
def store_log() -> Any:
    """The store's log lines."""
    lines: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "chatd.store":
            lines.append(event)

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def message(id: int, text: str) -> Message:
    return Message(id, 1000.0 + id, "ann", text)


async def outcome(d: defer.Deferred[Any]) -> Any:
    """What C{d} fires with, or the exception it fails with; the test's own bound."""
    d.addTimeout(WAIT, reactor)
    try:
        return await d
    except Exception as e:
        return e


async def texts(store: PostgresStore) -> list[str]:
    return [m.text for m in await store.messages(0, 10**9, 0.0, 100)]


@pytest_twisted.ensureDeferred
async def test_a_frozen_database_fails_calls_clearly_and_keeps_nothing_of_them(
    proxied: tuple[PostgresStore, FaultProxy], store_log: list[dict]
) -> None:
    store, proxy = proxied
    await store.add_message(message(1, "before"))

    proxy.freeze()
    first = store.add_message(message(2, "frozen 1"))
    behind = [store.add_message(message(3 + i, f"frozen {2 + i}")) for i in range(20)]
    failures = [await outcome(d) for d in [first, *behind]]
    assert all(isinstance(f, StoreUnavailable) for f in failures), failures
    assert "did not answer" in str(failures[0])
    late = await outcome(store.account("ann"))  # asked after the others failed: fails too
    assert isinstance(late, StoreUnavailable)

    await proxy.heal()
    saved = await outcome(store.add_message(message(30, "after")))
    assert isinstance(saved, Message), saved
    assert await texts(store) == ["before", "after"]  # none of what failed, nothing twice
    errors = [e for e in store_log if e["log_level"].name == "error"]
    assert len(errors) == 1  # one line for the outage, not one per call
    assert any("answers again" in e["log_format"] for e in store_log)


@pytest_twisted.ensureDeferred
async def test_a_held_lock_fails_calls_clearly_and_they_work_once_it_is_released(
    proxied: tuple[PostgresStore, FaultProxy],
    pg_url: str,  # noqa: F811
) -> None:
    """Another client holds the id counter's row (a stuck node, a long maintenance job)."""
    store, _ = proxied
    await store.add_message(message(1, "before"))
    schema = pg_url.rsplit("application_name=", 1)[1]
    admin = admin_connection()
    try:
        admin.execute(f"SET search_path = {schema}")
        admin.execute("BEGIN")
        admin.execute("SELECT value FROM meta WHERE key = 'last_id' FOR UPDATE")
        failed = await outcome(store.add_message(message(2, "blocked")))
        assert isinstance(failed, StoreUnavailable), failed
        admin.execute("ROLLBACK")
    finally:
        admin.close()
    saved = await outcome(store.add_message(message(3, "after")))
    assert isinstance(saved, Message), saved
    assert await texts(store) == ["before", "after"]


@pytest_twisted.ensureDeferred
async def test_a_cut_database_fails_calls_clearly_and_the_store_reconnects(
    proxied: tuple[PostgresStore, FaultProxy], store_log: list[dict]
) -> None:
    store, proxy = proxied
    await store.add_message(message(1, "before"))
    await proxy.cut()
    results = [await outcome(store.add_message(message(2 + i, "cut"))) for i in range(5)]
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    await proxy.heal()
    assert isinstance(await outcome(store.add_message(message(9, "after"))), Message)
    assert await texts(store) == ["before", "after"]
    assert len([e for e in store_log if e["log_level"].name == "error"]) == 1
