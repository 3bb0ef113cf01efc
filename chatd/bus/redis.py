"""The bus over a Redis stream, for several chatd nodes serving one room.

Every event is one entry of the stream C{<prefix>:events}, added with XADD and trimmed to
about C{backlog} entries. Each node reads the stream with XREAD BLOCK from the id of the
last entry it has seen: every node sees every event, in the one order of the stream (no
consumer groups: they share entries out), and skips its own. A node that lost Redis for a
while reads what it missed once it is back, each entry once, since the ids only grow;
pub/sub, before, delivered only to the nodes listening at that moment, so a node whose
connection came back first sent its queued whispers to nobody.

If the stream no longer holds what a node missed (trimmed past its last id, or Redis
restarted), that is a gap: the Room reads the public messages from the store, and a warning
says that private events of the outage may be lost.

Two connections, because a blocking XREAD holds its connection: one reads, one publishes
and keeps presence. Each is a L{ClientService}, so a lost connection is retried with
backoff on the injected clock; every new connection logs in first (AUTH, SELECT), and one
that stops answering is dropped after a timeout and made again.

Publishing goes through one FIFO of payloads: those written to the current connection and
not yet answered, then those waiting for a connection. While Redis is away at most
C{max_pending} wait, the newest: an outage under load must not grow memory without limit.
The Deferred of each dropped one fails with L{Undelivered}, so the sender can be told. A
payload on a connection that died before Redis answered goes again on the next one; the
stream may then hold it twice, and readers skip the copy (each event carries its sender's
run and sequence number).

Presence: each node keeps C{<prefix>:presence:<node>} = a JSON list of its users, set with
a TTL and refreshed every third of it, so a node killed without a goodbye drops out of
L{RedisBus.online} within one TTL.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.bus import PRESENCE, Bus, Undelivered

log = Logger(namespace="chatd.bus.redis")
GOODBYE_TIMEOUT = 2.0  # seconds a stopping node waits to delete its presence key

PRESENCE_TTL = 30.0  # seconds a node's presence outlives its last refresh
REPLY_TIMEOUT = 10.0  # seconds; a connection silent for longer is made again
BLOCK = 5.0  # seconds one XREAD waits for new entries
READ_BATCH = 500  # entries one XREAD returns at most
RETRY = backoffPolicy(initialDelay=0.5, maxDelay=10.0)  # seconds between reconnects
MAX_PENDING = 2000  # events kept while Redis is away
BACKLOG = 10000  # entries the stream keeps, about (MAXLEN ~)
RUNS_KEPT = 1000  # other nodes' runs remembered for skipping copies


class _ClientService(ClientService):
    """Without a log line per reconnection attempt: the bus logs an outage once."""

    _log = Logger(observer=lambda event: None)


class RedisLoginError(Exception):
    """Redis refused chatd's credentials or database number."""


