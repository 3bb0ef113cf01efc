"""ChatService.reload: what a SIGHUP applies at once, and what it leaves for a restart."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.commands import exchange
from chatd.health import Health
from tests.support import line_client, ws_client


@pytest_twisted.ensureDeferred
async def test_reload_applies_flood_origins_and_exchange_settings_and_keeps_doors(serve):
    server = await serve(doors=("line", "web"), lines_per_second=20)
    alice = await line_client(server.ports["line"])  # connected before the reload
    config = server.room.config
    applied, later = server.service.reload(
        config.replace(
            lines_per_second=1,
            allowed_origins="https://chat.example.org",
            exchange_url="http://127.0.0.1:9/mirror",
            exchange_concurrency=1,
            max_name_length=10,
            line="tcp:7000",
            storage_url="postgresql://elsewhere/db",
        )
    )
    assert applied == [
        "max_name_length", "lines_per_second", "exchange_url", "exchange_concurrency",
        "allowed_origins",
    ]  # fmt: skip
    assert later == ["line", "storage_url"]
    assert server.room.config.line == config.line  # still what it listens on
    assert server.room.config.lines_per_second == 1
    assert exchange.client_for(server.room.services).base_url == "http://127.0.0.1:9/mirror"

    # The new caps hold for a connection made before the reload.
    alice.send("/rename Bartholomew")
    await alice.expect(r"a name has 2 to 10 characters")
    alice.send("one")
    alice.send("two")
    await alice.expect(r"more than 1 lines a second")
    # A page on the newly allowed origin may open a WebSocket; another still may not.
    ok = await ws_client(server.ports["web"], origin="https://chat.example.org")
    ok.close()
    try:
        await ws_client(server.ports["web"], origin="https://evil.example.net")
    except ConnectionError as e:
        assert "403" in str(e)
    else:
        raise AssertionError("a WebSocket from a foreign origin was accepted")


def test_health_asks_once_for_many_askers_and_times_out_on_the_clock():
    clock = Clock()
    asked: list[defer.Deferred[None]] = []

    def ask() -> defer.Deferred[None]:
        asked.append(defer.Deferred())
        return asked[-1]

    health = Health(clock, {"database": ask}, lambda: 2.0)
    first = defer.ensureDeferred(health.problems())
    second = defer.ensureDeferred(health.problems())
    assert len(asked) == 1  # a load balancer's burst is one question to the database
    clock.advance(2.0)
    assert first.result == second.result == ["database: no answer within 2 s"]
    third = defer.ensureDeferred(health.problems())
    assert len(asked) == 1  # the first question is still out: no pile-up behind it
    asked[0].callback(None)
    assert third.result == []
    fourth = defer.ensureDeferred(health.problems())
    asked[1].errback(RuntimeError("the database said no"))
    assert fourth.result == ["database: the database said no"]
    assert not clock.getDelayedCalls()
