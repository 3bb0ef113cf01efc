"""The Redis bus against a real Redis on 127.0.0.1:6379 (skipped when there is none,
except under CI, where a missing Redis fails the run)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

from chatd.bus import Undelivered
from chatd.bus.redis import RedisBus
from chatd.bus.wire import from_wire, to_wire
from chatd.config import redis_target
from chatd.events import Message, Notice
from tests.faultproxy import FaultProxy
from tests.support import pause

HOST, PORT = "127.0.0.1", 6379
TIMEOUT = 10.0


def _reachable() -> bool:
    try:
        socket.create_connection((HOST, PORT), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def prefix():
    """A fresh key and channel prefix, so runs and other users of this Redis never meet."""
    if not _reachable():
        why = f"no Redis on {HOST}:{PORT} (start one: redis-server --port {PORT} --save '')"
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI is set")
        pytest.skip(why)
    return f"chatd-test-{uuid.uuid4().hex}"


@pytest_twisted.async_yield_fixture
async def admin():
    """A plain connection for what the test itself asks of Redis."""
    redis = await txredisapi.Connection(HOST, PORT, reconnect=False)
    yield redis
    await redis.disconnect()


@pytest_twisted.async_yield_fixture
async def buses(prefix):
    """Makes started buses on a shared prefix; stops them all afterwards."""
    made: list[RedisBus] = []

    def make(node: str, **kw: Any) -> RedisBus:
        kw.setdefault("clock", reactor)
        kw.setdefault("endpoint", TCP4ClientEndpoint(reactor, HOST, PORT))
        bus = RedisBus(
            prefix=prefix,
            # Unique, so cutting "chatd-sub-<node>" never hits a connection of an earlier test
            # that is still closing.
            node=f"{node}-{uuid.uuid4().hex[:8]}",
            **kw,
        )
        bus.startService()
        made.append(bus)
        return bus

    yield make
    for bus in made:
        if bus.running:
            await bus.stopService()


@pytest.fixture
def drops():
    """The counts in the bus's warnings about events it dropped while Redis was away."""
    counts: list[int] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "chatd.bus.redis" and "dropped" in event:
            counts.append(event["dropped"])

    globalLogPublisher.addObserver(observe)
    yield counts
    globalLogPublisher.removeObserver(observe)


async def down(bus: RedisBus) -> bool:
    """Whether the bus's publisher failed to connect (it was up: this waits for an attempt)."""
    try:
        await bus.online()
    except (ConnectionRefusedError, txredisapi.ConnectionError):  # a reconnect, or the cut
        down = True
    else:
        down = False
    # Out of the ClientService's failure handling, which must not be entered again.
    await pause(0)
    return down


async def until(check: Callable[[], Any], what: str) -> None:
    """Wait (polling, with a deadline so a broken bus fails instead of hanging) for check()."""
    for _ in range(int(TIMEOUT / 0.02)):
        if await defer.maybeDeferred(check):
            return
        await pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def collect(bus: RedisBus) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    bus.subscribe(lambda kind, payload: got.append((kind, payload)))
    return got


async def kill(admin: Any, client_name: str) -> None:
    """Cut one named connection of a bus, as a network failure or Redis restart would."""
    for line in (await admin.execute_command("CLIENT", "LIST")).splitlines():
        fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
        if fields.get("name") == client_name:
            await admin.execute_command("CLIENT", "KILL", "ID", fields["id"])
            return
    raise AssertionError(f"no Redis client named {client_name}")


@pytest_twisted.ensureDeferred
async def test_two_nodes_exchange_events_in_order(buses):
    a, b = buses("a"), buses("b")
    got_a, got_b = collect(a), collect(b)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to subscribe")

    sent = [
        a.publish("event", to_wire(Message(i, 1000.0 + i, "ann", f"line {i}")))
        for i in range(1, 101)
    ]
    await defer.gatherResults(sent)
    await b.publish("event", to_wire(Notice("bob joined")))
    await until(lambda: len(got_b) == 100 and len(got_a) == 1, "the events to arrive")

    assert {kind for kind, _ in got_b} == {"event"}
    assert [(m.id, m.text) for m in (from_wire(p) for _, p in got_b)] == [
        (i, f"line {i}") for i in range(1, 101)
    ]
    assert [from_wire(p).text for _, p in got_a] == ["bob joined"]  # and not its own lines
    assert a.last_id == b.last_id == 100


