"""Rooms on two real chatd nodes over the real Redis and PostgreSQL: memberships, topics,
kicks, invitations and per-room history cross nodes, with the fault guarantees of the
default room (what was said while Redis was cut arrives once), and a room made on both
nodes at the same moment has one owner everywhere.

Needs the real Redis and PostgreSQL, as tests/test_cluster.py does (skips on a dev machine
without them, fails under CI).
"""

from __future__ import annotations

import re

import pytest_twisted

from tests.processes import REDIS_URL, Process
from tests.support import LineClient, pause
from tests.test_cluster import LEFT_WITHIN, RECONNECT, count, until_listed, user
from tests.test_cluster_faults import exactly_once, proxy  # noqa: F401 - proxy is a fixture

PASSWORD = "correct horse battery"


async def account(node: Process, name: str) -> LineClient:
    client = await user(node, name + "x")
    client.send(f"/register {name} {PASSWORD}")
    await client.expect(rf"^\* account {name} created")
    return client


async def until_who(client: LineClient, expected: str, within: float) -> None:
    """Ask /who until it shows C{expected} (members of other nodes count while their
    node's presence is known, which spreads within a bound)."""
    got = ""
    for _ in range(int(within / 0.2)):
        client.send("/who")
        got = await client.expect(r"^\* in #")
        if got == expected:
            return
        await pause(0.2)
    raise AssertionError(f"/who still shows {got!r}, not {expected!r}")


async def joined(client: LineClient, room: str) -> None:
    client.send(f"/join {room}")
    await client.expect(rf"^\* you joined {room}; what you type goes there$")


@pytest_twisted.ensureDeferred
async def test_rooms_memberships_topics_kicks_and_invitations_cross_real_nodes(cluster):  # noqa: F811
    a, b = await cluster("a"), await cluster("b")
    alice = await account(a, "Alice")
    # Carol has an account: a kick holds a guest by its address too, and all the test's
    # guests come from 127.0.0.1.
    bob, carol = await user(b, "Bob"), await account(b, "Carol")
    await until_listed(alice, ["Alice", "Bob", "Carol"], LEFT_WITHIN)

    await joined(alice, "#dev")
    await joined(bob, "#dev")
    await alice.expect(r"^\* Bob joined$")
    alice.send("hello dev")
    await bob.expect(r"^Alice: hello dev$")
    bob.send("hi Alice")
    await alice.expect(r"^Bob: hi Alice$")
    carol.send("lobby line")  # the other room's lines are prefixed, on both nodes
    await alice.expect(r"^\[#lobby\] Carol: lobby line$")
    await bob.expect(r"^\[#lobby\] Carol: lobby line$")
    assert count(carol, r"hello dev|hi Alice") == 0

    alice.send("/topic ship it")
    await bob.expect(r"^\* Alice set the topic: ship it$")
    carol.send("/rooms")
    await carol.expect(r"^\*   #dev \(2\): ship it$")
    bob.send("/topic mine")
    await bob.expect(r"^! only Alice, its owner, may set the topic of #dev$")

    alice.send("/kick Bob 1")
    await bob.expect(r"^\* you were removed from #dev$")
    await bob.expect(r"^\* you are now talking in #lobby$")
    bob.send("/join #dev")
    await bob.expect(r"^! you were removed from #dev; you may rejoin in 1 minute$")

    alice.send("/invite Bob")
    await bob.expect(r"^\* Alice invited you to #dev; /join #dev$")
    carol.send("/join #dev")
    await carol.expect(r"^! #dev is invite-only; ask its owner to /invite you$")
    await joined(bob, "#dev")
    bob.send("/history")  # the room's own history, from PostgreSQL
    await bob.expect(r"^\* history \(2\):$")
    await bob.expect(r"^\[\d\d:\d\d:\d\d\] Alice: hello dev$")
    await bob.expect(r"^\[\d\d:\d\d:\d\d\] Bob: hi Alice$")

    again = await user(b, "Alice2")  # the account's rooms come back on the other node
    again.send(f"/login Alice {PASSWORD}")
    await again.expect(r"^\* you are in #lobby, #dev$")
    bob.send("welcome back")
    await again.expect(r"^\[#dev\] Bob: welcome back$")


