"""Writing to clients: one send per client per reactor turn, bounded when one stops reading."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITransport
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer

log = Logger(namespace="chatd.doors.output")

# How much of a stream (L{Output.stream}) is written in one reactor turn at most, and about
# how big a door makes each of its pieces: a few of them fill the transport's 64 KiB buffer.
STREAM_CHUNK = 16384
_STREAM_TURN = 4 * STREAM_CHUNK


def _tcp_under(transport: Any) -> tcp.Connection | None:
    """The TCP connection under C{transport} when bytes reach it unchanged: the transport
    itself, or under wrappers that write through as they are (the PROXY protocol's; TLS's
    encrypts, so not under it)."""
    while isinstance(transport, ProtocolWrapper) and type(transport).write is ProtocolWrapper.write:
        transport = transport.transport
    return transport if isinstance(transport, tcp.Connection) else None


class Turn:
    """Flushes, once at the end of the reactor turn, every L{Output} written to during it.

    A burst of messages (a batch the store saved together, a crowd's notices) then reaches
    each client as one C{send()} instead of one per message. The kernel's cost is per send
    and per packet far more than per byte, so under load this is most of the work saved.
    The wait is not a timer: a C{callLater(0)}, run on the reactor's next pass.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._held: list[Output] = []
        # A fan-out (outputs, bytes) while it is all this turn wrote: sent as it is, each
        # output untouched until then. Anything else written to any output first holds it
        # (L{_hold_fanout}), so each client's bytes stay in the order they were written.
        self._fanout: tuple[list[Output], bytes] | None = None
        self._call: IDelayedCall | None = None
        # Counted here for the metrics (chatd.metrics reads them at scrape time), by turn
        # rather than by write: the count is one addition per turn, not one per recipient.
        self.writes = 0  # events written to this door's clients
        self.slow_readers = 0  # clients dropped for not reading
        self.errors = 0  # writes that failed

    def hold(self, output: Output) -> None:
        self._held.append(output)
        if self._call is None:
            self._call = self.clock.callLater(0, self.flush)

    def write_all(self, outputs: list[Output], data: bytes) -> None:
        """L{Output.write} of the same bytes to each of C{outputs} (all of this turn): a
        door's fan-out. The first of a turn waits as it is; only when something else is
        written in the same turn is each output's share held (L{_hold_fanout})."""
        if self._fanout is None and not self._held:
            self._fanout = (outputs, data)
            if self._call is None:
                self._call = self.clock.callLater(0, self.flush)
            return
        self._hold_fanout()
        self._hold_all(outputs, data)

    def _hold_fanout(self) -> None:
        """Something else is written this turn: the fan-out waiting is held like it."""
        fanout, self._fanout = self._fanout, None
        if fanout is not None:
            self._hold_all(*fanout)

    def _hold_all(self, outputs: list[Output], data: bytes) -> None:
        """All of C{outputs} are held for L{send}; one that was already (several writes this
        turn), or that writes behind a stream, is there twice, or for nothing: L{send} skips
        an output that holds nothing."""
        self._held += outputs
        for output in outputs:
            try:
                if output._held is None and output._queue is None:
                    output._held = data
                else:
                    output.write(data)
            except Exception:  # one broken client must not hold up everyone else's bytes
                self.errors += 1
                log.failure("writing to {client} failed", client=output.describe())
        if self._call is None and self._held:
            self._call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        self._call = None
        held, self._held = self._held, []
        fanout, self._fanout = self._fanout, None
        if fanout is not None:  # all this turn wrote (anything else would have held it)
            self.send(*fanout)
        else:
            self.send(held)

    def send(self, outputs: list[Output], shared: bytes | None = None) -> None:
        """Send C{shared} to each of C{outputs}, or (None) what each holds; then take the
        next pieces of its stream.

        When nothing is queued for a plain TCP client the bytes go straight to its socket;
        only what the kernel does not take goes through the transport, in order
        (L{Output._buffer}). A fan-out's loop runs once per recipient of everything, so its
        usual case is written out here rather than in a call per output.
        """
        if shared is not None:
            self._send_shared(outputs, shared)
            return
        written = len(outputs)  # one event each, the usual case; corrected below
        for output in outputs:
            try:
                data = output._held
                if data is None:  # sent already (L{Output.flush})
                    written -= 1
                    continue
                output._held = None
                if type(data) is not bytes:
                    written += len(data) - 1
                    data = b"".join(data)
                output._send(data)
            except Exception:  # one broken client must not hold up everyone else's bytes
                self.errors += 1
                log.failure("writing to {client} failed", client=output.describe())
        self.writes += written

    def _send_shared(self, outputs: list[Output], data: bytes) -> None:
        size = len(data)
        written = len(outputs)  # one event each, the usual case; corrected below
        for output in outputs:
            # The socket, while nothing waits in Twisted's buffers or in a stream queue
            # (L{Output._direct}): then the bytes may go before any Twisted would send.
            sock = output._direct
            if sock is not None:
                try:
                    sent = sock.send(data)
                except OSError:
                    sent = 0  # EAGAIN, or an error the transport will find and report
                if sent == size:
                    continue
            try:
                if sock is not None:
                    output._buffer(data[sent:])
                elif output._queue is not None:
                    written -= 1  # behind a stream: it waits its turn (counted when sent)
                    output.write(data)
                else:
                    output._send(data)
            except Exception:  # one broken client must not hold up everyone else's bytes
                self.errors += 1
                log.failure("writing to {client} failed", client=output.describe())
        self.writes += written


@implementer(IPushProducer)
class Output:
    """The bytes a door sends to one client.

    A chat server writes the same small line to many clients at once. Twisted's
    C{transport.write} queues each one and asks the reactor to watch the socket (two
    C{epoll_ctl} calls and a trip through the reactor per recipient, per message). Writes
    here wait for the end of the reactor turn (L{Turn}); then, when nothing is queued for a
    plain TCP client, L{Turn.send} sends them straight to the socket, and only what the kernel
    does not take goes through the transport, in order. Since the batching is done here,
    Nagle's algorithm would only add delay: C{TCP_NODELAY} is set (twisted.web sets it on
    the web door already).

    Registered as the transport's streaming producer, it also notices a client that has
    stopped reading: Twisted pauses it when the transport's buffer fills (64 KiB) and
    resumes it when the buffer drains. Past C{limit} bytes written while paused the client
    is dropped, and the log says who (C{describe()}) and why.

    Something long by nature (a history of 200 messages) is L{stream}ed: its pieces are
    written only while the client keeps reading, so whatever its size it never counts
    against C{limit}; what is written meanwhile waits behind it, in order, and does count.
    """

    __slots__ = (
        "transport",
        "turn",
        "limit",
        "paused",
        "pending",
        "describe",
        "_held",
        "_tripped",
        "_finished",
        "_queue",
        "_queued",
        "_tcp",
        "_socket",
        "_direct",
        "_target",
    )

    def __init__(
        self, transport: ITransport, turn: Turn, limit: int, describe: Callable[[], object]
    ):
        self.transport = transport
        self.turn = turn
        self.limit = limit
        self.paused = False
        self.pending = 0
        self._held: bytes | list[bytes] | None = None
        self.describe = describe
        self._tripped = False
        self._finished = False
        # Behind a stream; made by the first one (most connections never have one).
        self._queue: deque[bytes | Iterator[bytes]] | None = None
        self._queued = 0  # bytes in _queue
        # A socket we may write to ourselves: plain TCP, also behind HAProxy (not TLS).
        self._tcp = _tcp_under(transport)
        self._socket = self._tcp.socket if self._tcp is not None else None
        # The socket while nothing waits in Twisted's buffers or in a stream queue, so
        # L{Turn.send} may write to it at once; None when that is not known (L{_clear}).
        self._direct = self._socket
        self._target: Any = self._tcp or transport  # where L{Turn.send} writes
        try:
            transport.setTcpNoDelay(True)  # TLS and PROXY-protocol wrappers pass it on
        except AttributeError:
            pass  # not TCP (a Unix socket)
        transport.registerProducer(self, True)

    def write(self, data: bytes) -> None:
        if self.turn._fanout is not None:  # written before this: held first, in order
            self.turn._hold_fanout()
        if self._queue:
            self._queue.append(data)
            self._queued += len(data)
            if self._queued > self.limit:
                self._trip()
            return
        # L{_hold} and L{Turn.hold}, inlined: a door's fan-out may call this once per
        # recipient (L{Turn.write_all} is the one without a call per recipient).
        held = self._held
        if held is None:
            # One write per turn is the usual case: no list, so no work for the collector.
            self._held = data
            turn = self.turn
            turn._held.append(self)
            if turn._call is None:
                turn._call = turn.clock.callLater(0, turn.flush)
        elif type(held) is bytes:
            self._held = [held, data]
        else:
            held.append(data)

    def stream(self, pieces: Iterator[bytes]) -> None:
        """Send C{pieces} one after the other, each once the client has read enough."""
        if self.turn._fanout is not None:  # written before this: held first, in order
            self.turn._hold_fanout()
        if self._queue is None:
            self._queue = deque()
            self._direct = None
        self._queue.append(pieces)
        self._pump()

    def _pump(self) -> None:
        """Hold the next pieces of the queue for this turn while the client is reading."""
        if self.turn._fanout is not None:  # written before this: held first, in order
            self.turn._hold_fanout()
        budget = _STREAM_TURN
        queue = self._queue
        while queue and budget > 0 and not self.paused and not self._finished:
            item = queue[0]
            if type(item) is bytes:
                queue.popleft()
                self._queued -= len(item)
            else:
                item = next(item, None)  # type: ignore[call-overload]
                if item is None:
                    queue.popleft()
                    continue
                self.turn.writes -= 1  # a piece of a stream is not an event of its own
            self._hold(item)
            budget -= len(item)
        if queue is not None and not queue and queue is self._queue:
            self._queue = None  # sent: the connection keeps no queue while it has none

    def _hold(self, data: bytes) -> None:
        held = self._held
        if held is None:
            # One write per turn is the usual case: no list, so no work for the collector.
            self._held = data
            self.turn.hold(self)
        elif type(held) is bytes:
            self._held = [held, data]
        else:
            held.append(data)

    def flush(self) -> None:
        """Send what this turn wrote, then take the next pieces of a stream: the door is
        about to write to the transport itself (Autobahn's own frames), behind these bytes.
        Until Twisted has sent that, bytes go through its buffer too (L{_clear})."""
        if self.turn._fanout is not None:  # written before this: held first, in order
            self.turn._hold_fanout()
        self.turn.send([self])
        self._direct = None

    def _send(self, data: bytes) -> None:
        """Send C{data} now, behind whatever Twisted holds for this client; then take the
        next pieces of a stream."""
        sock = self._direct
        if sock is None:
            sock = self._clear()
        if sock is not None:
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0  # EAGAIN, or an error the transport will find and report
            if sent != len(data):
                self._buffer(data[sent:])
        else:
            self._buffer(data)
        if self._queue and not self.paused:
            self._pump()

    def _clear(self) -> Any:
        """The socket if Twisted holds nothing for it and it is connected, else None; kept
        as L{_direct} for the next sends while no stream queue waits either."""
        t = self._tcp
        if t is None or t._tempDataLen or t.dataBuffer or not t.connected:
            return None
        if self._queue is None:
            self._direct = self._socket
        return self._socket

    def _buffer(self, data: bytes) -> None:
        """What the socket did not take: through the transport, which sends it as the
        client reads, unless this client has stopped reading for too long."""
        self._direct = None
        if self.paused:  # not the write that fills the buffer: Twisted holds that one
            self.pending += len(data)
            if self.pending > self.limit:
                self._trip()
                return
        self._target.write(data)

    def _trip(self) -> None:
        if self._tripped:
            return
        self._tripped = True
        self.turn.slow_readers += 1
        log.warn(
            "{client} stopped reading; over {limit} bytes queued, disconnected",
            client=self.describe(),
            limit=self.limit,
        )
        self._queue = self._direct = None
        self.transport.abortConnection()

    def finish(self) -> None:
        """The door closes the connection: send what is held, and stop being its producer.

        A transport with a producer registered does not close until it is unregistered:
        over TLS never, over TCP not while it is paused. A stream not sent yet is dropped;
        what was written after it (a goodbye) is sent.
        """
        if self.turn._fanout is not None:  # written before this: held first, in order
            self.turn._hold_fanout()
        for item in self._queue or ():
            if type(item) is bytes:
                self._hold(item)
        self._queue = None
        self.turn.send([self])
        self._direct = None  # closing: each send asks whether it is still connected
        if not self._finished:
            self._finished = True
            self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.pending = 0
        if self._queue:
            self._pump()

    def stopProducing(self) -> None:
        self.paused = False
        self._queue = self._direct = None