@pytest_twisted.ensureDeferred
async def test_presence_lists_every_live_node_and_forgets_a_dead_one(buses):
    observer = buses("observer")
    notices = collect(observer)
    # A node whose clock never moves stops refreshing, as a SIGKILLed node would.
    dead = buses("dead", clock=task.Clock(), presence_ttl=0.5)
    live = buses("live", presence_ttl=0.5)
    await until(lambda: observer.subscriptions == 1, "the observer to subscribe")

    await dead.set_present(["Zed"])
    await live.set_present(["bob", "Amy"])
    assert await observer.online() == ["Amy", "bob", "Zed"]
    await until(lambda: len(notices) == 2, "presence notices")
    assert sorted(p["names"] for kind, p in notices if kind == "presence") == [
        ["Amy", "bob"],
        ["Zed"],
    ]

    await until(lambda: observer.online().addCallback(lambda n: "Zed" not in n), "Zed to expire")
    assert await observer.online() == ["Amy", "bob"]  # kept alive by its refreshes

    await live.stopService()  # a clean stop says goodbye at once
    assert await observer.online() == []


@pytest_twisted.ensureDeferred
async def test_presence_says_who_is_on_which_node(buses):
    a, b = buses("a"), buses("b")
    await a.set_present(["Ann"])
    await b.set_present(["bob", "Ann"])
    assert await a.by_node() == {a.node: ["Ann"], b.node: ["Ann", "bob"]}


@pytest_twisted.ensureDeferred
async def test_a_cut_reader_reads_on_from_where_it_was(buses, admin):
    a = buses("a", retry=lambda attempt: 0.3)
    b = buses("b", retry=lambda attempt: 0.3)
    got, gaps = collect(b), []
    b.on_gap(gaps.append)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")
    await a.publish("event", to_wire(Message(7, 1.0, "ann", "before")))
    await until(lambda: len(got) == 1, "the first message")

    await kill(admin, f"chatd-sub-{b.node}")
    # Published while b's reader is away (it waits 0.3 s to reconnect).
    await a.publish("event", to_wire(Message(8, 1.5, "ann", "whisper", "bob")))
    await a.publish("event", to_wire(Message(9, 2.0, "ann", "after")))
    await until(lambda: len(got) == 3, "what was published meanwhile")
    assert b.subscriptions == 2
    assert [from_wire(p).text for _, p in got] == ["before", "whisper", "after"]
    assert gaps == []  # nothing was lost: no need to read the store
    assert b.last_id == 9


@pytest_twisted.ensureDeferred
async def test_a_cut_publisher_still_delivers(buses, admin):
    a = buses("a", retry=lambda attempt: 0.1)
    b = buses("b")
    got = collect(b)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to subscribe")
    await a.publish("event", to_wire(Notice("warm")))  # the publisher is connected

    await kill(admin, f"chatd-pub-{a.node}")
    for i in range(3):  # onto the cut connection, or waiting for the next one
        a.publish("event", to_wire(Notice(f"still here {i}")))
    await until(lambda: len(got) == 4, "the messages sent across the cut")
    assert [from_wire(p).text for _, p in got] == ["warm"] + [f"still here {i}" for i in range(3)]


def undelivered(results: list[Any]) -> Callable[[Any], None]:
    """An errback that counts events the bus reports it dropped."""

    def failed(failure: Any) -> None:
        failure.trap(Undelivered)
        results.append(failure.value)

    return failed


@pytest_twisted.async_yield_fixture
async def proxies():
    """Fault proxies in front of the test Redis; all cut afterwards."""
    made: list[FaultProxy] = []

    async def make() -> FaultProxy:
        proxy = FaultProxy(reactor, HOST, PORT)
        await proxy.start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        await proxy.cut()


