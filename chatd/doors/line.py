"""The line door: telnet, netcat and any client that speaks UTF-8 lines over TCP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from twisted.conch.telnet import AYT
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from chatd import text
from chatd.doors.output import STREAM_CHUNK, Output, Turn
from chatd.doors.telnet import TelnetLines
from chatd.events import Error, Event, History, Notice
from chatd.members import Kept, deliver
from chatd.people import Session
from chatd.room import Room

log = Logger(namespace="chatd.doors.line")


def encode_line(
    event: Event, viewer: str | None = None, here: str | None = None, mine: bool | None = None
) -> bytes:
    """The event as the line door sends it: UTF-8, each line ended by CR LF.

    Telnet reads a 0xFF byte as IAC, the start of a command, and wants a literal one doubled.
    UTF-8 never contains 0xFE or 0xFF (its lead bytes stop at 0xF4), so nothing is escaped:
    the bytes go to every client as they are, and the only IAC the door ever sends is in
    its own replies to a client's negotiation.
    """
    rendered = text.line(event, viewer, here, mine)
    if not rendered:
        return b""
    return (rendered.replace("\n", "\r\n") + "\r\n").encode("utf-8")


def _shared(event: Event) -> bytes:
    return encode_line(event)


def _elsewhere(event: Event) -> bytes:
    """The lines of an event of another room than the viewer's current one: prefixed."""
    return encode_line(event, None, "")


class LineDoor(TelnetLines):
    """One telnet (or netcat) connection: lines in, lines out."""

    door = "line"
    factory: LineFactory
    session: Session | None = None

    def connectionMade(self) -> None:
        self.peer = getattr(self.transport.getPeer(), "host", "?")
        self.max_line_bytes = self.factory.room.config.max_line_bytes
        self.output = Output(
            self.transport,
            self.factory.turn,
            self.factory.room.config.max_output_bytes,
            lambda: self.session,
        )
        self.commandMap[AYT] = self._are_you_there
        self.session = self.factory.room.connect(self)

    def _are_you_there(self, argument: None) -> None:
        """Telnet's "send ayt" (RFC 854 asks for visible evidence that the server is alive)."""
        self.deliver(Notice("yes, chatd is here"))

    def connectionLost(self, reason: object = None) -> None:
        TelnetLines.connectionLost(self, reason)
        if self.session is not None:
            self.factory.room.disconnect(self.session, "connection closed")

    def _write(self, data: bytes) -> None:
        """Telnet's replies queue behind the lines already written (the timing mark must)."""
        self.output.write(data)

    def lineLengthExceeded(self) -> None:
        self.deliver(
            Error(
                f"your line was longer than {self.max_line_bytes} bytes and was not sent; "
                "split it into shorter lines"
            )
        )

    def _subnegotiationLengthExceeded(self) -> None:
        """Twisted's parser gave up on a sub-negotiation without an end: say so, and close as
        /exit does (a bare loseConnection would wait for the producer forever over TLS)."""
        if self.transport.disconnecting:
            return
        self.deliver(
            Error(
                "your connection sent a telnet sub-negotiation (bytes 0xFF 0xFA) with no end "
                f"in {self._MAX_SUBNEGOTIATION_LENGTH} bytes; closing. Send text as UTF-8"
            )
        )
        self.close("endless telnet sub-negotiation")

    def lineReceived(self, line: bytes) -> None:
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError:
            decoded = line.decode("utf-8", "replace")
            self.deliver(
                Error("your line was not valid UTF-8; the bad bytes were replaced with \ufffd")
            )
        self.factory.room.receive(self.session, decoded)

    @property
    def deliver_all(self) -> Any:
        """This door's fan-out (L{chatd.people.Client.deliver_all}): its factory's."""
        return self.factory.deliver_all

    def deliver(self, event: Event) -> None:
        session = self.session
        sharing = text.sharing(event)
        if sharing is None:
            if type(event) is History:
                self.output.stream(self._history(event))
                return
            data = encode_line(event, session.user.name, None, event.mine(session))  # type: ignore[attr-defined]
        else:
            origin, room = sharing
            if origin is not None and origin is session:
                return
            if room is None or room == session.room:
                data = event.rendered(b"line", _shared)
            else:
                data = event.rendered(b"line+", _elsewhere)
        if data:
            self.output.write(data)

    def _history(self, event: History) -> Iterator[bytes]:
        """History in pieces the client reads one after the other, each message within the
        message size limit whatever the store holds."""
        lines = text.history_lines(
            event, self.session.user.name, self.factory.room.config.max_message_bytes, self.session
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
        self._here = Kept()  # the outputs of those in the last fan-out's room

    @staticmethod
    def _outputs_in(sessions: tuple[Session, ...], room: str | None) -> list[Output]:
        """The outputs of those of C{sessions} whose current room is C{room} (all of them
        for None)."""
        if room is None:
            return [s.client.output for s in sessions]
        return [s.client.output for s in sessions if s.room == room]

    def deliver_all(self, sessions: tuple[Session, ...], event: Event) -> None:
        """L{LineDoor.deliver} to many of this door's sessions at once: a fan-out.

        An event goes to thousands: its bytes are looked up once, and each recipient costs a
        step of a list comprehension rather than a few calls (most of a delivery's work
        above the kernel's, before this).
        """
        sharing = text.sharing(event)
        if sharing is None:
            deliver(sessions, event)
            return
        origin, room = sharing
        here = self._here.get(sessions, room, Session.moves, self._outputs_in)
        others = len(sessions) - len(here)  # in another room (the origin may be one of them)
        if origin is not None:  # its own public line is not echoed to the sender
            if origin.room == room:
                if getattr(origin.client, "deliver_all", None) == self.deliver_all:
                    here = here.copy()  # the kept list stays whole
                    with suppress(ValueError):  # unless it has left meanwhile
                        here.remove(origin.client.output)
            elif others == 1 and origin in sessions:
                others = 0
        turn = self.turn
        if others:
            there = [s.client.output for s in sessions if s.room != room and s is not origin]
            data = event.rendered(b"line+", _elsewhere)
            if data:
                turn.write_all(there, data)
        data = event.rendered(b"line", _shared)
        if data:
            turn.write_all(here, data)
