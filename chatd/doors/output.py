"""Writing to one client: fast when it keeps up, bounded when it does not."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer, ITransport
from twisted.logger import Logger
from zope.interface import implementer

log = Logger(namespace="chatd.doors.output")


@implementer(IPushProducer)
class Output:
    """The bytes a door sends to one client.

    A chat server writes the same small line to many clients at once. Twisted's
    C{transport.write} queues each one and asks the reactor to watch the socket (two
    C{epoll_ctl} calls and a trip through the reactor per recipient, per message). When
    nothing is queued for a plain TCP client, L{write} sends straight to the socket
    instead, and only what the kernel does not take goes through the transport, in order.

    Registered as the transport's streaming producer, it also notices a client that has
    stopped reading: Twisted pauses it when the transport's buffer fills (64 KiB) and
    resumes it when the buffer drains. Past C{limit} bytes written while paused the client
    is dropped, and the log says who (C{describe()}) and why.
    """

    def __init__(self, transport: ITransport, limit: int, describe: Callable[[], object]):
        self.transport = transport
        self.limit = limit
        self.paused = False
        self.pending = 0
        self._describe = describe
        self._tripped = False
        # Only a plain TCP connection has a socket we may write to ourselves (TLS wraps it).
        self._socket = transport.socket if isinstance(transport, tcp.Connection) else None
        transport.registerProducer(self, True)

    def write(self, data: bytes) -> None:
        t = self.transport
        sock = self._socket
        if (
            sock is not None
            and not t._tempDataLen  # nothing waiting in Twisted's buffers
            and t.offset == len(t.dataBuffer)
            and t.connected
            and not t.disconnecting
        ):
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0  # EAGAIN, or an error the transport will find and report itself
            if sent == len(data):
                return
            data = data[sent:]
        t.write(data)
        if self.paused:
            self.pending += len(data)
            if self.pending > self.limit and not self._tripped:
                self._tripped = True
                log.warn(
                    "{client} stopped reading; over {limit} bytes queued, disconnected",
                    client=self._describe(),
                    limit=self.limit,
                )
                self.transport.abortConnection()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.pending = 0

    def stopProducing(self) -> None:
        self.paused = False