@pytest_twisted.ensureDeferred
async def test_an_outage_keeps_the_newest_publishes_and_sends_them_in_order(buses, proxies, drops):
    proxy = await proxies()
    endpoint = TCP4ClientEndpoint(reactor, HOST, proxy.port)
    a = buses("a", endpoint=endpoint, retry=lambda attempt: 0.05, max_pending=5)
    b = buses("b")
    got, lost = collect(b), []
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")
    await a.publish("event", to_wire(Notice("before")))
    await until(lambda: len(got) == 1, "the first notice")

    await proxy.cut()  # a loses Redis; it notices on its next reactor turn
    for i in range(12):  # onto the dying connection: they wait again, the newest 5 of them
        a.publish("event", to_wire(Notice(f"during {i}"))).addErrback(undelivered(lost))
    await until(lambda: down(a), "a to find Redis gone")
    assert len(a._queue) == 5
    await until(lambda: down(a), "a failed reconnect")
    for i in range(12, 20):
        a.publish("event", to_wire(Notice(f"during {i}"))).addErrback(undelivered(lost))
        assert len(a._queue) <= 5
    assert len(a._queue) == 5
    assert len(lost) == 15  # each sender of a dropped event can be told
    assert drops == []  # the count is known once Redis is back

    await proxy.heal()
    await until(lambda: len(got) == 6, "the kept events")
    kept = [f"during {i}" for i in range(15, 20)]  # the newest, in order
    assert [from_wire(p).text for _, p in got] == ["before", *kept]
    assert drops == [15]  # once for the whole outage
    await until(lambda: not a._queue, "Redis to confirm them")

    await a.publish("event", to_wire(Notice("after")))
    await until(lambda: len(got) == 7, "a notice after the outage")
    assert drops == [15]
    assert len(lost) == 15


@pytest_twisted.ensureDeferred
async def test_whispers_of_an_outage_reach_a_node_that_reconnects_later(buses, proxies):
    """The fault of pub/sub: the node back first published to nobody, as the other was not
    subscribed yet. With the stream, the later one reads what it missed."""
    proxy_a, proxy_b = await proxies(), await proxies()
    a = buses("a", endpoint=TCP4ClientEndpoint(reactor, HOST, proxy_a.port), retry=lambda n: 0.1)
    b = buses("b", endpoint=TCP4ClientEndpoint(reactor, HOST, proxy_b.port), retry=lambda n: 0.1)
    got, gaps = collect(b), []
    b.on_gap(gaps.append)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")

    await proxy_a.cut()
    await proxy_b.cut()
    sent = [
        a.publish("event", to_wire(Message(100 + i, 1.0, "ann", f"psst {i}", "bob")))
        for i in range(5)
    ]
    sent.append(a.publish("event", to_wire(Notice("carl is now known as carla"))))
    await proxy_a.heal()
    await defer.gatherResults(sent)  # all in Redis, while b is still cut off
    assert got == []

    await proxy_b.heal()
    await until(lambda: len(got) == 6, "b to read what it missed")
    texts = [from_wire(p).text for _, p in got]
    assert texts == [f"psst {i}" for i in range(5)] + ["carl is now known as carla"]
    assert gaps == []
    await a.publish("event", to_wire(Notice("later")))
    await until(lambda: len(got) == 7, "the next event")
    assert [from_wire(p).text for _, p in got].count("psst 0") == 1


