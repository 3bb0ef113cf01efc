"""The line door: telnet, netcat and any client that speaks UTF-8 lines over TCP."""

from __future__ import annotations

import re
from collections.abc import Iterator

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from chatd import text
from chatd.doors.output import STREAM_CHUNK, Output, Turn
from chatd.events import Error, Event, History, Message
from chatd.room import Room, Session

log = Logger(namespace="chatd.doors.line")

# Telnet option negotiation (IAC ...) that a telnet client may send, e.g. on Ctrl-C.
_TELNET = re.compile(rb"\xff(?:[\xfb-\xfe].|[\xf0-\xfa])", re.S)


def encode_line(event: Event, viewer: str | None = None) -> bytes:
    rendered = text.line(event, viewer)
    if not rendered:
        return b""
    return (rendered.replace("\n", "\r\n") + "\r\n").encode("utf-8")


def _shared(event: Event) -> bytes:
    return encode_line(event)


class LineDoor(LineReceiver):
    """One telnet connection: lines in, lines out.

    LineReceiver drops everything after an over-long line; a chat user would lose the lines
    they typed next, so C{dataReceived} is our own: an over-long line is reported and skipped
    up to its end, and every line after it is kept.
    """

    delimiter = b"\n"
    door = "line"
    factory: LineFactory
    session: Session | None = None

    def connectionMade(self) -> None:
        self.peer = getattr(self.transport.getPeer(), "host", "?")
        self._buffer = b""
        self._discarding = False
        self.MAX_LENGTH = self.factory.room.config.max_line_bytes
        self.output = Output(
            self.transport,
            self.factory.turn,
            self.factory.room.config.max_output_bytes,
            lambda: self.session,
        )
        self.session = self.factory.room.connect(self)

    def connectionLost(self, reason: object = None) -> None:
        if self.session is not None:
            self.factory.room.disconnect(self.session, "connection closed")

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        start = 0
        while not self.transport.disconnecting:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            # The line's length without its ending, which may be \r\n.
            length = end - start - (end > start and buffer[end - 1 : end] == b"\r")
            if self._discarding:
                self._discarding = False
            elif length > self.MAX_LENGTH:
                self.lineLengthExceeded(buffer[start : start + 80])
            else:
                self.lineReceived(buffer[start:end])
            start = end + 1
        rest = buffer[start:]
        if len(rest) > self.MAX_LENGTH + 1 and not self._discarding:
            self.lineLengthExceeded(rest[:80])
            self._discarding = True
        self._buffer = b"" if self._discarding else rest

    def lineLengthExceeded(self, line: bytes) -> None:
        self.deliver(
            Error(
                f"your line was longer than {self.MAX_LENGTH} bytes and was not sent; "
                "split it into shorter lines"
            )
        )

    def lineReceived(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if b"\xff" in line:
            line = _TELNET.sub(b"", line)
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError:
            decoded = line.decode("utf-8", "replace")
            self.deliver(
                Error("your line was not valid UTF-8; the bad bytes were replaced with \ufffd")
            )
        self.factory.room.receive(self.session, decoded)

    def deliver(self, event: Event) -> None:
        if type(event) is Message:
            if event.origin is self.session and event.to is None:
                return  # the sender does not get its own public line back
            if event.to is not None:
                data = encode_line(event, self.session.user.name)
            else:
                data = event.rendered(b"line", _shared)
        elif type(event) is History:
            self.output.stream(self._history(event))
            return
        else:
            data = event.rendered(b"line", _shared)
        if data:
            self.output.write(data)

    def _history(self, event: History) -> Iterator[bytes]:
        """History in pieces the client reads one after the other, each message within the
        message size limit whatever the store holds."""
        lines = text.history_lines(
            event, self.session.user.name, self.factory.room.config.max_message_bytes
        )
        return text.chunks((line.encode("utf-8") + b"\r\n" for line in lines), STREAM_CHUNK)

    def close(self, reason: str) -> None:
        log.info("closing {peer}: {reason}", peer=self.peer, reason=reason)
        self.output.finish()
        self.transport.loseConnection()


class LineFactory(Factory):
    protocol = LineDoor

    def __init__(self, room: Room) -> None:
        self.room = room
        self.turn = Turn(room.clock)
