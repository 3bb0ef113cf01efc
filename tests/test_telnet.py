"""Telnet on the line door: the byte parser under hypothesis, raw sockets speaking telnet to a
real server, and Debian's own telnet driven through tmux."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from chatd.doors.line import encode_line
from chatd.doors.telnet import TelnetLines
from chatd.events import Message, Notice
from tests.support import RawClient, pause, raw_client
from tests.terminals import needs

IAC, WILL, WONT, DO, DONT, SB, SE = b"\xff", b"\xfb", b"\xfc", b"\xfd", b"\xfe", b"\xfa", b"\xf0"
TM, NAWS, TTYPE, ECHO = b"\x06", b"\x1f", b"\x18", b"\x01"
TOO_LONG = b"<too long>"


class Recorder(TelnetLines):
    """The telnet parser alone: the lines it finds, and what it answers on the transport."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.max_line_bytes = limit
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def lineLengthExceeded(self) -> None:
        self.lines.append(TOO_LONG)


def parse(chunks: list[bytes], limit: int = 10_000) -> tuple[list[bytes], bytes, bool]:
    """The lines, the replies, and whether the connection was dropped."""
    recorder, transport = Recorder(limit), StringTransport()
    recorder.makeConnection(transport)
    for chunk in chunks:
        recorder.dataReceived(chunk)
    return recorder.lines, transport.value(), transport.disconnecting


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


# Bytes from strangers, with telnet's special bytes far more often than chance would give.
stranger_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(b"\x00\n\r\xff\xfa\xf0\xfb\xfc\xfd\xfe\xf4\x06\x1fa\xc3\xa9"), max_size=300
    ).map(bytes),
)


@given(stranger_bytes, st.lists(st.integers(min_value=0), max_size=12), st.integers(0, 40))
def test_any_bytes_cut_anywhere_give_the_lines_and_replies_they_give_whole(data, points, limit):
    whole = parse([data], limit)
    assert parse(cut(data, points), limit) == whole
    assert parse([bytes([b]) for b in data], limit) == whole  # one byte per segment
    assert not any(b"\r" in line or b"\n" in line for line in whole[0])


# -- a model of a telnet client's stream: each piece is what it sends and what it should cause


@dataclass
class Piece:
    wire: bytes
    text: bytes = b""  # what it adds to the line
    end: bytes | None = None  # a line ending
    reply: bytes = b""  # what the server answers


plain = st.sampled_from([b for b in range(256) if b not in b"\x00\n\r\xff"])
text_piece = st.lists(plain, min_size=1, max_size=10).map(bytes).map(lambda t: Piece(t, text=t))
ff_piece = st.just(Piece(IAC + IAC, text=IAC))
end_piece = st.sampled_from([b"\r\n", b"\r\0", b"\n", b"\r"]).map(lambda e: Piece(e, end=e))
command_piece = st.integers(0xEC, 0xF9).map(  # EOF SUSP ABORT EOR SE NOP DM BRK IP ... GA
    lambda code: Piece(IAC + bytes([code]))
)


def _negotiation(verb: bytes, option: int) -> Piece:
    option_byte = bytes([option])
    if verb == DO:
        reply = IAC + (WILL if option_byte == TM else WONT) + option_byte
    elif verb == WILL:
        reply = IAC + DONT + option_byte
    else:
        reply = b""  # WONT and DONT of what is off already: nothing to say
    return Piece(IAC + verb + option_byte, reply=reply)


negotiation_piece = st.builds(
    _negotiation,
    st.sampled_from([WILL, WONT, DO, DONT]),
    # The options clients use (timing mark, echo, SGA, TTYPE, NAWS, LINEMODE, ...), or any.
    st.one_of(st.sampled_from(b"\x00\x01\x03\x06\x18\x1f\x22\x27\xff"), st.integers(0, 255)).filter(
        lambda o: o not in (10, 13)
    ),
)
sub_piece = st.builds(
    lambda option, payload: Piece(IAC + SB + option + payload.replace(IAC, IAC + IAC) + IAC + SE),
    st.sampled_from([NAWS, TTYPE, b"\x27", IAC + IAC]),
    st.binary(max_size=20),
)
any_piece = st.one_of(
    text_piece, ff_piece, end_piece, command_piece, negotiation_piece, sub_piece
).map(lambda piece: [piece])
# A lone CR ends a line at once; an LF after it, even past a command, belongs to it.
cr_then_lf = st.lists(st.one_of(command_piece, negotiation_piece, sub_piece), max_size=2).map(
    lambda between: [Piece(b"\r", end=b"\r"), *between, Piece(b"\n", end=b"\n")]
)
stream = st.lists(st.one_of(any_piece, cr_then_lf), max_size=30).map(
    lambda groups: [piece for group in groups for piece in group]
)


def expected_lines(pieces: list[Piece], limit: int) -> list[bytes]:
    lines, line, after_cr = [], b"", False
    for piece in pieces:
        if piece.end is not None:
            if after_cr and piece.end == b"\n":  # CR, then LF: one line ending
                after_cr = False
                continue
            lines.append(line if len(line) <= limit else TOO_LONG)
            line, after_cr = b"", piece.end == b"\r"
        elif piece.text:
            line, after_cr = line + piece.text, False
    if len(line) > limit:
        lines.append(TOO_LONG)
    return lines