class RedisBus(Bus):
    """A L{Bus} on Redis; C{prefix} keeps clusters (and test runs) sharing a Redis apart.

    @param node: this node's name in Redis (client names, presence keys); unique per node.
    @param max_pending: events kept while the publisher is disconnected; past it the
        oldest are dropped (their Deferreds fail with L{Undelivered}).
    @param backlog: entries the stream keeps for nodes that lost Redis, about.
    @param username: @param password: @param db: how every connection logs in.
    @param block: @param reply_timeout: seconds an XREAD waits for entries, and a
        connection for an answer before it is made again.
    @param where: Redis's address (without a password), for log lines.
    """

    def __init__(
        self,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        prefix: str = "chatd",
        node: str | None = None,
        presence_ttl: float = PRESENCE_TTL,
        retry: Callable[[int], float] = RETRY,
        max_pending: int = MAX_PENDING,
        backlog: int = BACKLOG,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        block: float = BLOCK,
        reply_timeout: float = REPLY_TIMEOUT,
        where: str = "Redis",
    ) -> None:
        super().__init__()
        self.where = where
        self._backoff = retry
        self._down = False  # an outage is being logged
        self.node = node or uuid.uuid4().hex
        if not self.node.isprintable() or " " in self.node:
            raise ValueError(f"a node name has no spaces or control characters: {self.node!r}")
        self.stream = f"{prefix}:events"
        self.presence_key = f"{prefix}:presence:{self.node}"
        self._presence_keys = f"{prefix}:presence:*"
        self.presence_ttl = presence_ttl
        self._clock = clock
        self._login_args = (username, password, db)
        self.subscriptions = 0  # reader connections made so far
        self.max_pending = max_pending
        self.backlog = backlog
        self._block_ms = max(1, int(block * 1000))
        # Payloads to publish, oldest first, each with the Deferred publish() returned: the
        # first _sent are on the current connection, awaiting Redis's answer; the rest wait
        # for a connection.
        self._queue: deque[tuple[str, defer.Deferred[None], str]] = deque()  # data, d, kind
        self._sent = 0
        self._waiting = False  # for a connection, to send the rest
        self._dropped = 0  # since the last warning
        self._run = uuid.uuid4().hex[:16]  # this process's events, for readers' skipping
        self._seq = 0
        self._seen: dict[str, int] = {}  # run -> the highest sequence number read from it
        self._cursor: str | None = None  # the id of the last stream entry read
        self._started_ms = 0  # when this node started (ms), a stream id's first part
        self._late = False  # Redis did not answer when this node started
        self._redis_run: str | None = None  # Redis's run_id, to notice a restart
        self._refused: str | None = None  # the login error already logged
        reader = Factory.forProtocol(
            partial(
                txredisapi.RedisProtocol,
                convertNumbers=False,
                replyTimeout=block + reply_timeout,
            )
        )
        publisher = Factory.forProtocol(
            partial(txredisapi.RedisProtocol, convertNumbers=False, replyTimeout=reply_timeout)
        )
        # Not a "Starting/Stopping factory" log line per reconnect attempt while Redis is
        # away: besides the noise, a SIGTERM landing in Twisted's log lock deadlocks twistd.
        reader.noisy = publisher.noisy = False
        self._sub = _ClientService(
            endpoint, reader, self._retry, clock=clock, prepareConnection=self._start_reading
        )
        self._pub = _ClientService(
            endpoint,
            publisher,
            self._retry,
            clock=clock,
            prepareConnection=lambda p: defer.ensureDeferred(self._login(p, "pub")),
        )
        self._refresher = task.LoopingCall(self._refresh)
        self._refresher.clock = clock

    # -- service ----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._started_ms = int(self._clock.seconds() * 1000)
        self._sub.startService()
        self._pub.startService()
        self._refresher.start(self.presence_ttl / 3, now=True)

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        self._trim(0)  # what still waits for a connection will not be sent
        self._warn_dropped()
        if self._refresher.running:
            self._refresher.stop()
        # Saying goodbye is a courtesy to the other nodes: the TTL removes the key anyway.
        goodbye = self._pub.whenConnected()
        if goodbye.called:
            goodbye.addCallback(lambda p: p.delete(self.presence_key))
            # A Redis that stopped answering must not keep the node from stopping.
            goodbye.addTimeout(GOODBYE_TIMEOUT, self._clock)
            goodbye.addErrback(lambda f: log.info("no goodbye: {e}", e=f.getErrorMessage()))
            goodbye.addCallback(lambda _: self._pub.stopService())
        else:
            goodbye.addErrback(lambda f: None)  # cancelled by stopping
            goodbye = self._pub.stopService()
        return defer.gatherResults([goodbye, self._sub.stopService()])

    def _retry(self, attempt: int) -> float:
        """A connection failed (or was lost): log the outage once; wait before the next."""
        if self._cursor is None:
            self._late = True  # the first connection comes after events it must read
        if not self._down and self.running:
            self._down = True
            log.warn(
                "Redis at {where} is unreachable; retrying. Meanwhile this node keeps its"
                " events for the other nodes (the newest {kept}), and Redis keeps theirs",
                where=self.where,
                kept=self.max_pending,
            )
        return self._backoff(attempt)

    def _up(self) -> None:
        if self._down:
            self._down = False
            log.info("Redis at {where} answers again", where=self.where)

    async def _login(self, redis: Any, role: str) -> None:
        """Make a new connection ready: AUTH, SELECT, and a name (C{CLIENT LIST} shows which
        node and role it is). A refusal is logged once, in one line, until a login works."""
        await redis.whenConnected()
        username, password, db = self._login_args
        try:
            try:
                if password is not None:
                    await redis.execute_command("AUTH", *filter(None, [username]), password)
                if db:
                    await redis.execute_command("SELECT", db)
                await redis.execute_command("CLIENT", "SETNAME", f"chatd-{role}-{self.node}")
            except txredisapi.ResponseError as e:
                raise RedisLoginError(_login_advice(str(e))) from None
        except Exception as e:
            redis.transport.abortConnection()  # the ClientService tries again, with backoff
            if isinstance(e, RedisLoginError) and str(e) != self._refused:
                self._refused = str(e)
                log.error("Redis refused this node: {why}", why=e)
            raise
        if self._refused is not None:
            log.info("Redis accepts this node again")
            self._refused = None
        self._up()

    # -- reading ----------------------------------------------------------------------------

    def _start_reading(self, redis: Any) -> defer.Deferred[None]:
        async def ready() -> None:
            await self._login(redis, "sub")
            try:
                await self._find_place(redis)
            except Exception:
                redis.transport.abortConnection()  # the ClientService tries again
                raise
            self.subscriptions += 1
            defer.ensureDeferred(self._read(redis)).addErrback(
                lambda f: log.failure("reading the bus failed", f)
            )

        return defer.ensureDeferred(ready())

    async def _find_place(self, redis: Any) -> None:
        """Where to read from: the stream's end on the first connection (or, when Redis was
        away at start, the first entry added since this node started); after that, the last
        entry read, checking that the stream still holds what came after it."""
        try:
            redis_run = _field(await redis.execute_command("INFO", "server"), "run_id")
        except txredisapi.ResponseError:
            redis_run = None  # an ACL user without INFO: a restart shows as a trimmed stream
        stream = await _stream_info(redis, self.stream)
        if self._cursor is None:
            self._redis_run = redis_run
            if not self._late or not stream:
                self._cursor = stream.get("last-generated-id", "0-0") if stream else "0-0"
                return
            # Started while Redis was away: the other nodes' events of that outage were
            # meant for this node too. Stream ids start with Redis's time in ms, so this
            # assumes the clocks of the nodes and Redis agree (NTP) to within the outage.
            self._cursor = f"{self._started_ms}-0"
            if _deleted_since(stream, self._cursor):
                log.warn(
                    "Redis no longer holds all the events since this node started (over"
                    " {n}): public messages are read from the store; whispers, notices and"
                    " moderation changes of that time may be lost",
                    n=self.backlog,
                )
                self._gap()
            return
        restarted = redis_run != self._redis_run
        self._redis_run = redis_run
        trimmed = await _trimmed_past(redis, self.stream, stream, self._cursor)
        if restarted or trimmed:
            log.warn(
                "Redis no longer holds the events this node missed ({why}): public messages"
                " are read from the store; whispers, notices and moderation changes of the"
                " other nodes since then may be lost",
                why="it restarted" if restarted else f"over {self.backlog} since",
            )
            self._gap()

    async def _read(self, redis: Any) -> None:
        """Deliver what the stream gets, until the connection is lost (the ClientService
        makes the next one, which reads on from the same place)."""
        while True:
            try:
                reply = await redis.execute_command(
                    "XREAD",
                    "COUNT",
                    READ_BATCH,
                    "BLOCK",
                    self._block_ms,
                    "STREAMS",
                    self.stream,
                    self._cursor,
                )
            except txredisapi.ConnectionError:
                return  # lost, or silent past the timeout (then dropped)
            except txredisapi.ResponseError as e:
                log.error("Redis refused to read the bus: {e}", e=e)
                redis.transport.abortConnection()
                return
            for _stream, entries in reply or ():
                envelopes = [(entry_id, _envelope(fields)) for entry_id, fields in entries]
                # A node's presence replaces its last: of a batch (a node catching up after
                # an outage reads hundreds at once), only each node's newest counts.
                newest = {e["node"]: i for i, (_, e) in enumerate(envelopes) if _presence(e)}
                for i, (entry_id, envelope) in enumerate(envelopes):
                    self._cursor = entry_id
                    if not _presence(envelope) or newest.get(envelope["node"]) == i:
                        self._received(envelope)

    def _received(self, envelope: dict[str, Any] | None) -> None:
        try:
            node, kind, payload = envelope["node"], envelope["kind"], envelope["payload"]  # type: ignore[index]
            run, seq = str(envelope["run"]), int(envelope["seq"])  # type: ignore[index]
        except (TypeError, ValueError, KeyError):  # None, or not an event of ours
            log.warn("dropped a malformed bus entry: {envelope!r}", envelope=envelope)
            return
        if node == self.node or seq <= self._seen.get(run, 0):
            return  # our own, or a copy sent again after a lost answer
        self._seen.pop(run, None)  # the most recently heard runs last, so the oldest go
        self._seen[run] = seq
        if len(self._seen) > RUNS_KEPT:
            del self._seen[next(iter(self._seen))]
        self._deliver(kind, payload)

    # -- publishing -------------------------------------------------------------------------

    def publish(self, kind: str, payload: dict[str, Any]) -> defer.Deferred[None]:
        """Add C{payload} to the stream now, or once the connection is back; fires when
        Redis has it, fails with L{Undelivered} if it is dropped first."""
        self._track(payload)
        self._seq += 1
        envelope = {"node": self.node, "run": self._run, "seq": self._seq}
        d: defer.Deferred[None] = defer.Deferred()
        if kind == PRESENCE:
            self._supersede()
        self._queue.append((json.dumps({**envelope, "kind": kind, "payload": payload}), d, kind))
        self._flush()
        self._trim(self.max_pending)
        return d

    def _flush(self) -> None:
        """Send what waits, now if connected, else when the connection is back."""
        if self._waiting or self._sent == len(self._queue):
            return
        self._waiting = True
        self._pub.whenConnected().addCallbacks(self._send, self._not_sent)

    def _send(self, redis: Any) -> None:
        self._waiting = False
        self._warn_dropped()
        while self._sent < len(self._queue) and redis.connected:
            data, _, _ = self._queue[self._sent]
            d = redis.execute_command(
                "XADD", self.stream, "MAXLEN", "~", self.backlog, "*", "event", data
            )
            self._sent += 1
            d.addBoth(self._answered, self._clock.seconds())

    def _not_sent(self, failure: Failure) -> None:
        """Stopped while waiting for a connection: what waits will never be sent."""
        self._waiting = False
        failure.trap(defer.CancelledError)
        if not self.running:
            self._trim(0)
            self._warn_dropped()

    def _answered(self, result: Any, sent_at: float) -> None:
        """Redis answered the oldest payload on the connection, or the connection died."""
        if isinstance(result, Failure) and result.check(txredisapi.ConnectionError):
            if self._sent:  # the first of this connection's failures: all of them wait again
                self._sent = 0
                self._trim(self.max_pending)
                # The failure fires inside connectionLost, before the ClientService hears.
                self._clock.callLater(0, self._flush)
            return
        _, d, _ = self._queue.popleft()
        self._sent -= 1
        self.observe_latency(self._clock.seconds() - sent_at)
        if isinstance(result, Failure):
            self.errors += 1
            log.warn("Redis refused a bus event: {why}", why=result.getErrorMessage())
            d.errback(Undelivered(f"Redis refused it: {result.getErrorMessage()}"))
        else:
            d.callback(None)

    def _supersede(self) -> None:
        """A new presence replaces the ones still waiting for a connection: an outage full
        of joins and leaves must not push whispers out of the C{max_pending} kept."""
        waiting = list(self._queue)[self._sent :]
        for entry in [e for e in waiting if e[2] == PRESENCE]:
            self._queue.remove(entry)
            entry[1].callback(None)  # what it said is said, more up to date, by the next

    def _trim(self, keep: int) -> None:
        """Drop all but the newest C{keep} of the payloads waiting for a connection."""
        for _ in range(len(self._queue) - self._sent - keep):
            _, d, _ = self._queue[self._sent]
            del self._queue[self._sent]
            self._dropped += 1
            d.errback(Undelivered("Redis was unreachable for too long"))

    def _warn_dropped(self) -> None:
        """One warning per outage, once its count is known (back online, or stopping)."""
        if self._dropped:
            log.warn(
                "Redis was unreachable: {dropped} events for the other nodes were dropped"
                " (while it is, only the newest {kept} are kept). The other nodes read the"
                " public messages among them from the store; whispers, notices and moderation"
                " changes among them are lost",
                dropped=self._dropped,
                kept=self.max_pending,
            )
            self._dropped = 0

    def ping(self) -> defer.Deferred[None]:
        """Fires once Redis has answered a PING on the publishing connection."""
        d = self._pub.whenConnected(failAfterFailures=1)
        d.addCallback(lambda redis: redis.ping())
        return d.addCallback(lambda _: None)

    # -- presence ---------------------------------------------------------------------------

    def set_present(self, names: Iterable[str]) -> defer.Deferred[None]:
        self.present = sorted(names, key=str.casefold)
        names = {"names": self.present}

        def announce(refreshed: bool) -> defer.Deferred[None]:
            # A failed refresh fires inside the ClientService's own failure handling, which
            # publish() must not enter again: then publish on the next turn.
            if refreshed:
                d = self.publish(PRESENCE, names)
            else:
                d = task.deferLater(self._clock, 0, self.publish, PRESENCE, names)
            # A presence dropped in an outage is no loss: the key is refreshed, and read,
            # anyway.
            return d.addErrback(lambda f: f.trap(Undelivered) and None)

        return self._refresh().addCallback(announce)

    def _refresh(self) -> defer.Deferred[bool]:
        """Write this node's users with a fresh TTL; a failure waits for the next round.
        Fires with whether it was written."""
        data = json.dumps(self.present)
        ttl = max(1, int(self.presence_ttl * 1000))
        d = self._pub.whenConnected(failAfterFailures=1)
        d.addCallback(lambda p: p.set(self.presence_key, data, pexpire=ttl))
        d.addCallback(lambda _: True)
        return d.addErrback(self._not_refreshed)

    def _not_refreshed(self, failure: Failure) -> bool:
        if not self._down:  # else the outage is logged already
            log.warn("presence not refreshed: {e}", e=failure.getErrorMessage())
        return False

    def online(self) -> defer.Deferred[list[str]]:
        def union(where: dict[str, list[str]]) -> list[str]:
            names = {name for names in where.values() for name in names}
            return sorted(names, key=str.casefold)

        return self.by_node().addCallback(union)

    def by_node(self) -> defer.Deferred[dict[str, list[str]]]:
        async def collect() -> dict[str, list[str]]:
            redis = await self._pub.whenConnected(failAfterFailures=1)
            keys: list[str] = []
            cursor = 0
            while True:
                cursor, batch = await redis.scan(cursor, self._presence_keys, 200)
                keys.extend(batch)
                if int(cursor) == 0:
                    break
            found = {self.node: list(self.present)}
            start = len(self._presence_keys) - 1  # the key without its "*"
            for key, value in zip(keys, await redis.mget(keys) if keys else [], strict=True):
                try:
                    names = [str(n) for n in json.loads(value)]
                except (TypeError, ValueError):
                    continue  # expired between SCAN and MGET (None), or not ours
                node = str(key)[start:]
                if node != self.node:
                    found[node] = names
            return found

        return defer.ensureDeferred(collect())

    def answering(self) -> bool:
        return not self._down and self._refused is None


