"""The line door: unit tests on a StringTransport, then the real thing over sockets."""

from __future__ import annotations

import datetime
import time

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import SSL4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport

from chatd.config import Config, ConfigError
from chatd.doors.line import LineFactory
from chatd.service import build
from chatd.testing import make_room
from tests.support import (
    RawClient,
    flood_until_dropped,
    line_client,
    never_reading_socket,
    pause,
    raw_client,
)


class Telnet:
    """One line-door connection on a StringTransport."""

    def __init__(self, factory: LineFactory) -> None:
        self.transport = StringTransport()
        self.clock = factory.room.clock
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        self.protocol.makeConnection(self.transport)
        self.clock.advance(0)

    def type(self, data: bytes) -> None:
        """One reactor turn: the data arrives, then what it caused is written out."""
        self.protocol.dataReceived(data)
        self.clock.advance(0)

    def read(self) -> list[str]:
        data = self.transport.value()
        self.transport.clear()
        return data.decode("utf-8").splitlines()


@pytest.fixture
def door():
    room = make_room(
        max_line_bytes=20, max_output_bytes=1000, lines_per_second=0, messages_per_hour=0
    )
    factory = LineFactory(room)
    alice, bob = Telnet(factory), Telnet(factory)
    alice.read(), bob.read()
    return room, factory, alice, bob


def test_lines_end_with_crlf_and_either_ending_is_accepted(door):
    _, _, alice, bob = door
    alice.type(b"one\r\ntwo\nthr")
    alice.type(b"ee\n")
    assert bob.transport.value() == b"Guest1: one\r\nGuest1: two\r\nGuest1: three\r\n"


@pytest.mark.parametrize(
    "chunks",
    [
        [b"x" * 21 + b"\nafter\n"],
        [b"x" * 15, b"x" * 15, b"x" * 15 + b"\r\nafter\n"],  # the long line arrives in pieces
        [b"x" * 100, b"\nafter\n"],
    ],
)
def test_an_overlong_line_is_refused_and_the_next_lines_still_arrive(door, chunks):
    _, _, alice, bob = door
    for chunk in chunks:
        alice.type(chunk)
    assert alice.read() == [
        "! your line was longer than 20 bytes and was not sent; split it into shorter lines"
    ]
    assert bob.read() == ["Guest1: after"]
    assert alice.transport.connected and not alice.transport.disconnecting


def test_a_line_at_the_limit_is_sent(door):
    _, _, alice, bob = door
    alice.type(b"y" * 20 + b"\r\n")
    alice.type(b"z" * 21 + b"\r\n")
    assert bob.read() == ["Guest1: " + "y" * 20]
    assert len(alice.read()) == 1


def test_invalid_utf8_is_reported_and_replaced(door):
    _, _, alice, bob = door
    alice.type(b"caf\xe9 ok\n")
    assert alice.read() == [
        "! your line was not valid UTF-8; the bad bytes were replaced with \ufffd"
    ]
    assert bob.read() == ["Guest1: caf\ufffd ok"]


def test_nothing_is_negotiated_unasked(door):
    """A server that opens with IAC DO ... shows garbage in netcat."""
    _, factory, _, _ = door
    carol = Telnet(factory)
    assert carol.transport.value().startswith(b"* you are Guest3\r\n")
    assert b"\xff" not in carol.transport.value()


@pytest.mark.parametrize(
    "key, command", [("Ctrl-C", b"\xf4"), ("Ctrl-Z", b"\xed"), ("Ctrl-\\", b"\xf3")]
)
def test_ctrl_c_in_telnet_is_answered_after_what_was_already_queued(door, key, command):
    """Debian's telnet sends IAC IP IAC DO TIMING-MARK on Ctrl-C (SUSP on Ctrl-Z, BRK on
    Ctrl-\\), then throws away all it receives until the timing mark is answered: unanswered,
    the user never sees a line again."""
    _, _, alice, bob = door
    bob.protocol.dataReceived(b"before\n")
    alice.type(b"\xff" + command + b"\xff\xfd\x06")
    assert alice.transport.value() == b"Guest2: before\r\n\xff\xfb\x06"
    alice.transport.clear()
    alice.type(b"\xff" + command + b"\xff\xfd\x06")  # every time, not only the first
    assert alice.transport.value() == b"\xff\xfb\x06"
    alice.transport.clear()
    alice.type(b"/list\r\n")
    assert alice.read() == ["* online (2): Guest1, Guest2"]


def test_are_you_there_is_answered(door):
    _, _, alice, _ = door
    alice.type(b"\xff\xf6")  # telnet's "send ayt"
    assert alice.read() == ["* yes, chatd is here"]


def test_options_the_client_offers_or_asks_for_are_refused_once(door):
    _, _, alice, bob = door
    # PuTTY's opening: WILL NAWS, WILL TTYPE, DO ECHO, WILL SGA, DO SGA, WILL LINEMODE
    alice.type(b"\xff\xfb\x1f\xff\xfb\x18\xff\xfd\x01\xff\xfb\x03\xff\xfd\x03\xff\xfb\x22")
    assert alice.transport.value() == (
        b"\xff\xfe\x1f\xff\xfe\x18\xff\xfc\x01\xff\xfe\x03\xff\xfc\x03\xff\xfe\x22"
    )
    alice.transport.clear()
    alice.type(b"\xff\xfc\x1f\xff\xfe\x01hi\r\n")  # WONT and DONT confirm: no answer, no loop
    assert alice.transport.value() == b""
    assert bob.read() == ["Guest1: hi"]


