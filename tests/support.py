"""Helpers for tests over real sockets: a chatd service on port 0 and simple clients.

Tests start servers with the C{serve} fixture (tests/conftest.py), which stops them after
the test. Every client collects what it receives in a
queue, and C{expect} waits (with a timeout, so a broken server fails the test instead of
hanging it) for the first line matching a pattern. L{pause} is the one way to wait.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent, globalLogPublisher

from chatd.service import ChatService

TIMEOUT = 5.0
OFF = {  # every door is off unless a test opens it
    "line": "none",
    "web": "none",
    "minechat_read": "none",
    "minechat_write": "none",
    "irc": "none",
}


def pause(seconds: float) -> defer.Deferred[None]:
    """Let the reactor run for C{seconds} (real time: sockets, threads, other processes)."""
    return task.deferLater(reactor, seconds, lambda: None)


@dataclass
class Server:
    service: ChatService
    ports: dict[str, int]
    listeners: list[Any] = field(default_factory=list)
    stopped: bool = False

    @property
    def room(self) -> Any:
        return self.service.room

    async def listen(self, spec: str, door: str) -> int:
        """Open C{door} on one more endpoint (a TLS one, say); closed by L{stop}."""
        listener = await serverFromString(reactor, spec).listen(self.service.factories[door])
        self.listeners.append(listener)
        return listener.getHost().port

    async def stop(self) -> None:
        """Stop listening, then the service (people are told it is shutting down). A test
        that checks the shutdown calls this itself; the fixture's call is then a no-op."""
        if self.stopped:
            return
        self.stopped = True
        for listener in self.listeners:
            await listener.stopListening()
        await defer.maybeDeferred(self.service.stopService)


class Closed(defer.Deferred[None]):
    """Fires when the connection is closed; awaited, it fails after L{TIMEOUT} instead of
    hanging the test (a server a fixture stops only after the test never closes it)."""

    def __await__(self) -> Any:
        waiter: defer.Deferred[None] = defer.Deferred()

        def fire(result: Any) -> Any:
            if not waiter.called:
                waiter.callback(None)
            return result

        def timed_out(*_: Any) -> None:
            raise AssertionError(f"the connection was not closed within {TIMEOUT}s")

        self.addBoth(fire)
        waiter.addTimeout(TIMEOUT, reactor, onTimeoutCancel=timed_out)
        return waiter.__await__()


class _Received:
    """A queue of received lines with pattern matching."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._waiting: list[tuple[re.Pattern[str], defer.Deferred[str]]] = []
        self._seen = 0
        self.closed = Closed()

    def _got(self, line: str) -> None:
        self.lines.append(line)
        self._match()

    def _match(self) -> None:
        for pattern, d in list(self._waiting):
            for i in range(self._seen, len(self.lines)):
                if pattern.search(self.lines[i]):
                    self._seen = i + 1
                    self._waiting.remove((pattern, d))
                    d.callback(self.lines[i])
                    break

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> defer.Deferred[str]:
        """The next line (after the last matched one) that matches C{pattern}."""
        d: defer.Deferred[str] = defer.Deferred()
        self._waiting.append((re.compile(pattern), d))
        d.addTimeout(timeout, reactor, onTimeoutCancel=lambda *_: self._timed_out(pattern))
        self._match()
        return d

    def _timed_out(self, pattern: str) -> None:
        raise AssertionError(f"no line matching {pattern!r}; got {self.lines!r}")

    def after_last_match(self) -> list[str]:
        return self.lines[self._seen :]


class LineClient(Protocol, _Received):
    """A telnet user."""

    def __init__(self) -> None:
        _Received.__init__(self)
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self._got(raw.rstrip(b"\r").decode("utf-8", "replace"))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    def send(self, line: str | bytes) -> None:
        data = line.encode("utf-8") if isinstance(line, str) else line
        self.transport.write(data if data.endswith(b"\n") else data + b"\n")

    def close(self) -> None:
        self.transport.loseConnection()


async def line_client(port: int) -> LineClient:
    client = LineClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await endpoint.connect(Factory.forProtocol(lambda: client))
    await client.expect(r"^\* you are ")
    return client


class WsClient(WebSocketClientProtocol, _Received):
    """A WebSocket user; each text frame is one received item."""

    def __init__(self) -> None:
        WebSocketClientProtocol.__init__(self)
        _Received.__init__(self)
        self.opened: defer.Deferred[None] = defer.Deferred()
        self.close_code: int | None = None

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self._got(payload.decode("utf-8") if not isBinary else repr(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code = code
        if not self.closed.called:
            self.closed.callback(None)
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"WebSocket refused: {code} {reason}"))

    def send(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"))

    def close(self) -> None:
        self.sendClose(1000)


async def ws_client(
    port: int, path: str = "/", protocols: list[str] | None = None, origin: str | None = None
) -> WsClient:
    factory = WebSocketClientFactory(
        f"ws://127.0.0.1:{port}{path}", protocols=protocols or [], origin=origin
    )
    client = WsClient()
    factory.protocol = lambda: client
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await endpoint.connect(factory)
    await client.opened
    return client


class RawClient(Protocol):
    """A plain TCP client (as minechat clients are): bytes in, whole lines read back."""

    def __init__(self) -> None:
        self.received = b""
        self._read = 0
        self._waiting: list[tuple[int, defer.Deferred[bytes]]] = []
        self.closed = Closed()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        while self._waiting:
            count, d = self._waiting[0]
            end = self._read
            for _ in range(count):
                end = self.received.find(b"\n", end) + 1
                if not end:
                    return
            self._waiting.pop(0)
            chunk, self._read = self.received[self._read : end], end
            d.callback(chunk)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    def lines(self, count: int = 1) -> defer.Deferred[bytes]:
        """The next C{count} lines, exactly as sent."""
        d: defer.Deferred[bytes] = defer.Deferred()
        self._waiting.append((count, d))
        d.addTimeout(TIMEOUT, reactor, onTimeoutCancel=self._timed_out)
        self.dataReceived(b"")
        return d

    def _timed_out(self, *_: Any) -> None:
        raise AssertionError(f"not enough lines; got {self.received!r}")

    def send(self, data: bytes) -> None:
        self.transport.write(data)


async def raw_client(port: int, via_haproxy_from: str | None = None) -> RawClient:
    """A TCP client; with C{via_haproxy_from}, as HAProxy passes on one from that address."""
    client = RawClient()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(lambda: client)
    )
    if via_haproxy_from:
        client.send(f"PROXY TCP4 {via_haproxy_from} 127.0.0.1 40000 {port}\r\n".encode())
    return client


class LogEvents:
    """The server log's events while a test runs (the C{log} fixture stops it after)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)

    def stop(self) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    def texts(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


def never_reading_socket(port: int) -> socket.socket:
    """A client that connects and then never reads, with a tiny receive window."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    return sock


async def flood_until_dropped(
    server: Server, talker: Any, listener: _Received, sock: socket.socket, log: LogEvents
) -> None:
    """Chat big lines until the room has dropped the silent client; the others keep up."""
    slow = server.room.members.sessions[-1]
    talker_name = talker.lines[0].split()[-1] if talker.lines else None
    for i in range(400):
        talker.send(f"{i} " + "z" * 30_000)
        await listener.expect(rf": {i} z")
        if slow not in server.room.members.sessions:
            break
    else:
        raise AssertionError("the client that never reads was never dropped")
    talker.send("still chatting")
    await listener.expect(r": still chatting$")
    assert any("stopped reading; over 65536 bytes queued" in t for t in log.texts())
    assert talker_name is None or talker_name in server.room.online()
    sock.close()