@pytest_twisted.ensureDeferred
async def test_a_node_started_while_redis_is_away_reads_that_outages_events_once(buses, proxies):
    """Starting at the stream's end when Redis comes back would skip what the other nodes
    published meanwhile, for this node's users too (a whisper to someone who just joined)."""
    a = buses("a")
    proxy_b = await proxies()
    await proxy_b.cut()
    b = buses("b", endpoint=TCP4ClientEndpoint(reactor, HOST, proxy_b.port), retry=lambda n: 0.1)
    got, gaps = collect(b), []
    b.on_gap(gaps.append)
    await until(lambda: a.subscriptions == 1, "a to read")
    await pause(0.3)  # b tried, and failed, to reach Redis
    assert b.subscriptions == 0
    for i in range(3):
        await a.publish("event", to_wire(Message(100 + i, 1.0, "ann", f"psst {i}", "bob")))

    await proxy_b.heal()
    await until(lambda: len(got) == 3, "b to read what was published before it got through")
    assert [from_wire(p).text for _, p in got] == [f"psst {i}" for i in range(3)]
    assert gaps == []
    await a.publish("event", to_wire(Notice("later")))
    await until(lambda: len(got) == 4, "the next event")
    assert [from_wire(p).text for _, p in got] == [f"psst {i}" for i in range(3)] + ["later"]


@pytest_twisted.ensureDeferred
async def test_a_node_catching_up_hears_only_the_newest_presence_of_each_node(buses, proxies):
    """Presence replaces presence: replaying a long outage's worth of them would only make
    the Room ask who is online again and again."""
    proxy = await proxies()
    a = buses("a")
    b = buses("b", endpoint=TCP4ClientEndpoint(reactor, HOST, proxy.port), retry=lambda n: 0.1)
    got = collect(b)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")

    await proxy.cut()
    for i in range(30):
        await a.set_present([f"user{j}" for j in range(i + 1)])
    await a.publish("event", to_wire(Notice("still here")))
    await proxy.heal()
    await until(lambda: any(kind == "event" for kind, _ in got), "the notice")
    assert [kind for kind, _ in got] == ["presence", "event"]
    assert len(got[0][1]["names"]) == 30  # the newest


@pytest_twisted.ensureDeferred
async def test_joins_and_leaves_in_an_outage_do_not_push_whispers_out(buses, proxies):
    """Only the newest presence waits for Redis: it replaces the ones before it."""
    proxy = await proxies()
    endpoint = TCP4ClientEndpoint(reactor, HOST, proxy.port)
    a = buses("a", endpoint=endpoint, retry=lambda n: 0.05, max_pending=5)
    b = buses("b")
    got, lost = collect(b), []
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")

    await proxy.cut()
    await until(lambda: down(a), "a to find Redis gone")
    for i in range(3):
        a.publish("event", to_wire(Message(100 + i, 1.0, "ann", f"psst {i}", "bob"))).addErrback(
            undelivered(lost)
        )
    presences = [a.set_present([f"user{j}" for j in range(i + 1)]) for i in range(20)]
    await pause(0.1)
    assert len(a._queue) == 4  # three whispers and the newest presence
    await proxy.heal()
    await defer.gatherResults(presences)
    await until(lambda: len(got) == 4, "the whispers and the presence")
    assert [p.get("text") for _, p in got[:3]] == [f"psst {i}" for i in range(3)]
    assert got[3][0] == "presence" and len(got[3][1]["names"]) == 20
    assert lost == []


@pytest_twisted.ensureDeferred
async def test_a_frozen_redis_delivers_everything_once_after_it_thaws(buses, proxies):
    """Redis stops answering (connections open, no replies): both nodes drop their silent
    connections and make new ones, which hang too; when Redis answers again, everything
    published meanwhile arrives once, although some of it may have been written twice."""
    proxy = await proxies()
    endpoint = TCP4ClientEndpoint(reactor, HOST, proxy.port)
    quick = {"retry": lambda n: 0.1, "block": 0.2, "reply_timeout": 0.5}
    a = buses("a", endpoint=endpoint, **quick)
    b = buses("b", endpoint=endpoint, **quick)
    got = collect(b)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")

    proxy.freeze()
    for i in range(10):
        a.publish("event", to_wire(Message(i + 1, 1.0, "ann", f"line {i}")))
        a.publish("event", to_wire(Message(100 + i, 1.0, "ann", f"psst {i}", "bob")))
    await pause(1.5)  # past the reply timeout: connections were dropped and made again
    await proxy.heal()
    await until(lambda: len(got) == 20, "everything published during the freeze")
    await pause(0.5)  # no copies trickle in after
    texts = [from_wire(p).text for _, p in got]
    assert sorted(texts) == sorted(
        [f"line {i}" for i in range(10)] + [f"psst {i}" for i in range(10)]
    )
    assert texts == [t for i in range(10) for t in (f"line {i}", f"psst {i}")]  # in order


