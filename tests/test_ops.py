"""What an operator relies on: /metrics, /healthz, the response headers of the page.

Each server has its own metrics registry, so these run several servers in one process.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from tests.processes import REDIS_URL
from tests.support import (
    flood_until_dropped,
    line_client,
    never_reading_socket,
    pause,
    ws_client,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def get(url: str, **headers: str) -> tuple[int, dict[bytes, list[bytes]], str]:
    """One request on a connection of its own (none is left open after the test)."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await treq.get(url, pool=pool, headers=headers or None)
    body = await response.text("utf-8")
    return response.code, dict(response.headers.getAllRawHeaders()), body


async def scrape(port: int) -> Samples:
    """The metrics, read with Prometheus' own parser of the text format."""
    code, headers, text = await get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    assert headers[b"Content-Type"][0].startswith(b"text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest_twisted.ensureDeferred
async def test_metrics_follow_a_small_chat(serve, tmp_path):
    server = await serve(doors=("line", "web", "metrics"))
    other = await serve(data_dir=tmp_path / "other", doors=("line", "metrics"))
    port = server.ports["metrics"]
    alice = await line_client(server.ports["line"])
    bob = await line_client(server.ports["line"])
    carol = await ws_client(server.ports["web"])
    alice.send("warming up")  # every join notice and member list is out once this is read
    await bob.expect(r": warming up$")
    await carol.expect(r": warming up$")
    before = await scrape(port)
    assert value(before, "chatd_connections", door="line") == 2
    assert value(before, "chatd_connections", door="web") == 1
    assert value(before, "chatd_connections", door="minechat_read") == 0
    assert value(before, "chatd_users") == 3

    alice.send("hello")
    bob.send("hi")
    await carol.expect(r": hello$")
    await carol.expect(r": hi$")
    await bob.expect(r": hello$")
    await alice.expect(r": hi$")
    after = await scrape(port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("chatd_messages_total") == 2
    # A line client does not get its own public line back: hello to Bob, hi to Alice.
    assert moved("chatd_deliveries_total", door="line") == 2
    assert moved("chatd_deliveries_total", door="web") == 2  # Carol got both
    assert moved("chatd_store_batch_seconds_count") >= 1  # the two messages were saved
    assert value(after, "chatd_store_batch_seconds_sum") > 0
    assert value(after, "chatd_errors_total", kind="store") == 0
    assert value(after, "chatd_slow_reader_drops_total", door="line") == 0

    bob.close()
    await bob.closed
    await pause(0.05)
    gone = await scrape(port)
    assert value(gone, "chatd_connections", door="line") == 1
    # The other server in this process counts only its own.
    theirs = await scrape(other.ports["metrics"])
    assert value(theirs, "chatd_connections", door="line") == 0
    assert value(theirs, "chatd_messages_total") == 0
    carol.close()
    await carol.closed


@pytest_twisted.ensureDeferred
async def test_flooders_and_slow_readers_are_counted(serve, log):
    server = await serve(
        doors=("line", "metrics"), lines_per_second=2, connections_per_address=3,
        max_output_bytes=65536, max_line_bytes=40_000, max_message_bytes=40_000,
        messages_per_hour=0,
    )  # fmt: skip
    port = server.ports["metrics"]
    flooder = await line_client(server.ports["line"])
    for i in range(10):
        flooder.send(f"spam {i}")
    await flooder.expect(r"disconnected for sending too many lines too fast")
    await flooder.closed
    talker = await line_client(server.ports["line"])
    listener = await line_client(server.ports["line"])
    crowd = await line_client(server.ports["line"])
    refused = await line_client_refused(server.ports["line"])
    assert "too many connections from your address" in refused
    crowd.close()
    await crowd.closed
    samples = await scrape(port)
    assert value(samples, "chatd_flood_disconnects_total") == 1
    assert value(samples, "chatd_flood_refusals_total") == 1

    server.room.gate.flood.reconfigure(server.room.config.replace(lines_per_second=0))
    sock = never_reading_socket(server.ports["line"])
    while len(server.room.members.sessions) < 3:
        await pause(0.01)
    await flood_until_dropped(server, talker, listener, sock, log)
    samples = await scrape(port)
    assert value(samples, "chatd_slow_reader_drops_total", door="line") == 1


async def line_client_refused(port: int) -> str:
    """What a connection over the per-address cap is told before it is closed."""
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory

    from tests.support import LineClient

    client = LineClient()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(lambda: client)
    )
    await client.closed
    return "\n".join(client.lines)


@pytest_twisted.ensureDeferred
async def test_healthz_says_503_while_the_database_is_unreachable(serve, outage, pg_url):
    proxy = outage(pg_url)
    server = await serve(doors=("web", "metrics"), storage_url=proxy.url, health_timeout=3.0)
    for door in ("metrics", "web"):  # the load balancer may ask either port
        code, _, body = await get(f"http://127.0.0.1:{server.ports[door]}/healthz")
        assert (code, body) == (200, "ok\n")
    proxy.cut()
    code, _, body = await get(f"http://127.0.0.1:{server.ports['metrics']}/healthz")
    assert code == 503
    assert body.startswith("database: ") and "unreachable" in body
    # The public port names the part, not the database's address.
    code, _, body = await get(f"http://127.0.0.1:{server.ports['web']}/healthz")
    assert (code, body) == (503, "database: not answering\n")
    proxy.restore()
    code, _, body = await get(f"http://127.0.0.1:{server.ports['metrics']}/healthz")
    assert (code, body) == (200, "ok\n")


@pytest_twisted.ensureDeferred
async def test_healthz_names_a_database_that_does_not_answer_in_time(serve):
    server = await serve(doors=("metrics",), health_timeout=0.2)
    # The store's one worker thread is busy: the check waits behind the work.
    blocker = server.room.store._run(lambda conn: __import__("time").sleep(1.0))
    code, _, body = await get(f"http://127.0.0.1:{server.ports['metrics']}/healthz")
    assert (code, body) == (503, "database: no answer within 0.2 s\n")
    await blocker
    code, _, body = await get(f"http://127.0.0.1:{server.ports['metrics']}/healthz")
    assert (code, body) == (200, "ok\n")


@pytest_twisted.ensureDeferred
async def test_the_page_is_served_with_security_headers_and_no_versions(serve):
    server = await serve(doors=("web",))
    code, headers, body = await get(f"http://127.0.0.1:{server.ports['web']}/")
    assert code == 200 and "<title>chatd</title>" in body
    policy = headers[b"Content-Security-Policy"][0].decode()
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert headers[b"X-Content-Type-Options"] == [b"nosniff"]
    assert headers[b"Referrer-Policy"] == [b"no-referrer"]
    assert b"Server" not in headers
    # The page has nothing inline the policy would block.
    assert "<script>" not in body and "<style" not in body and " style=" not in body
    code, headers, _ = await get(f"http://127.0.0.1:{server.ports['web']}/static/app.js")
    assert code == 200 and b"Server" not in headers
    assert headers[b"X-Content-Type-Options"] == [b"nosniff"]
    # Autobahn's handshake answer names no version either.
    handshake = await raw_handshake(server.ports["web"])
    assert handshake.startswith(b"HTTP/1.1 101")
    assert b"\r\nserver:" not in handshake.lower()


async def raw_handshake(port: int) -> bytes:
    from tests.support import raw_client

    client = await raw_client(port)
    client.send(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    for _ in range(100):
        if b"\r\n\r\n" in client.received:
            break
        await pause(0.02)
    client.transport.loseConnection()
    return client.received.split(b"\r\n\r\n")[0] + b"\r\n"


@pytest.mark.parametrize("door", ["line", "web"])
def test_every_default_door_endpoint_has_a_large_backlog(door):
    from chatd.config import BACKLOG, Config

    assert getattr(Config(), door).endswith(f":backlog={BACKLOG}") and BACKLOG >= 1024


async def health_of(port: int, want: int, within: float = 30.0) -> str:
    """The /healthz answer once it is C{want} (a node finds Redis again after a backoff)."""
    for _ in range(int(within / 0.2)):
        code, _, body = await get(f"http://127.0.0.1:{port}/healthz")
        if code == want:
            return body
        await pause(0.2)
    raise AssertionError(f"/healthz stayed {code}: {body}")


@pytest_twisted.ensureDeferred
async def test_in_a_cluster_redis_is_checked_and_its_latency_counted(
    serve,
    outage,
    tmp_path,
    pg_url,
    redis_prefix,
):
    proxy = outage(REDIS_URL)
    shared = {"storage_url": pg_url, "redis_prefix": redis_prefix, "presence_ttl": 2.0}
    a = await serve(
        data_dir=tmp_path / "a", doors=("line", "metrics"), redis_url=proxy.url, **shared
    )
    b = await serve(data_dir=tmp_path / "b", doors=("line",), redis_url=REDIS_URL, **shared)
    port = a.ports["metrics"]
    assert await health_of(port, 200) == "ok\n"
    alice, bob = await line_client(a.ports["line"]), await line_client(b.ports["line"])
    for _ in range(100):  # until both nodes hear each other
        alice.send("ping")
        try:
            await bob.expect(r": ping$", timeout=0.2)
            break
        except AssertionError:
            pass
    samples = await scrape(port)
    assert value(samples, "chatd_bus_publish_seconds_count") >= 1
    assert value(samples, "chatd_bus_gaps_total") == 0

    proxy.cut()  # node a loses Redis; its database is fine
    body = await health_of(port, 503)
    assert body.startswith("redis: ") and "database" not in body
    proxy.restore()
    assert await health_of(port, 200) == "ok\n"
    bob.send("after")
    await alice.expect(r": after$", timeout=30)
    # The stream replays what node a missed: a cut Redis is no gap (one is counted only
    # when the stream lost events: trimmed, or Redis restarted empty).
    assert value(await scrape(port), "chatd_bus_gaps_total") == 0
