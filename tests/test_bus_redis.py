"""The Redis bus against a real Redis on 127.0.0.1:6379 (skipped when there is none,
except under CI, where a missing Redis fails the run)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from chatd.bus.redis import RedisBus
from chatd.bus.wire import from_wire, to_wire
from chatd.events import Message, Notice
from tests.postgres import Outage  # a TCP proxy a test can cut

HOST, PORT = "127.0.0.1", 6379
TIMEOUT = 10.0


def _reachable() -> bool:
    try:
        socket.create_connection((HOST, PORT), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def prefix():
    """A fresh key and channel prefix, so runs and other users of this Redis never meet."""
    if not _reachable():
        why = f"no Redis on {HOST}:{PORT} (start one: redis-server --port {PORT} --save '')"
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI is set")
        pytest.skip(why)
    return f"chatd-test-{uuid.uuid4().hex}"


@pytest_twisted.async_yield_fixture
async def admin():
    """A plain connection for what the test itself asks of Redis."""
    redis = await txredisapi.Connection(HOST, PORT, reconnect=False)
    yield redis
    await redis.disconnect()


@pytest_twisted.async_yield_fixture
async def buses(prefix):
    """Makes started buses on a shared prefix; stops them all afterwards."""
    made: list[RedisBus] = []

    def make(node: str, **kw: Any) -> RedisBus:
        kw.setdefault("clock", reactor)
        kw.setdefault("endpoint", TCP4ClientEndpoint(reactor, HOST, PORT))
        bus = RedisBus(
            prefix=prefix,
            # Unique, so cutting "chatd-sub-<node>" never hits a connection of an earlier test
            # that is still closing.
            node=f"{node}-{uuid.uuid4().hex[:8]}",
            **kw,
        )
        bus.startService()
        made.append(bus)
        return bus

    yield make
    for bus in made:
        if bus.running:
            await bus.stopService()


@pytest.fixture
def drops():
    """The counts in the bus's warnings about events it dropped while Redis was away."""
    counts: list[int] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "chatd.bus.redis" and "dropped" in event:
            counts.append(event["dropped"])

    globalLogPublisher.addObserver(observe)
    yield counts
    globalLogPublisher.removeObserver(observe)


async def down(bus: RedisBus) -> bool:
    """Whether the bus's publisher failed to connect (it was up: this waits for an attempt)."""
    try:
        await bus.online()
    except (ConnectionRefusedError, txredisapi.ConnectionError):  # a reconnect, or the cut
        down = True
    else:
        down = False
    # Out of the ClientService's failure handling, which must not be entered again.
    await task.deferLater(reactor, 0, lambda: None)
    return down


async def until(check: Callable[[], Any], what: str) -> None:
    """Wait (polling, with a deadline so a broken bus fails instead of hanging) for check()."""
    for _ in range(int(TIMEOUT / 0.02)):
        if await defer.maybeDeferred(check):
            return
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


def collect(bus: RedisBus) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    bus.subscribe(lambda kind, payload: got.append((kind, payload)))
    return got


async def kill(admin: Any, client_name: str) -> None:
    """Cut one named connection of a bus, as a network failure or Redis restart would."""
    for line in (await admin.execute_command("CLIENT", "LIST")).splitlines():
        fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
        if fields.get("name") == client_name:
            await admin.execute_command("CLIENT", "KILL", "ID", fields["id"])
            return
    raise AssertionError(f"no Redis client named {client_name}")


@pytest_twisted.ensureDeferred
async def test_two_nodes_exchange_events_in_order(buses):
    a, b = buses("a"), buses("b")
    got_a, got_b = collect(a), collect(b)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to subscribe")

    sent = [
        a.publish("event", to_wire(Message(i, 1000.0 + i, "ann", f"line {i}")))
        for i in range(1, 101)
    ]
    await defer.gatherResults(sent)
    await b.publish("event", to_wire(Notice("bob joined")))
    await until(lambda: len(got_b) == 100 and len(got_a) == 1, "the events to arrive")

    assert {kind for kind, _ in got_b} == {"event"}
    assert [(m.id, m.text) for m in (from_wire(p) for _, p in got_b)] == [
        (i, f"line {i}") for i in range(1, 101)
    ]
    assert [from_wire(p).text for _, p in got_a] == ["bob joined"]  # and not its own lines
    assert a.last_id == b.last_id == 100


