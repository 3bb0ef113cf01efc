"""Shared fixtures: real chatd services and programs on free loopback ports, and the fault
proxies between them, all stopped after each test (however it ended)."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString

from chatd.config import Config
from chatd.doors import proxy
from chatd.service import build
from tests.postgres import Outage, pg_url  # noqa: F401 - pg_url is a fixture
from tests.processes import PRESENCE_TTL, REDIS_URL, TWISTD, Process, free_port
from tests.support import OFF, LogEvents, Server
from tests.terminals import Terminals


@pytest_twisted.async_yield_fixture
async def serve(tmp_path) -> Any:
    """Start a chatd service with the given doors and settings, stopped after the test:

        srv = await serve(doors=("line",), haproxy=True, max_line_bytes=100)

    Any L{Config} setting may be given; C{doors} (on free loopback ports) defaults to line
    and web, and C{haproxy=True} has them expect the PROXY header. Its data (the
    audit log, the SQLite file) is in C{tmp_path}; a second server at once needs its own
    C{data_dir}. A test that checks the shutdown awaits C{srv.stop()} itself.
    """
    started: list[Server] = []

    async def start(
        *,
        doors: tuple[str, ...] = ("line", "web"),
        haproxy: bool = False,
        data_dir: Any = None,
        **settings: Any,
    ) -> Server:
        # Tests register many accounts from one address: that limit is off unless set.
        defaults = {"data_dir": str(data_dir or tmp_path), "accounts_per_address_per_hour": 0}
        config = Config(**(OFF | defaults | settings))
        server = Server(build(config, reactor), {})
        await defer.maybeDeferred(server.service.startService)
        started.append(server)  # stopped even when a door fails to open
        for name in doors:
            spec = ("haproxy:" if haproxy else "") + "tcp:0:interface=127.0.0.1"
            spec, factory = proxy.listen_spec(
                spec, server.service.factories[name], reactor, config.handshake_timeout
            )
            port = await serverFromString(reactor, spec).listen(factory)
            server.listeners.append(port)
            server.ports[name] = port.getHost().port
        return server

    yield start
    errors = []
    for server in reversed(started):  # every one, even when one fails to stop
        try:
            await server.stop()
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


@pytest_twisted.async_yield_fixture
async def server(serve: Callable[..., Awaitable[Server]]) -> Any:
    """A started service with the line and web doors."""
    yield await serve()


@pytest.fixture
def log() -> Any:
    """The server log's events while the test runs (C{log.texts()})."""
    events = LogEvents()
    yield events
    events.stop()


@pytest.fixture
def outage() -> Any:
    """A proxy in front of a database or Redis that the test can cut and restore, cut after
    the test: C{proxy = outage(url)}, then C{proxy.url} instead of C{url}."""
    made: list[Outage] = []

    def make(url: str) -> Outage:
        proxy = Outage(url)
        made.append(proxy)
        proxy.restore()
        return proxy

    yield make
    for each in made:
        each.cut()


@pytest_twisted.async_yield_fixture
async def process(tmp_path: Path) -> Any:
    """Start a program that listens on C{port}, stopped after the test (even when it failed
    to start), and wait until it listens:

        haproxy = await process("haproxy", [path, "-db", "-f", cfg], port)

    Its output is in C{tmp_path/<name>.log}, unless it writes its own C{log} file.
    """
    started: list[Process] = []

    async def start(name: str, args: list[str], port: int, log: Path | None = None) -> Process:
        if log is None:
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        else:
            popen = subprocess.Popen(args)
        started.append(Process(name, popen, port, log))
        await started[-1].listening()
        return started[-1]

    yield start
    for each in reversed(started):
        each.stop()


@pytest.fixture
def node(process: Callable[..., Awaitable[Process]], tmp_path: Path) -> Any:
    """Start a chatd node under twistd, as an operator runs it, stopped after the test:

        a = await node("a", port, "--line", f"tcp:{port}:interface=127.0.0.1", "--irc", "none")

    C{port} is the one it is ready on once it listens; its data is in C{tmp_path/<name>},
    its log in C{tmp_path/<name>.log}. Name every door (C{--irc none} too).
    """

    async def start(name: str, port: int, *options: str) -> Process:
        data = tmp_path / name
        data.mkdir()
        log = tmp_path / f"{name}.log"
        args = [*TWISTD, "-n", "--pidfile=", "--logfile", str(log), "chatd",
                "--data-dir", str(data), *options]  # fmt: skip
        return await process(name, args, port, log=log)

    return start


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of the test's own on the test Redis (skips when there is none)."""
    host, port = REDIS_URL.removeprefix("redis://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError as e:
        why = f"no Redis at {REDIS_URL} ({e}); start one: redis-server --save ''"
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI is set")
        pytest.skip(why)
    return f"chatd-test-{uuid.uuid4().hex}"


@pytest.fixture
def cluster(
    node: Callable[..., Awaitable[Process]],
    redis_prefix: str,
    pg_url: str,  # noqa: F811
) -> Any:
    """Start nodes of one room (the same Redis prefix and schema), each with a line door:

        a = await cluster("a", redis=proxy.url)

    Every node is stopped after the test (by the C{node} fixture)."""

    async def start(
        name: str, redis: str = REDIS_URL, storage: str = pg_url, options: tuple[str, ...] = ()
    ) -> Process:
        port = free_port()
        return await node(
            name, port,
            "--line", f"tcp:{port}:interface=127.0.0.1",
            "--web", "none", "--minechat-read", "none", "--minechat-write", "none", "--irc", "none",
            "--redis-url", redis, "--redis-prefix", redis_prefix, "--node", name,
            "--presence-ttl", str(PRESENCE_TTL),
            "--storage-url", storage, *options,
        )  # fmt: skip

    return start


@pytest_twisted.async_yield_fixture
async def terminals(tmp_path: Path) -> Any:
    """tmux sessions of the test's own (C{terminals.open(name, command)}), all ended after."""
    sessions = Terminals(str(tmp_path))
    yield sessions
    await sessions.close()
