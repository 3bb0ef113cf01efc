"""Flood control: lines per second, connections per address; on a clock, then on sockets."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock

from chatd.config import Config
from chatd.flood import Flood
from chatd.testing import FakeClient
from tests.support import LineClient, line_client, ws_client


def flood(**settings: float) -> tuple[Flood, Clock]:
    clock = Clock()
    return Flood(Config(**settings), clock), clock


def test_lines_within_the_rate_all_pass() -> None:
    rules, clock = flood(lines_per_second=5)
    door = FakeClient()
    assert rules.admit(door) is None
    for _ in range(50):
        assert rules.line(door)
        clock.advance(0.2)
    assert door.events == []


def test_a_burst_over_the_cap_is_dropped_with_one_warning() -> None:
    rules, clock = flood(lines_per_second=5)
    door = FakeClient()
    rules.admit(door)
    passed = [rules.line(door) for _ in range(8)]
    assert passed == [True] * 5 + [False] * 3
    assert len(door.lines) == 1
    assert door.lines[0].startswith("! you are sending more than 5 lines a second")
    assert door.closed is None
    clock.advance(1)
    assert rules.line(door)


def test_a_client_that_goes_on_flooding_is_disconnected() -> None:
    rules, clock = flood(lines_per_second=5)
    door = FakeClient()
    rules.admit(door)
    for _ in range(5 + 6):
        rules.line(door)
    assert door.closed == "flooding"
    assert door.lines[-1] == "! disconnected for sending too many lines too fast"
    clock.advance(10)
    assert not rules.line(door)  # nothing more is acted on while it closes


def test_slowing_down_after_the_warning_keeps_the_connection() -> None:
    rules, clock = flood(lines_per_second=5)
    door = FakeClient()
    rules.admit(door)
    for _ in range(10):  # 5 pass, 5 dropped: one short of disconnection
        rules.line(door)
    clock.advance(1)
    for _ in range(10):
        assert rules.line(door)
        clock.advance(0.5)
    for _ in range(10):
        rules.line(door)
    assert door.closed is None
    assert len(door.lines) == 2  # warned again for the new burst


def test_zero_lines_per_second_switches_the_cap_off() -> None:
    rules, _ = flood(lines_per_second=0)
    door = FakeClient()
    rules.admit(door)
    assert all(rules.line(door) for _ in range(1000))


def test_a_refused_connection_is_never_listened_to() -> None:
    rules, _ = flood(connections_per_address=1)
    rules.admit(FakeClient())
    door = FakeClient()
    assert rules.admit(door) is not None
    assert not rules.line(door)


def test_concurrent_connections_per_address() -> None:
    rules, _ = flood(connections_per_address=2)
    first, second = FakeClient(), FakeClient()
    assert rules.admit(first) is None
    assert rules.admit(second) is None
    refusal = rules.admit(FakeClient())
    assert refusal is not None and "at most 2 at once" in refusal
    assert rules.admit(FakeClient(peer="10.0.0.2")) is None  # another address is not affected
    rules.closed(first)
    assert rules.admit(FakeClient()) is None


def test_new_connections_per_minute_says_when_to_come_back() -> None:
    rules, clock = flood(new_connections_per_minute=3, connections_per_address=0)
    for _ in range(3):
        door = FakeClient()
        assert rules.admit(door) is None
        rules.closed(door)
        clock.advance(5)
    refusal = rules.admit(FakeClient())
    assert refusal == (
        "too many new connections from your address (at most 3 a minute); try again in 45s"
    )
    assert rules.admit(FakeClient(peer="10.0.0.2")) is None
    clock.advance(45)
    assert rules.admit(FakeClient()) is None


def test_zero_switches_the_connection_caps_off() -> None:
    rules, _ = flood(connections_per_address=0, new_connections_per_minute=0)
    assert all(rules.admit(FakeClient()) is None for _ in range(100))


def test_closing_a_refused_connection_does_not_free_a_place() -> None:
    rules, _ = flood(connections_per_address=1)
    rules.admit(FakeClient())
    refused = FakeClient()
    rules.admit(refused)
    rules.closed(refused)
    assert rules.admit(FakeClient()) is not None


# -- over real sockets: each door tells a refused client why and closes it ------------------


async def _refused_line_client(port: int) -> LineClient:
    client = LineClient()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(lambda: client)
    )
    return client


@pytest_twisted.ensureDeferred
async def test_the_line_door_tells_a_refused_client_and_hangs_up(serve) -> None:
    server = await serve(doors=("line",), connections_per_address=1)
    first = await line_client(server.ports["line"])
    second = await _refused_line_client(server.ports["line"])
    await second.expect(r"^! too many connections from your address \(at most 1 at once\)")
    await second.closed
    assert server.room.online() == [first.lines[0].split()[-1]]
    first.close()
    await first.closed


@pytest_twisted.ensureDeferred
async def test_the_websocket_door_tells_a_refused_client_and_closes(serve) -> None:
    server = await serve(doors=("web",), new_connections_per_minute=1)
    first = await ws_client(server.ports["web"])
    second = await ws_client(server.ports["web"])
    await second.expect(r"^! too many new connections from your address")
    await second.closed
    assert len(server.room.online()) == 1
    first.close()
    await first.closed


@pytest_twisted.ensureDeferred
async def test_a_telnet_flood_is_cut_off(serve) -> None:
    server = await serve(doors=("line",), lines_per_second=5)
    client = await line_client(server.ports["line"])
    client.send("".join(f"spam {n}\n" for n in range(20)))
    await client.expect(r"^! you are sending more than 5 lines a second")
    await client.expect(r"^! disconnected for sending too many lines too fast")
    await client.closed