@pytest_twisted.ensureDeferred
async def test_events_written_twice_for_lost_answers_arrive_once(buses, proxies, admin):
    """Redis does what a publisher asks, but its answers are lost: the publisher sends the
    events again on its next connection, and the readers skip the copies."""
    proxy = await proxies()
    quick = {"retry": lambda n: 0.1, "reply_timeout": 0.5}
    a = buses("a", endpoint=TCP4ClientEndpoint(reactor, HOST, proxy.port), **quick)
    b = buses("b")
    got = collect(b)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")

    proxy.freeze(replies_only=True)
    sent = [a.publish("event", to_wire(Notice(f"n {i}"))) for i in range(10)]
    await until(lambda: len(got) == 10, "the events, from their first writing")
    await pause(1.5)  # past the reply timeout: a writes them all again on its next connection
    await proxy.heal()
    await defer.gatherResults(sent)
    assert int(await admin.execute_command("XLEN", a.stream)) >= 20  # the copies are there
    await a.publish("event", to_wire(Notice("last")))
    await until(lambda: len(got) == 11, "the next event")
    assert [from_wire(p).text for _, p in got] == [f"n {i}" for i in range(10)] + ["last"]


@pytest_twisted.ensureDeferred
async def test_a_stream_trimmed_past_a_node_is_a_gap(buses, proxies, admin):
    proxy = await proxies()
    a = buses("a", backlog=10)
    b = buses("b", endpoint=TCP4ClientEndpoint(reactor, HOST, proxy.port), retry=lambda n: 0.1)
    got, gaps, warnings = collect(b), [], []
    b.on_gap(gaps.append)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")
    await a.publish("event", to_wire(Message(5, 1.0, "ann", "seen")))
    await until(lambda: len(got) == 1, "the first message")

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "chatd.bus.redis" and "may be lost" in event.get(
            "log_format", ""
        ):
            warnings.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        await proxy.cut()
        # Redis trims whole blocks of entries (100 by default), so go well past 10.
        await defer.gatherResults(
            [a.publish("event", to_wire(Notice(f"n {i}"))) for i in range(500)]
        )
        assert int(await admin.execute_command("XLEN", a.stream)) < 500
        await proxy.heal()
        await until(lambda: gaps, "the gap to be reported")
    finally:
        globalLogPublisher.removeObserver(observe)
    assert gaps == [5]  # b reads the public messages after id 5 from the store
    assert len(warnings) == 1
    await until(lambda: got[-1:] and from_wire(got[-1][1]).text == "n 499", "the newest")
    texts = [from_wire(p).text for _, p in got[1:]]
    assert texts == [f"n {i}" for i in range(500 - len(texts), 500)]  # what was kept, in order


def test_a_node_stopping_during_an_outage_says_what_it_dropped(drops):
    memory = MemoryReactorClock()  # where connecting to Redis never ends
    bus = RedisBus(memory, TCP4ClientEndpoint(memory, HOST, PORT), max_pending=3)
    bus.startService()
    lost: list[Any] = []
    for i in range(10):
        bus.publish("event", to_wire(Notice(f"{i}"))).addErrback(undelivered(lost))
    memory.advance(60)
    assert len(bus._queue) == 3
    assert drops == []
    assert len(lost) == 7

    bus.stopService()
    assert drops == [10]  # 7 past the bound, and the 3 kept ones, never sent
    assert len(lost) == 10