@given(stream, st.lists(st.integers(min_value=0), max_size=12), st.integers(1, 40))
def test_telnet_commands_are_answered_and_never_reach_a_line(pieces, points, limit):
    data = b"".join(p.wire for p in pieces)
    lines, replies, dropped = parse(cut(data, points), limit)
    assert lines == expected_lines(pieces, limit)
    assert replies == b"".join(p.reply for p in pieces)
    assert not dropped


def test_a_sub_negotiation_that_never_ends_drops_the_connection():
    lines, _, dropped = parse([b"hi\n" + IAC + SB + NAWS + b"x" * 5000])
    assert lines == [b"hi"]
    assert dropped


@given(st.text(), st.text(min_size=1, max_size=20))
def test_output_never_holds_an_iac_so_nothing_needs_escaping(text, name):
    """UTF-8 has no 0xFE or 0xFF bytes: what the door sends needs no IAC doubling."""
    for data in (encode_line(Notice(text)), encode_line(Message(1, 0.0, name, text))):
        assert b"\xff" not in data and b"\xfe" not in data


# -- raw sockets speaking telnet to a real server ---------------------------------------------


async def arrives(client: RawClient, data: bytes, after: int = 0) -> int:
    """Wait until C{data} has arrived after offset C{after}; where it ends."""
    deadline = time.monotonic() + 5
    while (found := client.received.find(data, after)) < 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{data!r} never arrived; got {client.received[after:]!r}")
        await pause(0.01)
    return found + len(data)


@pytest.mark.parametrize("haproxy", [False, True], ids=["direct", "behind-haproxy"])
@pytest_twisted.ensureDeferred
async def test_a_telnet_client_over_a_socket_gets_a_clean_session(serve, haproxy):
    server = await serve(doors=("line",), haproxy=haproxy)
    port = server.ports["line"]
    ann = await raw_client(port, via_haproxy_from="192.0.2.1" if haproxy else None)
    bob = await raw_client(port, via_haproxy_from="192.0.2.2" if haproxy else None)
    for client in (ann, bob):
        await arrives(client, b"/help lists the commands.\r\n")
    assert IAC not in ann.received  # nothing negotiated unasked
    ann_name = re.match(rb"\* you are (\S+)\r\n", ann.received).group(1)
    # PuTTY's opening: offers and requests, all refused, then its window and terminal.
    ann.send(IAC + WILL + NAWS + IAC + WILL + TTYPE + IAC + DO + ECHO)
    at = await arrives(ann, IAC + DONT + NAWS + IAC + DONT + TTYPE + IAC + WONT + ECHO)
    ann.send(IAC + SB + NAWS + b"\x00\x50\x00\x0a" + IAC + SE)  # 80 x 10: a LF inside
    ann.send(IAC + SB + TTYPE + b"\x00XTERM" + IAC + SE + b"hello\r\0")
    await arrives(bob, ann_name + b": hello\r\n")
    # Ctrl-C: the timing mark is answered, and what follows is still read.
    ann.send(IAC + b"\xf4" + IAC + DO + TM)
    at = await arrives(ann, IAC + WILL + TM, at)
    ann.send(b"/list\r\n")
    at = await arrives(ann, b"* online (2): ", at)
    ann.send(b"caf" + IAC + IAC + b"\r\n")
    at = await arrives(ann, b"! your line was not valid UTF-8", at)
    await arrives(bob, ann_name + b": caf\xef\xbf\xbd\r\n")
    ann.send(b"/exit\r\0")
    await arrives(ann, b"* Goodbye, " + ann_name + b"!\r\n", at)
    await ann.closed


# -- Debian's telnet, in a terminal --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_debian_telnet_after_ctrl_c_still_shows_what_the_server_says(serve, terminals):
    """Two people on Debian's telnet in terminals; one presses Ctrl-C and Ctrl-Z, and chats on."""
    needs("telnet", "tmux")
    server = await serve(doors=("line",))
    telnet = f"{shutil.which('telnet')} 127.0.0.1 {server.ports['line']}"
    await terminals.open("ann", telnet)
    ann = (await terminals.shows("ann", r"^\* you are (\S+)$")).group(1)
    await terminals.shows("ann", r"^\* Welcome to chatd")
    await terminals.open("bob", telnet)
    await terminals.shows("bob", r"^\* Welcome to chatd")
    await terminals.run("send-keys", "-t", "ann", "C-c")
    await terminals.run("send-keys", "-t", "ann", "C-z")  # telnet sends SUSP: not text
    await terminals.type("ann", "/list")
    await terminals.shows("ann", rf"^\* online \(2\): .*{ann}")
    await terminals.type("ann", "still here after Ctrl-C")
    await terminals.shows("bob", rf"^{ann}: still here after Ctrl-C$")
    await terminals.type("bob", "welcome back")
    await terminals.shows("ann", r": welcome back$")
    await terminals.type("ann", "/exit")
    await terminals.shows("ann", rf"^\* Goodbye, {ann}!$")
    await terminals.shows("ann", r"^Connection closed by foreign host")
    await terminals.shows("bob", rf"^\* {ann} left$")
