"""Drop clients that stop reading, before their queued output eats the server's memory."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer, ITransport
from zope.interface import implementer


@implementer(IPushProducer)
class OutputCap:
    """Counts bytes queued for a client that has stopped reading.

    Registered as the transport's streaming producer: Twisted pauses it when the transport's
    send buffer fills (64 KiB) and resumes it when the buffer drains. While paused, every
    write is counted; past C{limit} the client is dropped with C{on_overflow}.
    """

    def __init__(self, transport: ITransport, limit: int, on_overflow: Callable[[], None]):
        self.limit = limit
        self.paused = False
        self.pending = 0
        self._on_overflow = on_overflow
        self._tripped = False
        transport.registerProducer(self, True)

    def wrote(self, size: int) -> None:
        if self.paused:
            self.pending += size
            if self.pending > self.limit and not self._tripped:
                self._tripped = True
                self._on_overflow()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.pending = 0

    def stopProducing(self) -> None:
        self.paused = False
