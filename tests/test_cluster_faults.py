"""Two real chatd nodes whose Redis and PostgreSQL fail under them (through fault proxies,
tests/faultproxy.py): what a user was told went out arrives, once; what could not go out
is said so, clearly and in time.

Needs the real Redis and PostgreSQL, as tests/test_cluster.py does (skips on a dev machine
without them, fails under CI).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest_twisted
from twisted.internet import reactor

from tests.faultproxy import FaultProxy
from tests.processes import REDIS_URL
from tests.support import LineClient, pause
from tests.test_cluster import LEFT_WITHIN, RECONNECT, count, until_listed, user

NOT_SAVED = r"^! your message could not be saved, so nobody got it; try again$"


@pytest_twisted.async_yield_fixture
async def proxy() -> AsyncIterator[object]:
    """Makes fault proxies; cuts them all at the end."""
    made: list[FaultProxy] = []

    async def make(url: str, default_port: int) -> FaultProxy:
        made.append(await FaultProxy.to_url(reactor, url, default_port))
        return made[-1]

    yield make
    for p in made:
        await p.cut()


async def settled(client: LineClient, marker: str, via: LineClient) -> None:
    """Wait until everything C{via} sent before C{marker} can have reached C{client}."""
    via.send(marker)
    await client.expect(rf"^\w+: {marker}$", timeout=RECONNECT)


def exactly_once(client: LineClient, lines: list[str]) -> None:
    for line in lines:
        assert count(client, rf"^{re.escape(line)}$") == 1, (line, "\n".join(client.lines))


@pytest_twisted.ensureDeferred
async def test_whispers_notices_and_messages_of_a_redis_outage_arrive_once(cluster, proxy):
    """Both nodes lose Redis; a is back first and sends what it kept while b is still cut
    off (with pub/sub, that went to nobody); b, back later, reads it from the stream."""
    to_a, to_b = await proxy(REDIS_URL, 6379), await proxy(REDIS_URL, 6379)
    a = await cluster("a", redis=to_a.url(REDIS_URL))
    b = await cluster("b", redis=to_b.url(REDIS_URL))
    alice, bob = await user(a, "Alice"), await user(b, "Bob")
    await until_listed(alice, ["Alice", "Bob"], LEFT_WITHIN)
    await until_listed(bob, ["Alice", "Bob"], LEFT_WITHIN)

    await to_a.cut()
    await to_b.cut()
    for i in range(1, 4):
        alice.send(f"/whisper Bob psst {i}")
        await alice.expect(rf"^\* to Bob: psst {i}$")  # Alice is told it went out
        alice.send(f"hello from a {i}")
        bob.send(f"hello from b {i}")
        bob.send(f"/whisper Alice hi {i}")
        await bob.expect(rf"^\* to Alice: hi {i}$")
    await user(a, "Carol")  # joins, and renames herself: notices to everyone
    await pause(1.0)
    await to_a.heal()
    await pause(3.0)  # a reconnects and writes what it kept, b still cut off
    await to_b.heal()

    await settled(bob, "a is back", alice)
    await settled(alice, "b is back", bob)
    exactly_once(bob, [f">> Alice: psst {i}" for i in range(1, 4)])
    exactly_once(bob, [f"Alice: hello from a {i}" for i in range(1, 4)])
    assert count(bob, r"^\* \w+ is now known as Carol$") == 1
    exactly_once(alice, [f">> Bob: hi {i}" for i in range(1, 4)])
    exactly_once(alice, [f"Bob: hello from b {i}" for i in range(1, 4)])


@pytest_twisted.ensureDeferred
async def test_whispers_and_messages_sent_while_redis_is_frozen_arrive_once(cluster, proxy):
    """Redis stops answering (connections stay open): longer than a node waits for an
    answer, so the nodes drop their connections and make new ones, which hang too."""
    to_redis = await proxy(REDIS_URL, 6379)
    url = to_redis.url(REDIS_URL)
    a, b = await cluster("a", redis=url), await cluster("b", redis=url)
    alice, bob = await user(a, "Alice"), await user(b, "Bob")
    await until_listed(alice, ["Alice", "Bob"], LEFT_WITHIN)
    await until_listed(bob, ["Alice", "Bob"], LEFT_WITHIN)

    to_redis.freeze()
    for i in range(1, 4):
        alice.send(f"/whisper Bob psst {i}")
        await alice.expect(rf"^\* to Bob: psst {i}$")
        alice.send(f"hello from a {i}")
        await pause(0.2)
    # /list does not wait for the frozen Redis (10 s): it answers from what it knows.
    alice.send("/list")
    await alice.expect(r"^\* the other servers did not answer at once: the list that follows")
    assert await alice.expect(r"^\* online \(\d+\): ") == "* online (2): Alice, Bob"
    await pause(12.0)  # past the 10 s a node waits for Redis to answer
    for i in range(4, 6):
        alice.send(f"/whisper Bob psst {i}")
        await alice.expect(rf"^\* to Bob: psst {i}$")
    await to_redis.heal()

    await settled(bob, "thawed", alice)
    exactly_once(bob, [f">> Alice: psst {i}" for i in range(1, 6)])
    exactly_once(bob, [f"Alice: hello from a {i}" for i in range(1, 4)])


@pytest_twisted.ensureDeferred
async def test_a_frozen_database_gives_a_clear_error_in_time_and_nothing_lost_or_doubled(
    cluster,
    proxy,
    pg_url,
):
    to_pg = await proxy(pg_url, 5432)
    a = await cluster("a", storage=to_pg.url(pg_url), options=("--storage-timeout", "2"))
    b = await cluster("b")
    alice, bob = await user(a, "Alice"), await user(b, "Bob")
    await until_listed(alice, ["Alice", "Bob"], LEFT_WITHIN)
    alice.send("before")
    await bob.expect(r"^Alice: before$")

    to_pg.freeze()
    alice.send("into the freeze 1")
    alice.send("into the freeze 2")
    # The test's own bound is generous; the node's is its 2 s [storage] timeout.
    await alice.expect(NOT_SAVED, timeout=30)
    await alice.expect(NOT_SAVED, timeout=30)
    bob.send("bob goes on")  # b's database is fine
    await alice.expect(r"^Bob: bob goes on$", timeout=30)
    await to_pg.heal()

    alice.send("after the thaw")  # the node connects again, and saves it
    await bob.expect(r"^Alice: after the thaw$", timeout=RECONNECT)
    await pause(1.0)
    assert count(bob, r"^Alice: after the thaw$") == 1
    assert count(bob, "into the freeze") == 0
    alice.send("/history")
    await alice.expect(r"^\* history \(\d+\):$")
    await settled(alice, "done", bob)
    assert count(alice, r"\] Alice: into the freeze") == 0
    assert count(alice, r"\] Alice: before$") == 1


@pytest_twisted.ensureDeferred
async def test_status_lists_an_accounts_sessions_on_both_nodes(cluster, proxy):
    to_redis = await proxy(REDIS_URL, 6379)
    url = to_redis.url(REDIS_URL)
    a, b = await cluster("a", redis=url), await cluster("b", redis=url)
    here = await user(a, "Visitor")
    here.send("/register Dora correct-horse-battery")
    await here.expect(r"^\* you are Dora \(logged in\)$")
    there = await user(b, "Guest")
    there.send("/login Dora correct-horse-battery")
    await there.expect(r"^\* you are Dora \(logged in\)$")
    await until_listed(here, ["Dora"], LEFT_WITHIN)  # b's presence has reached a
    here.send("/status")
    line = await here.expect(r"^\* your sessions \(\d+\): ")
    assert line.startswith("* your sessions (2): telnet from 127.0.0.1 for ")
    assert line.endswith(" on server b")

    to_redis.freeze()
    here.send("/status")
    line = await here.expect(r"^\* your sessions \(\d+\): ")
    assert line.startswith("* your sessions (1): ")
    await here.expect(r"^\* \(not listed: your sessions on other servers, which did not answer")
