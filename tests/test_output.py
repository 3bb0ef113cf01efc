"""Output: what a door writes in one reactor turn reaches the client as one write, in order."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport

from chatd.doors.output import Output, Turn


class CountingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


def make_output(turn: Turn) -> tuple[Output, CountingTransport]:
    transport = CountingTransport()
    return Output(transport, turn, 1000, lambda: "client"), transport


def test_a_burst_of_one_turn_is_one_write_in_order():
    clock = Clock()
    turn = Turn(clock)
    (a, ta), (b, tb) = make_output(turn), make_output(turn)
    for i in range(3):
        a.write(b"line %d\n" % i)
    b.write(b"only\n")
    assert ta.writes == tb.writes == []  # held until the turn ends
    clock.advance(0)
    assert ta.writes == [b"line 0\nline 1\nline 2\n"]
    assert tb.writes == [b"only\n"]
    a.write(b"next turn\n")
    clock.advance(0)
    assert ta.writes[1:] == [b"next turn\n"]


def test_flush_sends_what_is_held_now_and_the_turn_then_has_nothing_more():
    clock = Clock()
    output, transport = make_output(Turn(clock))
    output.write(b"goodbye\n")
    output.flush()  # what a door does before it closes the connection
    assert transport.writes == [b"goodbye\n"]
    clock.advance(0)
    assert transport.writes == [b"goodbye\n"]


class SlowClientTransport(CountingTransport):
    """Pauses its producer past 50 KB unread, as Twisted does past its buffer size."""

    def __init__(self) -> None:
        super().__init__()
        self.read = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) - self.read > 50_000 and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.read = len(self.value())
        self.producer.resumeProducing()


def test_a_stream_is_sent_only_while_the_client_reads_and_what_follows_waits_for_it():
    clock = Clock()
    transport = SlowClientTransport()
    output = Output(transport, Turn(clock), 1000, lambda: "client")
    output.stream(iter([b"h" * 20_000 for _ in range(10)]))  # 200 KB, far over the cap
    output.write(b"live\n")  # written meanwhile: after the stream, in order
    clock.advance(0)
    sent = len(transport.value())
    assert 50_000 < sent < 200_000 and output.paused
    clock.advance(0)
    assert len(transport.value()) == sent  # nothing more until the client reads
    while output.paused:
        transport.drain()
        clock.advance(0)
    assert transport.value() == b"h" * 200_000 + b"live\n"
    assert not output._tripped and not transport.disconnecting


def test_what_waits_behind_a_stream_counts_against_the_cap():
    clock = Clock()
    transport = SlowClientTransport()
    output = Output(transport, Turn(clock), 1000, lambda: "client")
    output.stream(iter([b"h" * 20_000 for _ in range(10)]))
    clock.advance(0)
    assert output.paused and not output._tripped  # the stream itself never counts
    output.write(b"x" * 600)
    assert not output._tripped
    output.write(b"x" * 600)  # 1200 bytes waiting behind it: over the 1000-byte cap
    assert output._tripped


@pytest_twisted.ensureDeferred
async def test_bytes_the_door_writes_to_the_transport_itself_go_before_later_fan_outs():
    """A fan-out goes straight to the socket, past Twisted's buffer, only while that buffer
    is empty: after the door writes to the transport itself (Autobahn answering a ping,
    once L{Output.flush} sent what was held), what the turn writes next waits behind it."""
    accepted: defer.Deferred[Server] = defer.Deferred()
    received = bytearray()
    turn = Turn(reactor)

    class Server(Protocol):
        def connectionMade(self) -> None:
            self.output = Output(self.transport, turn, 100_000, lambda: "client")
            accepted.callback(self)

        def dataReceived(self, data: bytes) -> None:  # a ping, say: answered at once
            turn.write_all([self.output], b"before %s\n" % data)
            self.output.flush()
            self.transport.write(b"answer %s\n" % data)
            turn.write_all([self.output], b"after %s\n" % data)

    class Client(Protocol):
        def dataReceived(self, data: bytes) -> None:
            received.extend(data)

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Server)
    )
    try:
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(Client)
        )
        server = await accepted
        expected = b""
        for i in range(3):
            client.transport.write(b"%d" % i)
            expected += b"before %d\nanswer %d\nafter %d\n" % (i, i, i)
            for _ in range(200):
                if len(received) >= len(expected):
                    break
                await deferLater(reactor, 0.005)
        assert bytes(received) == expected
        client.transport.loseConnection()
        server.transport.loseConnection()
    finally:
        await port.stopListening()
