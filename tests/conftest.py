"""Shared fixtures: a real chatd service on free loopback ports, torn down after each test."""

from __future__ import annotations

import pytest_twisted

from tests.support import start_server


@pytest_twisted.async_yield_fixture
async def server(tmp_path):
    srv = await start_server(tmp_path)
    yield srv
    await srv.stop()
