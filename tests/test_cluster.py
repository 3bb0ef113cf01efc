"""Two real chatd processes serving one room, over the real Redis and PostgreSQL.

Each test gets its own Redis prefix and PostgreSQL schema, so runs never meet. The tests
skip when Redis or PostgreSQL is not reachable, unless the CI variable is set: then they
fail, so CI cannot pass without having tested a cluster.
"""

from __future__ import annotations

import re
import signal

import pytest_twisted

from tests.processes import PRESENCE_TTL, REDIS_URL, Process
from tests.support import LineClient, line_client, pause

LEFT_WITHIN = 3 * PRESENCE_TTL + 5  # seconds: the bound the tests hold a dead node to
RECONNECT = 30.0  # seconds a node may take to find Redis again (backoff included)


async def user(node: Process, name: str) -> LineClient:
    client = await line_client(node.port)
    client.send(f"/nick {name}")
    await client.expect(rf"^\* you are {name}\b")
    return client


async def listing(client: LineClient) -> list[str]:
    client.send("/list")
    line = await client.expect(r"^\* online \(\d+\): ")
    return line.split(": ", 1)[1].split(", ")


async def until_listed(client: LineClient, expected: list[str], within: float) -> None:
    """Ask /list until it shows exactly C{expected} (presence spreads within a bound)."""
    got: list[str] = []
    for _ in range(int(within / 0.2)):
        got = await listing(client)
        if got == expected:
            return
        await pause(0.2)
    raise AssertionError(f"/list still shows {got}, not {expected}")


def count(client: LineClient, pattern: str) -> int:
    return sum(1 for line in client.lines if re.search(pattern, line))


@pytest_twisted.ensureDeferred
async def test_users_on_two_nodes_see_each_other_messages_and_history(cluster):
    a, b = await cluster("a"), await cluster("b")
    alice, bob = await user(a, "Alice"), await user(b, "Bob")
    carol, dave = await user(a, "Carol"), await user(b, "Dave")  # they watch
    everyone = ["Alice", "Bob", "Carol", "Dave"]
    await until_listed(alice, everyone, LEFT_WITHIN)
    await until_listed(bob, everyone, LEFT_WITHIN)

    for i in range(1, 4):
        alice.send(f"hello from a {i}")
        bob.send(f"hello from b {i}")
    for i in range(1, 4):
        await bob.expect(rf"^Alice: hello from a {i}$")
        await alice.expect(rf"^Bob: hello from b {i}$")
    alice.send("/whisper Bob psst")
    await bob.expect(r"psst")
    alice.send("last one")
    await bob.expect(r"^Alice: last one$")
    for i in range(1, 4):
        assert count(bob, rf"^Alice: hello from a {i}$") == 1
        assert count(alice, rf"^Bob: hello from b {i}$") == 1
    assert count(bob, r"psst") == 1

    alice.send("/history")
    bob.send("/history")
    histories = []
    for client in (alice, bob):
        await client.expect(r"^\* history \(7\):$")
        lines = [await client.expect(r"^\[\d\d:\d\d:\d\d\] ") for _ in range(7)]
        histories.append([line.split("] ", 1)[1] for line in lines])
    assert histories[0] == histories[1]
    for watcher in (carol, dave):  # live, in the same order as history, on both nodes
        await watcher.expect(r"^Alice: last one$")
        assert [line for line in watcher.lines if re.match(r"^(Alice|Bob): ", line)] == (
            histories[0]
        )
    assert sorted(histories[0]) == sorted(
        [f"Alice: hello from a {i}" for i in range(1, 4)]
        + [f"Bob: hello from b {i}" for i in range(1, 4)]
        + ["Alice: last one"]
    )


@pytest_twisted.ensureDeferred
async def test_names_are_shared_across_nodes(cluster):
    a, b = await cluster("a"), await cluster("b")
    alice, bob = await user(a, "Alice"), await user(b, "Bob")
    await until_listed(bob, ["Alice", "Bob"], LEFT_WITHIN)
    bob.send("/nick Alice")
    await bob.expect(r"^! the name Alice is taken; pick another$")
    alice.send("/nick Alicia")
    await bob.expect(r"^\* Alice is now known as Alicia$")
    await until_listed(bob, ["Alicia", "Bob"], LEFT_WITHIN)


@pytest_twisted.ensureDeferred
async def test_a_killed_node_leaves_everyones_list(cluster):
    a, b = await cluster("a"), await cluster("b")
    alice, _bob = await user(a, "Alice"), await user(b, "Bob")
    await until_listed(alice, ["Alice", "Bob"], LEFT_WITHIN)
    b.stop(signal.SIGKILL)
    await until_listed(alice, ["Alice"], LEFT_WITHIN)


@pytest_twisted.ensureDeferred
async def test_messages_sent_while_a_node_lost_redis_are_recovered_from_the_store(cluster, outage):
    proxy = outage(REDIS_URL)
    a, b = await cluster("a", redis=proxy.url), await cluster("b")
    alice, bob = await user(a, "Alice"), await user(b, "Bob")
    await until_listed(alice, ["Alice", "Bob"], LEFT_WITHIN)
    bob.send("before")
    await alice.expect(r"^Bob: before$")

    proxy.cut()  # node a loses Redis, as in a Redis restart
    for i in range(1, 6):
        bob.send(f"while away {i}")
        alice.send(f"alice goes on {i}")
        await pause(0.1)
    proxy.restore()

    for i in range(1, 6):
        await alice.expect(rf"^Bob: while away {i}$", timeout=RECONNECT)
        await bob.expect(rf"^Alice: alice goes on {i}$", timeout=RECONNECT)
    bob.send("after")
    await alice.expect(r"^Bob: after$", timeout=RECONNECT)
    for i in range(1, 6):
        assert count(alice, rf"^Bob: while away {i}$") == 1
        assert count(bob, rf"^Alice: alice goes on {i}$") == 1


@pytest_twisted.ensureDeferred
async def test_a_node_without_its_database_tells_the_user_and_recovers(cluster, outage, pg_url):
    proxy = outage(pg_url)
    a, b = await cluster("a", storage=proxy.url), await cluster("b")
    alice, bob = await user(a, "Alice"), await user(b, "Bob")
    await until_listed(alice, ["Alice", "Bob"], LEFT_WITHIN)

    proxy.cut()
    alice.send("lost in the void")
    await alice.expect(r"^! your message could not be saved, so nobody got it; try again$")
    proxy.restore()
    alice.send("back again")
    await bob.expect(r"^Alice: back again$", timeout=RECONNECT)
    assert count(bob, "lost in the void") == 0
