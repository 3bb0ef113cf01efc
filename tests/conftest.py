"""Shared fixtures: real chatd services on free loopback ports, stopped after each test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_twisted

from tests.support import LogEvents, Server, start_server


@pytest_twisted.async_yield_fixture
async def serve(tmp_path) -> Any:
    """Start a chatd service with the given doors and settings, stopped after the test:

        srv = await serve(doors=("line",), haproxy=True, max_line_bytes=100)

    Any L{Config} setting may be given; C{doors} defaults to line and web. Its data (the
    audit log, the SQLite file) is in C{tmp_path}; a second server at once needs its own
    C{data_dir}. A test that checks the shutdown awaits C{srv.stop()} itself.
    """
    started: list[Server] = []

    async def start(*, data_dir: Any = None, **settings: Any) -> Server:
        server = await start_server(tmp_path if data_dir is None else data_dir, **settings)
        started.append(server)
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