@pytest_twisted.ensureDeferred
async def test_room_lines_topics_and_joins_of_a_redis_outage_arrive_once(cluster, proxy):  # noqa: F811
    to_a, to_b = await proxy(REDIS_URL, 6379), await proxy(REDIS_URL, 6379)
    a = await cluster("a", redis=to_a.url(REDIS_URL))
    b = await cluster("b", redis=to_b.url(REDIS_URL))
    alice, bob = await user(a, "Alice"), await user(b, "Bob")
    await until_listed(alice, ["Alice", "Bob"], LEFT_WITHIN)
    await joined(alice, "#dev")
    await joined(bob, "#dev")
    await alice.expect(r"^\* Bob joined$")

    await to_a.cut()
    await to_b.cut()
    for i in range(1, 4):
        alice.send(f"dev from a {i}")
        bob.send(f"dev from b {i}")
    alice.send("/topic said while cut off")
    await alice.expect(r"^\* Alice set the topic: said while cut off$")
    carol = await user(a, "Carol")
    await joined(carol, "#dev")
    await pause(1.0)
    await to_a.heal()
    await pause(3.0)  # a reconnects and writes what it kept, b still cut off
    await to_b.heal()

    alice.send("a is back")
    await bob.expect(r"^Alice: a is back$", timeout=RECONNECT)
    bob.send("b is back")
    await alice.expect(r"^Bob: b is back$", timeout=RECONNECT)
    exactly_once(bob, [f"Alice: dev from a {i}" for i in range(1, 4)])
    exactly_once(alice, [f"Bob: dev from b {i}" for i in range(1, 4)])
    exactly_once(bob, ["* Alice set the topic: said while cut off", "* Carol joined"])
    order = [line for line in bob.lines if line.startswith(("Alice: dev", "* Alice set"))]
    assert order[-1] == "* Alice set the topic: said while cut off"  # in the order said
    await until_who(bob, "* in #dev (3): Alice, Bob, Carol", LEFT_WITHIN)
    bob.send("/topic")
    await bob.expect(r"^\* topic of #dev: said while cut off$")


@pytest_twisted.ensureDeferred
async def test_a_room_made_on_both_nodes_at_the_same_moment_has_one_owner(cluster, proxy):  # noqa: F811
    """Cut off from each other (Redis), both nodes make #x; PostgreSQL keeps one claim,
    and every node, a new one too, agrees whose #x is."""
    to_a, to_b = await proxy(REDIS_URL, 6379), await proxy(REDIS_URL, 6379)
    a = await cluster("a", redis=to_a.url(REDIS_URL))
    b = await cluster("b", redis=to_b.url(REDIS_URL))
    alice, bob = await account(a, "Alice"), await account(b, "Bob")
    await until_listed(alice, ["Alice", "Bob"], LEFT_WITHIN)

    await to_a.cut()
    await to_b.cut()
    alice.send("/join #x")
    bob.send("/join #x")
    await alice.expect(r"^\* you joined #x")
    await bob.expect(r"^\* you joined #x")
    await pause(1.0)
    lost = [c for c in (alice, bob) if count(c, r"^\* #x was made on another server")]
    assert len(lost) == 1, (alice.lines, bob.lines)
    [told] = [line for line in lost[0].lines if "made on another server" in line]
    owner = re.search(r"; (\w+) owns it$", told)[1]
    await to_a.heal()
    await to_b.heal()

    alice.send("/topic from alice")
    bob.send("/topic from bob")
    mine = {"Alice": alice, "Bob": bob}
    other = "Bob" if owner == "Alice" else "Alice"
    await mine[other].expect(
        rf"^! only {owner}, its owner, may set the topic of #x$", timeout=RECONNECT
    )
    said = rf"^\* {owner} set the topic: from {owner.lower()}$"
    await mine[owner].expect(said)
    await mine[other].expect(said, timeout=RECONNECT)

    c = await cluster("c")  # reads the rooms from PostgreSQL
    dave = await user(c, "Dave")
    for _ in range(int(LEFT_WITHIN / 0.2)):  # c reads the rooms once it has started
        dave.send("/rooms")
        await dave.expect(r"^\* > #lobby")
        if count(dave, r"^\*   #x \("):
            break
        await pause(0.2)
    await joined(dave, "#x")
    dave.send("/topic mine")
    await dave.expect(rf"^! only {owner}, its owner, may set the topic of #x$")
