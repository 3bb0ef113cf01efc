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

from twisted.internet.protocol import Protocol

# Twisted's PROXY-protocol wrapper is public only through its endpoint; its parsing is reused.
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from zope.interface import directlyProvides, providedBy

PREFIX = "haproxy:"


class _Held:
    """Stands in for the door while the header is read: keeps what arrives after it."""

    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class ClientFirst(HAProxyProtocolWrapper):
    """Twisted's PROXY-protocol wrapper, connecting the door only after the header."""

    _door_connected = False

    def makeConnection(self, transport: Any) -> None:
        """As Twisted's, but not the door's yet: the header will say who the client is."""
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

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
            door.makeConnection(self)
            if held.data:
                door.dataReceived(held.data)

    def connectionLost(self, reason: Any) -> None:
        if self._door_connected:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)


class ClientFirstFactory(HAProxyWrappingFactory):
    protocol = ClientFirst


def listen_spec(endpoint: str, factory: Any) -> tuple[str, Any]:
    """The endpoint to listen on and the factory to listen with, for a door's setting."""
    if endpoint.startswith(PREFIX):
        return endpoint[len(PREFIX) :], ClientFirstFactory(factory)
    return endpoint, factory