def test_sub_negotiations_are_dropped_whole(door):
    _, _, alice, bob = door
    naws = b"\xff\xfa\x1f\x00\x0a\x00\x0d\xff\xf0"  # a 10 x 13 window: LF and CR inside
    ttype = b"\xff\xfa\x18\x00XTERM\xff\xf0"
    alice.type(b"he" + naws + b"l")
    alice.type(b"lo" + ttype + b"\r\n")
    assert bob.read() == ["Guest1: hello"]
    assert alice.read() == []


def test_a_sub_negotiation_without_end_is_explained_and_closes(door):
    _, _, alice, bob = door
    alice.type(b"hi\n\xff\xfa\x1f" + b"\x00" * 5000 + b"more\n")
    assert alice.read() == [
        "! your connection sent a telnet sub-negotiation (bytes 0xFF 0xFA) with no end in "
        "4096 bytes; closing. Send text as UTF-8"
    ]
    assert alice.transport.disconnecting
    assert bob.read() == ["Guest1: hi"]


def test_iac_iac_is_a_0xff_byte_and_reported_as_invalid_utf8(door):
    _, _, alice, bob = door
    alice.type(b"caf\xff\xff\r\n")
    alice.type(b"\xffes\n")  # a raw 0xFF that starts no telnet command is text too
    assert (
        alice.read()
        == ["! your line was not valid UTF-8; the bad bytes were replaced with \ufffd"] * 2
    )
    assert bob.read() == ["Guest1: caf\ufffd", "Guest1: \ufffdes"]


def test_every_line_ending_a_client_may_send_ends_a_line(door):
    _, _, alice, bob = door
    alice.type(b"character\r\0mode\r")  # telnet in character mode; a bare CR
    alice.type(b"\0crlf\r")  # the NUL after a CR cut off by the end of a segment
    alice.type(b"\nlf\nmac\rclassic\r\n")
    assert bob.read() == [
        "Guest1: " + line for line in ["character", "mode", "crlf", "lf", "mac", "classic"]
    ]
    assert alice.read() == []


def test_exit_closes_and_later_lines_are_ignored(door):
    room, _, alice, bob = door
    alice.type(b"/exit\nnot sent\n")
    assert alice.read() == ["* Goodbye, Guest1!"]
    assert alice.transport.disconnecting
    alice.protocol.connectionLost(None)
    room.clock.advance(0)  # the reactor turn ends: the leave is announced
    assert bob.read() == ["* Guest1 left"]
    assert room.online() == ["Guest2"]


def test_a_client_that_stops_reading_is_dropped_past_the_cap(door, log):
    room, _, alice, bob = door
    bob.protocol.output.pauseProducing()  # what the transport does when its buffer fills
    for i in range(60):
        alice.type(b"message %d\n" % i)
    assert bob.transport.disconnected  # aborted, not a polite close that waits for the buffer
    assert not alice.transport.disconnecting
    assert any("stopped reading; over 1000 bytes queued" in t for t in log.texts())


def test_a_reader_that_catches_up_is_kept(door):
    _, _, alice, bob = door
    for _ in range(3):
        bob.protocol.output.pauseProducing()
        for i in range(30):
            alice.type(b"message %d\n" % i)
        bob.protocol.output.resumeProducing()
    assert not bob.transport.disconnecting


# -- over real sockets ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_telnet_users_chat_and_bad_input_is_survived(serve):
    server = await serve(doors=("line",), max_line_bytes=100)
    alice = await line_client(server.ports["line"])
    bob = await line_client(server.ports["line"])
    alice_name = alice.lines[0].split()[-1]
    alice.send(b"x" * 5000)
    await alice.expect(r"^! your line was longer than 100 bytes")
    alice.send(b"caf\xc3\xa9 \xff\xfe\n")
    await alice.expect(r"^! your line was not valid UTF-8")
    alice.send("clear\x1b[2J\x1b]0;title\x07\x07 mid\x08dle")
    await bob.expect(rf"^{alice_name}: caf\u00e9 \ufffd\ufffd$")
    await bob.expect(rf"^{alice_name}: clear middle$")
    assert not any("x" * 100 in line for line in bob.lines)
    alice.send("/exit")
    await alice.closed
    await bob.expect(rf"^\* {alice_name} left$")
    await server.stop()  # what bob reads when the server shuts down: stopped here, not after
    await bob.closed
    assert bob.lines[-1] == "* the server is shutting down"


