"""The private parts of Twisted (and Autobahn) chatd relies on still have the shape it expects.

Listed in docs/architecture.md ("Private Twisted internals"). A new Twisted release may move
any of them without notice; these fail first, each naming what changed and where chatd uses
it, instead of a door misbehaving at run time.
"""

from __future__ import annotations

import inspect

import pytest_twisted
from twisted.internet import abstract, defer, reactor, tcp
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper

from chatd.doors.output import _tcp_under
from chatd.doors.proxy import ClientFirst


def test_haproxy_wrapper_is_where_chatd_subclasses_it_and_sets_proxy_info():
    """chatd/doors/proxy.py: ClientFirst subclasses the private HAProxyProtocolWrapper and
    reads C{_proxyInfo}, set once the header is parsed."""
    from twisted.protocols.haproxy._wrapper import (  # noqa: F401 - the import is the check
        HAProxyProtocolWrapper,
        HAProxyWrappingFactory,
    )

    factory = HAProxyWrappingFactory(Factory.forProtocol(Protocol))
    wrapper = factory.buildProtocol(None)
    wrapper.makeConnection(StringTransport())
    assert wrapper._proxyInfo is None, "HAProxyProtocolWrapper no longer starts _proxyInfo None"
    wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 6969\r\n")
    assert wrapper._proxyInfo is not None, "HAProxyProtocolWrapper no longer sets _proxyInfo"
    assert wrapper.getPeer().host == "203.0.113.7"
    for name in ("makeConnection", "dataReceived", "connectionLost"):
        assert name in vars(HAProxyProtocolWrapper) or name in vars(ProtocolWrapper), name
    assert "factory" in inspect.signature(HAProxyProtocolWrapper.__init__).parameters


def test_the_proxy_wrapper_writes_through_as_output_assumes():
    """chatd/doors/output.py writes to the socket under a PROXY-protocol wrapper only when
    the wrapper's write is ProtocolWrapper's (bytes pass unchanged)."""
    assert ClientFirst.write is ProtocolWrapper.write, "the PROXY wrapper now has its own write"


@pytest_twisted.ensureDeferred
async def test_a_tcp_connection_has_the_buffers_output_reads():
    """chatd/doors/output.py sends straight to the socket when Twisted's own buffers are
    empty: tcp.Connection's C{socket}, C{_tempDataLen}, C{offset} and C{dataBuffer}."""
    server_side: defer.Deferred[Protocol] = defer.Deferred()

    class Accepted(Protocol):
        def connectionMade(self) -> None:
            server_side.callback(self)

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Accepted)
    )
    try:
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(Protocol)
        )
        accepted = await server_side
        transport = accepted.transport
        assert isinstance(transport, tcp.Connection)
        assert _tcp_under(transport) is transport
        assert transport._tempDataLen == 0, "tcp.Connection._tempDataLen changed"
        assert transport.offset == len(transport.dataBuffer) == 0, "offset/dataBuffer changed"
        assert transport.socket.fileno() >= 0 and transport.connected
        assert not transport.disconnecting
        assert transport.protocol is accepted  # chatd/doors/web.py: who owns the transport
        client.transport.loseConnection()
        transport.loseConnection()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_ports_a_door_listens_on_can_pause_accepting(tmp_path):
    """chatd/service.py: a Door holds its port without accepting (C{stopReading}) until the
    kept rooms are read, then accepts (C{startReading}): the ports of the TCP and Unix
    endpoints (TLS and systemd ones are TCP ports too) are FileDescriptors."""
    for spec in ("tcp:0:interface=127.0.0.1", f"unix:{tmp_path / 'door.sock'}"):
        port = await serverFromString(reactor, spec).listen(Factory.forProtocol(Protocol))
        try:
            assert isinstance(port, abstract.FileDescriptor), f"a {spec} port is no FileDescriptor"
        finally:
            await port.stopListening()


def test_the_reactor_signal_handlers_chatd_moves_to_the_reactor_thread():
    """chatd/service.py (stop_signals_on_reactor_thread) wraps reactor.sigTerm and sigInt."""
    assert callable(reactor.sigTerm) and callable(reactor.sigInt)


def test_autobahn_hooks_the_web_door_overrides():
    """chatd/doors/web.py overrides Autobahn's private _closeConnection(abort) and writes
    a prepared message's payloadHybi itself."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    parameters = inspect.signature(WebSocketServerProtocol._closeConnection).parameters
    assert list(parameters) == ["self", "abort"], "Autobahn's _closeConnection changed"
    # The web door's fan-out counts connections that stop being open there and in
    # sendCloseFrame, which sets STATE_CLOSING after sending the close frame.
    parameters = inspect.signature(WebSocketServerProtocol.sendCloseFrame).parameters
    assert list(parameters) == ["self", "code", "reasonUtf8", "isReply"], "sendCloseFrame changed"
    prepared = WebSocketServerFactory().prepareMessage(b"hi")
    assert isinstance(prepared.payloadHybi, bytes)
    assert WebSocketServerProtocol.STATE_OPEN is not None


def test_autobahn_keeps_per_connection_what_the_web_door_trims():
    """chatd/doors/web.py moves Autobahn's options to the protocol class, drops the handshake
    leftovers and at-rest flags of each open connection, shares its traffic counters and
    makes C{send_queue} only when needed: each name must still be what Autobahn sets."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    from chatd.doors.web import _AT_REST, _HANDSHAKE_ONLY

    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Origin: http://localhost\r\n\r\n"
    )
    assert protocol.state == WebSocketServerProtocol.STATE_OPEN
    kept = vars(protocol)
    for name in (*WebSocketServerProtocol.CONFIG_ATTRS, *_HANDSHAKE_ONLY, *_AT_REST):
        assert name in kept, f"Autobahn no longer sets {name} per connection"
    for name, value in _AT_REST.items():
        assert kept[name] == value, f"Autobahn's {name} no longer starts as {value!r}"
    assert type(kept["send_queue"]).__name__ == "deque" and "trafficStats" in kept
    parameters = inspect.signature(WebSocketServerProtocol.sendData).parameters
    assert list(parameters) == ["self", "data", "sync", "chopsize"], "sendData changed"