@pytest_twisted.ensureDeferred
async def test_presence_lists_every_live_node_and_forgets_a_dead_one(buses):
    observer = buses("observer")
    notices = collect(observer)
    # A node whose clock never moves stops refreshing, as a SIGKILLed node would.
    dead = buses("dead", clock=task.Clock(), presence_ttl=0.5)
    live = buses("live", presence_ttl=0.5)
    await until(lambda: observer.subscriptions == 1, "the observer to subscribe")

    await dead.set_present(["Zed"])
    await live.set_present(["bob", "Amy"])
    assert await observer.online() == ["Amy", "bob", "Zed"]
    await until(lambda: len(notices) == 2, "presence notices")
    assert sorted(p["names"] for kind, p in notices if kind == "presence") == [
        ["Amy", "bob"],
        ["Zed"],
    ]

    await until(lambda: observer.online().addCallback(lambda n: "Zed" not in n), "Zed to expire")
    assert await observer.online() == ["Amy", "bob"]  # kept alive by its refreshes

    await live.stopService()  # a clean stop says goodbye at once
    assert await observer.online() == []


@pytest_twisted.ensureDeferred
async def test_a_cut_subscriber_resubscribes_and_reports_the_gap(buses, admin):
    a = buses("a", retry=lambda attempt: 0.1)
    b = buses("b", retry=lambda attempt: 0.1)
    got, gaps = collect(b), []
    b.on_gap(gaps.append)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to subscribe")
    await a.publish("event", to_wire(Message(7, 1.0, "ann", "before")))
    await until(lambda: len(got) == 1, "the first message")

    await kill(admin, f"chatd-sub-{b.node}")
    await until(lambda: gaps, "the gap to be reported")
    assert gaps == [7]  # the store has everything after id 7 for b to fetch
    assert b.subscriptions == 2

    await a.publish("event", to_wire(Message(9, 2.0, "ann", "after")))
    await until(lambda: len(got) == 2, "a message after the reconnect")
    assert from_wire(got[-1][1]).text == "after"
    assert b.last_id == 9


@pytest_twisted.ensureDeferred
async def test_a_cut_publisher_still_delivers(buses, admin):
    a = buses("a", retry=lambda attempt: 0.1)
    b = buses("b")
    got = collect(b)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to subscribe")
    await a.publish("event", to_wire(Notice("warm")))  # the publisher is connected

    await kill(admin, f"chatd-pub-{a.node}")
    for i in range(3):  # onto the cut connection, or waiting for the next one
        a.publish("event", to_wire(Notice(f"still here {i}")))
    await until(lambda: len(got) == 4, "the messages sent across the cut")
    assert [from_wire(p).text for _, p in got] == ["warm"] + [f"still here {i}" for i in range(3)]


@pytest_twisted.ensureDeferred
async def test_an_outage_keeps_the_newest_publishes_and_sends_them_in_order(buses, drops):
    proxy = Outage(f"redis://{HOST}:{PORT}")
    proxy.restore()
    endpoint = TCP4ClientEndpoint(reactor, HOST, proxy.port)
    try:
        a = buses("a", endpoint=endpoint, retry=lambda attempt: 0.05, max_pending=5)
        b = buses("b")
        got = collect(b)
        await until(lambda: a.subscriptions == b.subscriptions == 1, "both to subscribe")
        await a.publish("event", to_wire(Notice("before")))
        await until(lambda: len(got) == 1, "the first notice")

        proxy.cut()  # a loses Redis; it notices on its next reactor turn
        for i in range(12):  # onto the dying connection: they wait again, the newest 5 of them
            a.publish("event", to_wire(Notice(f"during {i}")))
        await until(lambda: down(a), "a to find Redis gone")
        assert len(a._queue) == 5
        await until(lambda: down(a), "a failed reconnect")
        for i in range(12, 20):
            a.publish("event", to_wire(Notice(f"during {i}")))
            assert len(a._queue) <= 5
        assert len(a._queue) == 5
        assert drops == []  # the count is known once Redis is back

        proxy.restore()
        await until(lambda: len(got) == 6, "the kept events")
        kept = [f"during {i}" for i in range(15, 20)]  # the newest, in order
        assert [from_wire(p).text for _, p in got] == ["before", *kept]
        assert drops == [15]  # once for the whole outage
        await until(lambda: not a._queue, "Redis to confirm them")

        await a.publish("event", to_wire(Notice("after")))
        await until(lambda: len(got) == 7, "a notice after the outage")
        assert drops == [15]
        await a.stopService()  # before the proxy goes: no goodbye into a dead connection
    finally:
        proxy.cut()


def test_a_node_stopping_during_an_outage_says_what_it_dropped(drops):
    memory = MemoryReactorClock()  # where connecting to Redis never ends
    bus = RedisBus(memory, TCP4ClientEndpoint(memory, HOST, PORT), max_pending=3)
    bus.startService()
    for i in range(10):
        bus.publish("event", to_wire(Notice(f"{i}")))
    memory.advance(60)
    assert len(bus._queue) == 3
    assert drops == []

    bus.stopService()
    assert drops == [10]  # 7 past the bound, and the 3 kept ones, never sent
