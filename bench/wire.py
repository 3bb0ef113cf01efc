"""Minimal, cheap clients for chatd's line, WebSocket and IRC doors.

Written by hand on raw non-blocking sockets so that one generator process can drain
thousands of connections: a receiver never decodes text, it only finds the `b <seq> <ns>`
stamp with one regular expression over a whole chunk.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import os
import re
import socket

LINE = "line"
WS = "ws"
IRC = "irc"
IRC_CHANNEL = b"#lobby"  # the spawned server's default room, which IRC clients auto-join

# A delivered bench message, as the line door writes it: "name: b <seq> <monotonic_ns>"
# (IRC: "... PRIVMSG #lobby :b <seq> <ns>"). The WebSocket path joins frame payloads with
# "\n" so the same expression serves all three.
STAMP = re.compile(rb": ?b \d+ (\d+)\r?\n")
SEQ = re.compile(rb": ?b (\d+) \d+\r?\n")  # the sender's probe only needs how far it got

RECV_SIZE = 65536

# Connection states.
CONNECTING = 0  # TCP connect in progress
HANDSHAKE = 1  # waiting for the first line (line door) or the 101 answer (WebSocket)
OPEN = 2
CLOSED = 3


class WireError(Exception):
    """The server broke the protocol (bad handshake, masked frame...)."""


def check_loopback(host: str) -> str:
    """The bench only talks to this machine; refuse anything else early."""
    try:
        addr = socket.gethostbyname(host)
    except OSError as e:
        raise ValueError(f"cannot resolve {host!r}: {e}") from None
    if not ipaddress.ip_address(addr).is_loopback:
        raise ValueError(f"{host} is {addr}, not a loopback address; the bench stays on 127.0.0.1")
    return addr


def proxy_header(sock: socket.socket) -> bytes:
    """What HAProxy sends first with C{send-proxy}: the client's and the server's address."""
    (src, sport), (dst, dport) = sock.getsockname()[:2], sock.getpeername()[:2]
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def ws_request(host: str, port: int, path: str = "/") -> bytes:
    """The client half of the opening handshake (RFC 6455 section 4.1), no subprotocol."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Origin: http://{host}:{port}\r\n"
        "\r\n"
    ).encode()


def irc_register(sock: socket.socket) -> bytes:
    """NICK and USER, with a nick unique on this machine (a taken one would stall)."""
    nick = f"b{os.getpid()}x{sock.fileno()}"
    return f"NICK {nick}\r\nUSER bench 0 * :bench\r\n".encode()


def irc_say(line: bytes) -> bytes:
    return b"PRIVMSG " + IRC_CHANNEL + b" :" + line + b"\r\n"


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One final client frame; clients must mask (RFC 6455 section 5.3)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if n:
        key = (mask * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little"
        )
    return head + mask + payload


class Conn:
    """One client connection and its parsing state; slots keep 10k of them small."""

    __slots__ = ("sock", "fd", "door", "state", "buf", "frag", "got", "since", "out")

    def __init__(self, sock: socket.socket, door: str, since: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.door = door
        self.state = CONNECTING
        self.buf = b""  # unparsed tail: partial line, HTTP answer or WebSocket frame
        self.frag = b""  # WebSocket continuation frames so far
        self.got = 0  # bench deliveries counted on this connection
        self.since = since  # monotonic ns when the current state began
        self.out = b""  # bytes still to write (handshake, pong, messages)


def open_conn(addr: str, port: int, door: str, now: int) -> Conn:
    """Start a non-blocking connect; the caller waits for EPOLLOUT."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    err = sock.connect_ex((addr, port))
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, os.strerror(err))
    return Conn(sock, door, now)


def ws_feed(c: Conn, data: bytes) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """Split server frames out of the stream: (text/binary messages, control frames).

    Server frames are never masked, so a frame is a 2/4/10-byte header and the payload;
    the fast path is a final text frame under 126 bytes, which is every chat line.
    """
    buf = c.buf + data if c.buf else data
    n = len(buf)
    i = 0
    msgs: list[bytes] = []
    ctrl: list[tuple[int, bytes]] = []
    while n - i >= 2:
        b0 = buf[i]
        b1 = buf[i + 1]
        if b1 & 0x80:
            raise WireError("server sent a masked frame")
        size = b1 & 0x7F
        if size < 126:
            start = i + 2
        elif size == 126:
            if n - i < 4:
                break
            size = int.from_bytes(buf[i + 2 : i + 4], "big")
            start = i + 4
        else:
            if n - i < 10:
                break
            size = int.from_bytes(buf[i + 2 : i + 10], "big")
            start = i + 10
        end = start + size
        if end > n:
            break
        op = b0 & 0x0F
        if op & 0x8:
            ctrl.append((op, buf[start:end]))
        elif op:
            if b0 & 0x80:
                msgs.append(buf[start:end])
            else:
                c.frag = buf[start:end]
        else:
            c.frag += buf[start:end]
            if b0 & 0x80:
                msgs.append(c.frag)
                c.frag = b""
        i = end
    c.buf = buf[i:] if i < n else b""
    return msgs, ctrl


def http_answer(c: Conn, data: bytes) -> bytes | None:
    """Collect the HTTP answer to the upgrade; return what follows it once it is a 101."""
    buf = c.buf + data
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 16384:
            raise WireError("HTTP answer too long")
        c.buf = buf
        return None
    status = buf[: buf.find(b"\r\n")]
    if b" 101 " not in status + b" ":
        raise WireError(f"upgrade refused: {status.decode('latin-1')!r}")
    c.buf = b""
    return buf[end + 4 :]