# -- logging in: a Redis of the test's own, with a password, an ACL user and TLS -------------


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    """A redis-server with a password (user chatd: secret2; default user: secret), on a
    plain port and a TLS port, its certificate's authority in the directory C{ca}."""
    server = shutil.which("redis-server")
    if server is None or shutil.which("openssl") is None:
        why = "redis-server or openssl is not installed (apt-get install redis-server openssl)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI is set")
        pytest.skip(why)
    where = tmp_path_factory.mktemp("redis")
    ca = where / "ca"
    ca.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(where / "key.pem"), "-out", str(ca / "cert.pem"),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port, tls_port = free_port(), free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", "secret", "--user", "chatd", "on", ">secret2", "~*", "&*", "+@all",
         "--tls-port", str(tls_port), "--tls-cert-file", str(ca / "cert.pem"),
         "--tls-key-file", str(where / "key.pem"), "--tls-auth-clients", "no",
         "--dir", str(where)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection((HOST, port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield {"port": port, "tls_port": tls_port, "ca": ca}
    process.terminate()
    process.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def bus_for(buses: Callable[..., RedisBus], url: str, node: str, **kw: Any) -> RedisBus:
    """A bus configured from C{url}, as chatd configures it from C{redis_url}."""
    target = redis_target(url)
    return buses(
        node,
        endpoint=clientFromString(reactor, target.endpoint),
        username=target.username,
        password=target.password,
        db=target.db,
        **kw,
    )


@pytest.fixture
def refusals():
    """The bus's error lines about Redis refusing it."""
    lines: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "chatd.bus.redis" and "refused" in event.get(
            "log_format", ""
        ):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.ensureDeferred
async def test_nodes_log_in_with_a_password_a_user_and_a_database(buses, private_redis):
    port = private_redis["port"]
    a = bus_for(buses, f"redis://chatd:secret2@{HOST}:{port}/3", "a")
    b = bus_for(buses, f"redis://:secret@{HOST}:{port}/3", "b")
    got = collect(b)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")
    await a.publish("event", to_wire(Notice("hello from an ACL user")))
    await until(lambda: got, "the notice")
    assert from_wire(got[0][1]).text == "hello from an ACL user"
    await a.set_present(["Ann"])
    assert await b.online() == ["Ann"]

    admin = await txredisapi.Connection(HOST, port, reconnect=False, password="secret", dbid=3)
    try:
        assert await admin.exists(a.stream)  # in database 3
        # A new connection logs in again, and reads on in database 3.
        await kill(admin, f"chatd-sub-{b.node}")
        await a.publish("event", to_wire(Notice("after the reconnection")))
        await until(lambda: len(got) == 3, "the notice after the reconnection")
        assert from_wire(got[-1][1]).text == "after the reconnection"
        assert b.subscriptions == 2
        await admin.select(0)
        assert not await admin.exists(a.stream)
    finally:
        await admin.disconnect()


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_is_one_clear_line_however_often_it_is_tried(
    buses, private_redis, refusals
):
    port = private_redis["port"]
    bus = bus_for(buses, f"redis://:wrong@{HOST}:{port}", "a", retry=lambda n: 0.05)
    await pause(1.0)  # many attempts
    assert bus.subscriptions == 0
    assert len(refusals) == 1, refusals
    assert "check the user and password in redis_url" in refusals[0]
    assert "wrong" not in refusals[0].replace("WRONGPASS", "")  # the password is not logged


@pytest_twisted.ensureDeferred
async def test_a_missing_password_is_a_clear_line_too(buses, private_redis, refusals):
    bus = bus_for(buses, f"redis://{HOST}:{private_redis['port']}", "a", retry=lambda n: 0.05)
    await until(lambda: refusals, "the refusal")
    assert "NOAUTH" in refusals[0] and "redis_url" in refusals[0]
    assert bus.subscriptions == 0


@pytest_twisted.ensureDeferred
async def test_nodes_talk_over_tls(buses, private_redis):
    url = f"rediss://:secret@127.0.0.1:{private_redis['tls_port']}?ca={private_redis['ca']}"
    a, b = bus_for(buses, url, "a"), bus_for(buses, url, "b")
    got = collect(b)
    await until(lambda: a.subscriptions == b.subscriptions == 1, "both to read")
    await a.publish("event", to_wire(Message(1, 1.0, "ann", "over TLS")))
    await until(lambda: got, "the message")
    assert from_wire(got[0][1]).text == "over TLS"
