"""A TCP proxy a test puts between chatd and a server (Redis, PostgreSQL) to play faults.

- C{cut()}: the server is unreachable: connections drop, new ones are refused.
- C{freeze()}: the server hangs (a stopped process, a held lock, a dead link): connections
  stay open and new ones are accepted, but nothing is forwarded either way.
  Or only the replies are held: requests arrive, answers do not.
- C{heal()}: back to normal; what a frozen connection held is delivered then, as TCP
  delivers what it retransmitted once a link is back.

On the test's reactor, in-process: use it only for clients that do not block the reactor
(chatd nodes in their own processes, the Redis bus). The port stays the same throughout.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol


class _Side(Protocol):
    """One end of a proxied connection; C{other} is the far end's protocol, once connected."""

    def __init__(self, proxy: FaultProxy, pair: _Pair) -> None:
        self.proxy = proxy
        self.pair = pair
        self.held: list[bytes] = []  # received while frozen or before the far end exists

    def other(self) -> _Side | None:
        return self.pair.server if self is self.pair.client else self.pair.client

    def dataReceived(self, data: bytes) -> None:
        other = self.other()
        frozen = self.proxy.state == "frozen" and (self.proxy.both_ways or self is self.pair.server)
        if frozen or other is None or other.transport is None:
            self.held.append(data)
        else:
            other.transport.write(data)

    def release(self) -> None:
        other = self.other()
        if other is not None and other.transport is not None and self.held:
            other.transport.write(b"".join(self.held))
            self.held.clear()

    def connectionLost(self, reason: Any = None) -> None:
        self.pair.lost()


class _Pair:
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client: _Side | None = None
        self.server: _Side | None = None
        self.closed = False
        self.connecting = False

    def connect_upstream(self) -> None:
        self.connecting = True
        side = _Side(self.proxy, self)
        d = self.proxy._upstream.connect(Factory.forProtocol(lambda: side))
        d.addCallbacks(self._connected, lambda _: self.abort())

    def _connected(self, server: _Side) -> None:
        self.server = server
        if self.closed:
            self.abort()
            return
        if self.proxy.state == "up":
            self.release()

    def release(self) -> None:
        for side in (self.client, self.server):
            if side is not None:
                side.release()

    def abort(self) -> None:
        self.closed = True
        for side in (self.client, self.server):
            if side is not None and side.transport is not None:
                side.transport.abortConnection()

    def lost(self) -> None:
        if not self.closed:
            self.abort()
        self.proxy._pairs.discard(self)


class FaultProxy:
    """Listens on 127.0.0.1 (a free port), forwarding to C{host:port}."""

    def __init__(self, reactor: Any, host: str, port: int) -> None:
        self._reactor = reactor
        self._upstream = TCP4ClientEndpoint(reactor, host, port, timeout=5)
        self._pairs: set[_Pair] = set()
        self._listener: Any = None
        self.port = 0
        self.state = "up"
        self.both_ways = True

    @classmethod
    async def to_url(cls, reactor: Any, url: str, default_port: int) -> FaultProxy:
        """A started proxy to the server of C{url} (redis://, postgresql://)."""
        parts = urlsplit(url)
        proxy = cls(reactor, parts.hostname or "127.0.0.1", parts.port or default_port)
        await proxy.start()
        return proxy

    def url(self, url: str) -> str:
        """C{url}, to the same server through this proxy."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> None:
        def accept() -> Protocol:
            pair = _Pair(self)
            pair.client = _Side(self, pair)
            self._pairs.add(pair)
            if self.state == "up" or (self.state == "frozen" and not self.both_ways):
                pair.connect_upstream()
            return pair.client

        endpoint = TCP4ServerEndpoint(self._reactor, self.port, interface="127.0.0.1")
        self._listener = await endpoint.listen(Factory.forProtocol(accept))
        self.port = self._listener.getHost().port

    def cut(self) -> defer.Deferred[None]:
        """Drop every connection and refuse new ones until L{heal}."""
        self.state = "cut"
        for pair in list(self._pairs):
            pair.abort()
        listener, self._listener = self._listener, None
        return defer.maybeDeferred(listener.stopListening) if listener else defer.succeed(None)

    def freeze(self, replies_only: bool = False) -> None:
        """Hold everything both ways; accept new connections, but connect them nowhere.
        With C{replies_only}, what clients send still arrives (the server acts on it) but
        its answers are held: the client cannot tell whether a request was done."""
        self.state = "frozen"
        self.both_ways = not replies_only

    async def heal(self) -> None:
        """Forward again: what was held goes on, and new connections are served."""
        was, self.state = self.state, "up"
        if was == "cut":
            await self.start()
        for pair in list(self._pairs):
            if not pair.connecting:
                pair.connect_upstream()  # accepted while frozen
            else:
                pair.release()

    async def close(self) -> None:
        await self.cut()
