"""The IRC door on one of two real chatd nodes (real Redis and PostgreSQL), with line users
on the other: what they do there reaches IRC clients as IRC says it.

Needs the real Redis and PostgreSQL, as tests/test_cluster.py does (skips on a dev machine
without them, fails under CI).
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest_twisted

from tests.processes import Process, free_port
from tests.support import pause
from tests.test_cluster import LEFT_WITHIN, until_listed, user
from tests.test_irc import Irc, irc
from tests.test_rooms_cluster import until_who

PASSWORD = "correct horse battery"


async def with_irc(cluster: Any, name: str) -> tuple[Process, Any]:
    """A node with an IRC door too, and what L{irc} needs to reach it."""
    port = free_port()
    node = await cluster(name, options=("--irc", f"tcp:{port}:interface=127.0.0.1"))
    return node, SimpleNamespace(ports={"irc": port})


async def until_names(client: Irc, channel: str, nicks: set[str], within: float) -> None:
    """Ask NAMES until it shows exactly C{nicks} (other nodes' members count once their
    presence and room lists are heard, each within a bound)."""
    got: set[str] = set()
    for _ in range(int(within / 0.2)):
        client.send(f"NAMES {channel}")
        line = await client.expect(rf"^:chatd 353 \S+ = {re.escape(channel)} :")
        got = set(line.split(" :", 1)[1].split())
        if got == nicks:
            return
        await pause(0.2)
    raise AssertionError(f"NAMES {channel} still shows {got}, not {nicks}")


def told_of(client: Irc, nick: str) -> list[str]:
    """The JOIN, PART, QUIT and NICK lines about C{nick} the client has read."""
    about = re.compile(rf"^:{re.escape(nick)}!chat@chatd (JOIN|PART|QUIT|NICK) ")
    return [line for line in client.lines if about.match(line)]


@pytest_twisted.ensureDeferred
async def test_part_of_the_lobby_is_seen_on_the_other_node(cluster):
    a, door = await with_irc(cluster, "a")
    b = await cluster("b")
    bob = await user(b, "bob")
    ann = await irc(door, "ann")
    await until_listed(bob, ["ann", "bob"], LEFT_WITHIN)
    ann.send("PART #lobby")
    assert "the only room you are in" in await ann.numeric("400")
    ann.send("JOIN #dev")
    await ann.numeric("366")
    ann.send("PART #lobby :off to #dev")
    await ann.expect(r"^:ann!chat@chatd PART #lobby :off to #dev$")
    await bob.expect(r"^\* ann left$")
    await until_who(bob, "* in #lobby (1): bob", LEFT_WITHIN)  # its current room
    ann.send("JOIN #lobby")
    await bob.expect(r"^\* ann joined$")


@pytest_twisted.ensureDeferred
async def test_a_rename_on_the_other_node_is_one_nick_line(cluster):
    a, door = await with_irc(cluster, "a")
    b = await cluster("b")
    bob = await user(b, "bob")
    ann = await irc(door, "ann")
    ann.send("JOIN #dev")
    await ann.numeric("366")
    bob.send("/join #dev")
    await ann.expect(r"^:bob!chat@chatd JOIN #dev$")
    await until_names(ann, "#dev", {"ann", "bob"}, LEFT_WITHIN)
    bob.send("/nick bobby")
    await ann.expect(r"^:bob!chat@chatd NICK bobby$")
    await until_names(ann, "#dev", {"ann", "bobby"}, LEFT_WITHIN)
    assert told_of(ann, "bobby") == []  # neither a PART nor a JOIN, in #dev or #lobby


@pytest_twisted.ensureDeferred
async def test_an_invitation_from_the_other_node_is_an_invite_line(cluster):
    a, door = await with_irc(cluster, "a")
    b = await cluster("b")
    cy = await user(b, "cyx")
    cy.send(f"/register cy {PASSWORD}")
    await cy.expect(r"^\* account cy created")
    ann = await irc(door, "ann")
    await until_listed(cy, ["ann", "cy"], LEFT_WITHIN)
    cy.send("/join #secret")
    await cy.expect(r"^\* you joined #secret")
    cy.send("/invite ann")
    await cy.expect(r"^\* ann may join #secret$")
    await ann.expect(r"^:cy!chat@chatd INVITE ann #secret$")
