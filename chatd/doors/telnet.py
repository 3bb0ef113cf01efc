"""Telnet under a line door: the byte stream a telnet client sends, turned into lines.

Telnet clients mix commands into what the user types (RFC 854): Ctrl-C in Debian's telnet
sends C{IAC IP IAC DO TIMING-MARK} and then throws away everything the server sends until
the timing mark is answered; PuTTY offers its window size and terminal type at connect.
Netcat and raw sockets send none of this, so nothing is sent unasked: a server that opens
with C{IAC DO ...} shows garbage in nc. Every DO and WILL a client sends is answered: the
timing mark as RFC 860 asks, everything else refused, and Twisted's option state machine
(L{twisted.conch.telnet.Telnet}, RFC 1143's rules) makes sure a refusal never loops.

Twisted's parser reads byte by byte in Python. Text is nearly all of what arrives, so text
is searched with C{bytes.find} and a regular expression, and only the commands go through
Twisted.
"""

from __future__ import annotations

from twisted.conch.telnet import IAC, SB, Telnet

from chatd.doors.lines import LineSplitter

TIMING_MARK = b"\x06"  # RFC 860

# IAC followed by one of these takes an option byte: WILL WONT DO DONT.
_NEGOTIATION = frozenset(b"\xfb\xfc\xfd\xfe")
# Commands without an argument, from EOF SUSP ABORT (RFC 1184: Debian's telnet sends SUSP on
# Ctrl-Z) through EOR SE NOP DM BRK IP AO AYT EC EL to GA. They change nothing here.
_COMMANDS = frozenset(range(0xEC, 0xFA))
_SE = b"\xff\xf0"  # the end of a sub-negotiation (unless its IAC is itself escaped)


class TelnetLines(Telnet):
    """Telnet's commands answered or dropped; the text between them split into lines
    (L{LineSplitter}).

    A subclass sets C{max_line_bytes} and implements L{lineReceived} (a line without its
    ending; it may hold any byte, C{IAC IAC} having become one 0xFF) and
    L{lineLengthExceeded}: an over-long line is reported once and skipped up to its end,
    and the lines after it are kept.
    """

    max_line_bytes = 4096

    def __init__(self) -> None:
        super().__init__()
        self._splitter = LineSplitter(
            self.max_line_bytes,
            self.lineReceived,  # bound now: one call less per line
            self.lineLengthExceeded,
            lambda: self.transport.disconnecting,
        )
        self._cut = b""  # a command cut off by the end of a segment

    def dataReceived(self, data: bytes) -> None:
        if self._cut:
            data, self._cut = self._cut + data, b""
        pos, size = 0, len(data)
        while pos < size and not self.transport.disconnecting:
            if self.state != "data":
                # Inside a sub-negotiation, Twisted reads up to its IAC SE (and drops the
                # connection past 4 KiB without one).
                if self.state == "subnegotiation-escaped":
                    end = pos + 1
                else:
                    end = data.find(_SE, pos)
                    end = size if end < 0 else end + 2
                Telnet.dataReceived(self, data[pos:end])
                pos = end
                continue
            iac = data.find(IAC, pos)
            if iac < 0:
                self._text(data[pos:] if pos else data)
                return
            if iac > pos:
                self._text(data[pos:iac])
            pos = self._command(data, iac)
            if pos < 0:
                self._cut = data[iac:]
                return

    def _command(self, data: bytes, iac: int) -> int:
        """Run the telnet command at C{data[iac]}; where the data goes on after it, or -1 if
        the segment ends before the command does."""
        if iac + 1 >= len(data):
            return -1
        code = data[iac + 1]
        if code == 0xFF:  # IAC IAC: one 0xFF byte of text
            self._text(IAC)
            return iac + 2
        if code in _NEGOTIATION:
            if iac + 2 >= len(data):
                return -1
            option = data[iac + 2 : iac + 3]
            if option in (b"\r", b"\n"):
                # Options 10 and 13 (RFC 652, 658) are long dead: this is text that is not
                # UTF-8, and its line end must not be swallowed.
                self._text(data[iac : iac + 2])
                return iac + 2
            self.commandReceived(data[iac + 1 : iac + 2], option)
            return iac + 3
        if code in _COMMANDS:
            self.commandReceived(data[iac + 1 : iac + 2], None)
            return iac + 2
        if code == SB[0]:
            Telnet.dataReceived(self, IAC + SB)  # Twisted reads it from here
            return iac + 2
        # Not a telnet command: a 0xFF in text that is not UTF-8.
        self._text(IAC)
        return iac + 1

    def _text(self, data: bytes) -> None:
        """Text between commands: split into lines."""
        self._splitter.max_bytes = self.max_line_bytes
        self._splitter.feed(data)

    def telnet_DO(self, option: bytes) -> None:
        if option == TIMING_MARK:
            # RFC 860: the client waits for this, discarding what we send; it goes after
            # everything already written. The option never turns on, so every DO is answered.
            self._will(TIMING_MARK)
        else:
            super().telnet_DO(option)

    def negotiate(self, data: list[bytes]) -> None:
        """A sub-negotiation (window size, terminal type...) is dropped whole: no option that
        has one is ever enabled here. (Twisted's own fails on an empty one.)"""

    def lineReceived(self, line: bytes) -> None:
        raise NotImplementedError

    def lineLengthExceeded(self) -> None:
        raise NotImplementedError
