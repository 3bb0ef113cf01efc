"""Doors behind HAProxy: the PROXY protocol, with the door connected once the client is known.

A door endpoint written C{haproxy:<endpoint>} (Twisted's syntax) reads the PROXY header
HAProxy sends first, so the door sees the client's address instead of HAProxy's. Twisted's
own wrapper connects the door as soon as the TCP connection is made, before the header has
arrived, and a door asks for its peer right then (the flood rules count connections per
address, reports count per address): every user would be HAProxy. This wrapper connects the
door once the header has been read.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

# Twisted's PROXY-protocol wrapper is public only through its endpoint; its parsing is reused.
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from zope.interface import directlyProvides, providedBy

from chatd.config import ConfigError

log = Logger(namespace="chatd.doors.proxy")

PREFIX = "haproxy:"


class _Held:
    """Stands in for the door while the header is read: keeps what arrives after it."""

    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class ClientFirst(HAProxyProtocolWrapper):
    """Twisted's PROXY-protocol wrapper, connecting the door only after the header."""

    factory: ClientFirstFactory
    _door_connected = False
    _no_header: Any = None

    def makeConnection(self, transport: Any) -> None:
        """As Twisted's, but not the door's yet: the header will say who the client is."""
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._no_header = self.factory.clock.callLater(self.factory.timeout, self._too_late)

    def _too_late(self) -> None:
        log.info("closed a connection that sent no PROXY header in {t} s", t=self.factory.timeout)
        self.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._door_connected:
            self.wrappedProtocol.dataReceived(data)
            return
        door, held = self.wrappedProtocol, _Held()
        self.wrappedProtocol = held
        try:
            super().dataReceived(data)
        finally:
            self.wrappedProtocol = door
        if self._proxyInfo is not None and self.connected:
            self._door_connected = True
            self._no_header.cancel()
            door.makeConnection(self)
            if held.data:
                door.dataReceived(held.data)

    def connectionLost(self, reason: Any) -> None:
        if self._door_connected:
            super().connectionLost(reason)
            return
        if self._no_header is not None and self._no_header.active():
            self._no_header.cancel()
        self.factory.unregisterProtocol(self)


class ClientFirstFactory(HAProxyWrappingFactory):
    """@param timeout: seconds a connection may take to send its PROXY header."""

    protocol = ClientFirst

    def __init__(self, door: Any, clock: IReactorTime, timeout: float) -> None:
        super().__init__(door)
        self.clock = clock
        self.timeout = timeout


def listen_spec(
    endpoint: str, factory: Any, clock: IReactorTime, timeout: float
) -> tuple[str, Any]:
    """The endpoint to listen on and the factory to listen with, for a door's setting."""
    if not endpoint.startswith(PREFIX):
        return endpoint, factory
    inner = endpoint[len(PREFIX) :]
    if inner.split(":", 1)[0] == "ssl":
        # HAProxy sends the header before the TLS handshake; Twisted would expect it inside.
        raise ConfigError(
            f"{endpoint}: the PROXY protocol over TLS is not supported; end TLS at HAProxy "
            "and give chatd haproxy:tcp:..."
        )
    return inner, ClientFirstFactory(factory, clock, timeout)