def _envelope(fields: list[Any]) -> dict[str, Any] | None:
    """The event of a stream entry (C{[field, value, ...]}), None if it is not one of ours."""
    try:
        envelope = json.loads(dict(zip(fields[::2], fields[1::2], strict=True))["event"])
    except (TypeError, ValueError, KeyError):
        return None
    return envelope if isinstance(envelope, dict) else None


def _presence(envelope: dict[str, Any] | None) -> bool:
    return envelope is not None and envelope.get("kind") == PRESENCE and "node" in envelope


def _login_advice(error: str) -> str:
    """Redis's refusal, and what to change."""
    if "NOAUTH" in error or "WRONGPASS" in error or "AUTH" in error:
        return f"{error} (check the user and password in redis_url)"
    if "DB index" in error or "SELECT" in error:
        return f"{error} (check the database number in redis_url)"
    return error


def _field(info: str, name: str) -> str | None:
    """One C{name:value} line of an INFO reply."""
    for line in str(info).splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


async def _stream_info(redis: Any, key: str) -> dict[str, Any]:
    """XINFO STREAM as a dict; empty when there is no stream (yet)."""
    try:
        reply = await redis.execute_command("XINFO", "STREAM", key)
    except txredisapi.ResponseError:
        return {}  # no such key
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = str(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _deleted_since(stream: dict[str, Any], cursor: str) -> bool:
    """Whether trimming took entries added after C{cursor} (which need not be an entry's
    id): Redis 7 says which entry it deleted last; before it, the oldest entry tells."""
    deleted = stream.get("max-deleted-entry-id")
    if deleted is not None:
        return _id(deleted) > _id(cursor)
    first = stream.get("first-entry")
    return bool(first) and _id(first[0]) > _id(cursor)


async def _trimmed_past(redis: Any, key: str, stream: dict[str, Any], cursor: str) -> bool:
    """Whether entries after C{cursor} are gone from the stream (trimming drops the oldest
    first: while the entry at C{cursor} is there, everything after it is too)."""
    if not stream:
        return _id(cursor) > (0, 0)  # deleted
    if _id(cursor) == (0, 0):  # there was no stream when we started reading
        return int(stream.get("entries-added", 0)) > int(stream["length"])  # Redis 7+
    if await redis.execute_command("XRANGE", key, cursor, cursor):
        return False
    first = stream.get("first-entry")
    return bool(first) and _id(first[0]) > _id(cursor)