@pytest_twisted.ensureDeferred
async def test_connections_and_commands_are_logged_and_audited(serve, tmp_path, log):
    server = await serve(doors=("line",))
    alice = await line_client(server.ports["line"])
    alice.send("/rename Alice")
    await alice.expect(r"^\* you are Alice")
    alice.send("/list")
    await alice.expect(r"^\* online")
    alice.close()
    await alice.closed
    while server.room.members.sessions:
        await pause(0.01)
    logged = log.texts()
    assert any("connected" in line and "line 127.0.0.1" in line for line in logged)
    assert any("runs /rename Alice" in line for line in logged)
    assert any("runs /list" in line for line in logged)
    assert any("Alice line 127.0.0.1> disconnected" in line for line in logged)
    audit = (tmp_path / "chat_log.txt").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in audit] == [
        f"{alice.lines[0].split()[-1]} line 127.0.0.1 /rename Alice",
        "Alice line 127.0.0.1 /list",
    ]


@pytest_twisted.ensureDeferred
async def test_a_telnet_client_that_never_reads_is_dropped_others_keep_chatting(serve, log):
    server = await serve(
        doors=("line",), max_output_bytes=65536, max_line_bytes=40_000,
        max_message_bytes=40_000, lines_per_second=0, messages_per_hour=0,
    )  # fmt: skip
    talker = await line_client(server.ports["line"])
    listener = await line_client(server.ports["line"])
    sock = never_reading_socket(server.ports["line"])
    while len(server.room.members.sessions) < 3:
        await pause(0.01)
    await flood_until_dropped(server, talker, listener, sock, log)


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_who_says_goodbye_is_disconnected_once_it_has_read_everything(
    serve,
):
    server = await serve(
        doors=("line",), max_line_bytes=40_000, max_message_bytes=40_000,
        max_output_bytes=2**24, lines_per_second=0, messages_per_hour=0,
    )  # fmt: skip
    talker = await line_client(server.ports["line"])
    sock = never_reading_socket(server.ports["line"])
    port = sock.getsockname()[1]
    while not any(s.client.transport.getPeer().port == port for s in server.room.members.sessions):
        await pause(0.01)
    (slow,) = (s for s in server.room.members.sessions if s.client.transport.getPeer().port == port)
    for i in range(500):  # until Twisted's buffer for it is full, under max_output_bytes
        talker.send(f"{i} " + "z" * 30_000)
        talker.send("/list")
        await talker.expect(r"^\* online \(2\)")
        if slow.client.output.paused:
            break
    else:
        connected = slow in server.room.members.sessions
        raise AssertionError(f"the reader never fell behind; still connected: {connected}")
    sock.sendall(b"/exit\n")
    sock.setblocking(False)
    received = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # read everything; the server must then close
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            await pause(0.005)
            continue
        if not data:
            break
        received += data
    else:
        raise AssertionError("the server never closed the connection after /exit")
    assert received.rstrip().endswith(b"* Goodbye, " + slow.user.name.encode() + b"!")
    sock.close()


@pytest_twisted.ensureDeferred
async def test_behind_haproxy_each_user_counts_under_their_own_address(serve):
    server = await serve(doors=("line",), haproxy=True, connections_per_address=1)
    port = server.ports["line"]
    ann = await raw_client(port, via_haproxy_from="192.0.2.1")
    await ann.lines(2)  # who you are, and the welcome
    bob = await raw_client(port, via_haproxy_from="192.0.2.2")
    await bob.lines(2)  # HAProxy's own address would have refused this one
    ann.send(b"/status\n")
    line = b""
    while not line.startswith(b"* your sessions"):
        line = await ann.lines(1)
    assert line.startswith(b"* your sessions (1): telnet from 192.0.2.1 ")
    again = await raw_client(port, via_haproxy_from="192.0.2.1")
    assert b"too many connections from your address" in await again.lines(1)


def self_signed_pem(directory) -> str:
    """A throwaway key and certificate for 127.0.0.1, in one PEM file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    path = directory / "server.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return str(path)


@pytest_twisted.ensureDeferred
async def test_exit_over_tls_closes_the_connection(serve, tmp_path):
    server = await serve(doors=())
    pem = self_signed_pem(tmp_path)
    port = await server.listen(f"ssl:0:interface=127.0.0.1:privateKey={pem}", "line")
    client = RawClient()
    await SSL4ClientEndpoint(reactor, "127.0.0.1", port, ssl.CertificateOptions()).connect(
        Factory.forProtocol(lambda: client)
    )
    await client.lines(2)  # who you are, and the welcome
    client.send(b"/exit\r\n")
    assert (await client.lines(1)).startswith(b"* Goodbye, ")
    await client.closed.addTimeout(5, reactor)  # the server closes, not the client


@pytest_twisted.ensureDeferred
async def test_behind_haproxy_a_connection_without_its_header_is_closed(serve):
    server = await serve(doors=("line",), haproxy=True, handshake_timeout=0.3)
    silent = await raw_client(server.ports["line"])  # never sends the PROXY header
    await silent.closed.addTimeout(5, reactor)
    assert not server.room.members.sessions


def test_the_proxy_protocol_inside_tls_is_refused_with_a_clear_error(tmp_path):
    config = Config(data_dir=str(tmp_path), line="haproxy:ssl:7000:privateKey=key.pem")
    with pytest.raises(ConfigError, match="end TLS at HAProxy and give chatd haproxy:tcp:"):
        build(config, reactor)
