"""The bus over Redis pub/sub, for several chatd nodes serving one room.

Two connections, because a subscribed Redis connection can do nothing but listen: one
subscribes to C{<prefix>:events}, one publishes and keeps presence. Each is a
L{ClientService}, so a lost connection is retried with backoff on the injected clock; the
subscriber subscribes again on every new connection, and every connection after the first
is reported as a gap (Redis dropped whatever was published meanwhile).

Publishing goes through one FIFO of payloads: those written to the current connection and
not yet answered, then those waiting for a connection. While Redis is away at most
C{max_pending} wait, the newest: an outage under load must not grow memory without limit,
nor flood Redis with stale events when it is back. The other nodes read the public
messages among the dropped ones from the store (by id); nothing else is recovered.

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

from chatd.bus import PRESENCE, Bus

log = Logger(namespace="chatd.bus.redis")
GOODBYE_TIMEOUT = 2.0  # seconds a stopping node waits to delete its presence key

PRESENCE_TTL = 30.0  # seconds a node's presence outlives its last refresh
REPLY_TIMEOUT = 10.0  # seconds; a publisher silent for longer is reconnected
RETRY = backoffPolicy(initialDelay=0.5, maxDelay=10.0)  # seconds between reconnects
# Events kept for the other nodes while Redis is away. A Room remembers at least twice as
# many ids as shown, so public messages it already read from the store are not shown twice.
MAX_PENDING = 2000


class _Subscriber(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: str | None, channel: str, message: Any) -> None:
        self.factory.bus._received(message)


class RedisBus(Bus):
    """A L{Bus} on Redis; C{prefix} keeps clusters (and test runs) sharing a Redis apart.

    @param node: this node's name in Redis (client names, presence keys); unique per node.
    @param max_pending: events kept while the publisher is disconnected; past it the
        oldest are dropped.
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
    ) -> None:
        super().__init__()
        self.node = node or uuid.uuid4().hex
        if not self.node.isprintable() or " " in self.node:
            raise ValueError(f"a node name has no spaces or control characters: {self.node!r}")
        self.channel = f"{prefix}:events"
        self.presence_key = f"{prefix}:presence:{self.node}"
        self._presence_keys = f"{prefix}:presence:*"
        self.presence_ttl = presence_ttl
        self._clock = clock
        self.subscriptions = 0  # connections the subscriber made so far
        self.max_pending = max_pending
        # Payloads to publish, oldest first: the first _sent are on the current connection,
        # awaiting Redis's answer; the rest wait for a connection.
        self._queue: deque[str] = deque()
        self._sent = 0
        self._waiting = False  # for a connection, to send the rest
        self._dropped = 0  # since the last warning
        subscriber = Factory.forProtocol(partial(_Subscriber, convertNumbers=False))
        subscriber.bus = self  # type: ignore[attr-defined]
        publisher = Factory.forProtocol(
            partial(txredisapi.RedisProtocol, convertNumbers=False, replyTimeout=REPLY_TIMEOUT)
        )
        # Not a "Starting/Stopping factory" log line per reconnect attempt while Redis is
        # away: besides the noise, a SIGTERM landing in Twisted's log lock deadlocks twistd.
        subscriber.noisy = publisher.noisy = False
        self._sub = ClientService(
            endpoint, subscriber, retry, clock=clock, prepareConnection=self._subscribe
        )
        self._pub = ClientService(
            endpoint,
            publisher,
            retry,
            clock=clock,
            prepareConnection=lambda p: self._name(p, "pub"),
        )
        self._refresher = task.LoopingCall(self._refresh)
        self._refresher.clock = clock

    # -- service ----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
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

    def _name(self, protocol: Any, role: str) -> defer.Deferred[Any]:
        """Name the connection (C{CLIENT LIST} shows which node and role it is)."""
        d = protocol.whenConnected()
        return d.addCallback(
            lambda p: p.execute_command("CLIENT", "SETNAME", f"chatd-{role}-{self.node}")
        )

    # -- events -----------------------------------------------------------------------------

    def _subscribe(self, protocol: _Subscriber) -> defer.Deferred[Any]:
        async def subscribe() -> None:
            await self._name(protocol, "sub")
            await protocol.subscribe(self.channel)
            self.subscriptions += 1
            if self.subscriptions > 1:
                self._gap()

        return defer.ensureDeferred(subscribe())

    def publish(self, kind: str, payload: dict[str, Any]) -> defer.Deferred[None]:
        """Publish now, or once the connection is back (the newest C{max_pending} events);
        fires at once.

        A connection that dies under the command is only noticed then: the payload goes
        once more on the next one. Redis may then have it twice; the ids tell.
        """
        self._track(payload)
        self._queue.append(json.dumps({"node": self.node, "kind": kind, "payload": payload}))
        self._flush()
        self._trim(self.max_pending)
        return defer.succeed(None)

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
            d = redis.publish(self.channel, self._queue[self._sent])
            self._sent += 1
            d.addBoth(self._answered, self._clock.seconds())

    def _not_sent(self, failure: Failure) -> None:
        """Stopped while waiting for a connection; what waits stays queued (bounded)."""
        self._waiting = False
        failure.trap(defer.CancelledError)

    def _answered(self, result: Any, sent_at: float) -> None:
        """Redis answered the oldest payload on the connection, or the connection died."""
        if isinstance(result, Failure) and result.check(txredisapi.ConnectionError):
            if self._sent:  # the first of this connection's failures: all of them wait again
                self._sent = 0
                self._trim(self.max_pending)
                # The failure fires inside connectionLost, before the ClientService hears.
                self._clock.callLater(0, self._flush)
            return
        self._queue.popleft()
        self._sent -= 1
        self.observe_latency(self._clock.seconds() - sent_at)
        if isinstance(result, Failure):
            self.errors += 1
            log.warn("Redis refused a bus event: {why}", why=result.getErrorMessage())

    def _trim(self, keep: int) -> None:
        """Drop all but the newest C{keep} of the payloads waiting for a connection."""
        for _ in range(len(self._queue) - self._sent - keep):
            del self._queue[self._sent]
            self._dropped += 1

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

    def _received(self, data: Any) -> None:
        try:
            envelope = json.loads(data)
            node, kind, payload = envelope["node"], envelope["kind"], envelope["payload"]
        except (TypeError, ValueError, KeyError):
            log.warn("dropped a malformed bus message: {data!r}", data=data)
            return
        if node != self.node:
            self._deliver(kind, payload)

    def ping(self) -> defer.Deferred[None]:
        """Fires once Redis has answered a PING on the publishing connection."""
        d = self._pub.whenConnected(failAfterFailures=1)
        d.addCallback(lambda redis: redis.ping())
        return d.addCallback(lambda _: None)

    # -- presence ---------------------------------------------------------------------------

    def set_present(self, names: Iterable[str]) -> defer.Deferred[None]:
        self.present = sorted(names, key=str.casefold)
        d = self._refresh()
        return d.addCallback(lambda _: self.publish(PRESENCE, {"names": self.present}))

    def _refresh(self) -> defer.Deferred[None]:
        """Write this node's users with a fresh TTL; a failure waits for the next round."""
        data = json.dumps(self.present)
        ttl = max(1, int(self.presence_ttl * 1000))
        d = self._pub.whenConnected(failAfterFailures=1)
        d.addCallback(lambda p: p.set(self.presence_key, data, pexpire=ttl))
        d.addCallback(lambda _: None)
        return d.addErrback(
            lambda f: log.warn("presence not refreshed: {e}", e=f.getErrorMessage())
        )

    def online(self) -> defer.Deferred[list[str]]:
        async def collect() -> list[str]:
            redis = await self._pub.whenConnected(failAfterFailures=1)
            keys: list[str] = []
            cursor = 0
            while True:
                cursor, batch = await redis.scan(cursor, self._presence_keys, 200)
                keys.extend(batch)
                if int(cursor) == 0:
                    break
            names = set(self.present)
            for value in await redis.mget(keys) if keys else []:
                try:
                    names.update(str(n) for n in json.loads(value))
                except (TypeError, ValueError):
                    pass  # expired between SCAN and MGET (None), or not ours
            return sorted(names, key=str.casefold)

        return defer.ensureDeferred(collect())
