"""Two real chatd processes serving one room, over the real Redis and PostgreSQL.

Each test gets its own Redis prefix and PostgreSQL schema, so runs never meet. The tests
skip when Redis or PostgreSQL is not reachable, unless the CI variable is set: then they
fail, so CI cannot pass without having tested a cluster.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.postgres import Outage, pg_url  # noqa: F401 - pg_url is a fixture
from tests.support import LineClient, line_client

REDIS_URL = os.environ.get("CHATD_TEST_REDIS", "redis://127.0.0.1:6379")
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
PRESENCE_TTL = 2  # seconds; short, so a killed node leaves /list soon
LEFT_WITHIN = 3 * PRESENCE_TTL + 5  # seconds: the bound the tests hold a dead node to
RECONNECT = 30.0  # seconds a node may take to find Redis again (backoff included)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_prefix() -> str:
    host, port = REDIS_URL.removeprefix("redis://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError as e:
        why = f"no Redis at {REDIS_URL} ({e}); start one: redis-server --save ''"
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI is set")
        pytest.skip(why)
    return f"chatd-test-{uuid.uuid4().hex}"


class Node:
    """One chatd process of the cluster, as an operator starts it."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], port: int, log: Path):
        self.name = name
        self.process = process
        self.port = port
        self.log = log

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                # Seen once in CI after a Redis outage (see issue 8's note): say so loudly with
                # the node's log, and do not leave the process behind.
                self.process.kill()
                self.process.wait()
                tail = self.log.read_text()[-3000:] if self.log.exists() else ""
                warnings.warn(f"node {self.name} ignored SIGTERM for 20 s:\n{tail}", stacklevel=1)


@pytest_twisted.async_yield_fixture
async def cluster(
    tmp_path: Path,
    redis_prefix: str,
    pg_url: str,  # noqa: F811
) -> AsyncIterator[Callable[..., Any]]:
    """Starts nodes of one room (the same Redis prefix and schema); stops them afterwards."""
    nodes: list[Node] = []

    async def start(
        name: str, redis: str = REDIS_URL, storage: str = pg_url, options: tuple[str, ...] = ()
    ) -> Node:
        port = free_port()
        data = tmp_path / name
        data.mkdir()
        log = tmp_path / f"{name}.log"
        args = [
            *TWISTD, "-n", "--pidfile=", "--logfile", str(log), "chatd",
            "--line", f"tcp:{port}:interface=127.0.0.1",
            "--web", "none", "--minechat-read", "none", "--minechat-write", "none", "--irc", "none",
            "--data-dir", str(data),
            "--redis-url", redis, "--redis-prefix", redis_prefix, "--node", name,
            "--presence-ttl", str(PRESENCE_TTL),
            "--storage-url", storage, *options,
        ]  # fmt: skip
        node = Node(name, subprocess.Popen(args), port, log)
        nodes.append(node)
        for _ in range(400):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    return node
            except OSError:
                if node.process.poll() is not None:
                    raise AssertionError(f"{name} exited:\n{log.read_text()}") from None
                await pause(0.05)
        raise AssertionError(f"{name} did not start listening:\n{log.read_text()}")

    yield start
    for node in nodes:
        node.stop()


async def pause(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def user(node: Node, name: str) -> LineClient:
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
async def test_messages_sent_while_a_node_lost_redis_are_recovered_from_the_store(cluster):
    proxy = Outage(REDIS_URL)
    proxy.restore()
    try:
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
    finally:
        proxy.cut()


@pytest_twisted.ensureDeferred
async def test_a_node_without_its_database_tells_the_user_and_recovers(cluster, pg_url):  # noqa: F811
    proxy = Outage(pg_url)
    proxy.restore()
    try:
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
    finally:
        proxy.cut()
