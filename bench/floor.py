"""The floor: what a fan-out costs a server that does nothing else.

    python -m bench.floor --door line --receivers 1000 --rate 50 --messages 500

Runs bench.fanout, same generator, same load, against a bare server instead of chatd: one
epoll loop that, for each line a sender sends, makes the delivery once (the line door's
bytes, one WebSocket frame, or one IRC PRIVMSG line) and does one C{send()} of it per
receiver. No chat, no storage, no Twisted. Its CPU per delivery is almost all kernel time,
the part chatd cannot save; C{bench.all} divides chatd's CPU per delivery by it, measured
in the same run.

C{python -m bench.floor --serve --line tcp:PORT:interface=HOST --web ... --irc ...} is the
server itself; bench.fanout's C{--spawn} starts it with chatd's options, and it ignores the rest.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import select
import shlex
import signal
import socket
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/floor.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import fanout  # noqa: E402

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IN, OUT = select.EPOLLIN, select.EPOLLOUT
LOBBY = b"#lobby"


def frame(payload: bytes) -> bytes:
    """One unmasked final text frame, as a server sends it (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def unmask(data: bytes, start: int, size: int, mask: bytes) -> bytes:
    key = (mask * (size // 4 + 1))[:size]
    payload = int.from_bytes(data[start : start + size], "little")
    return (payload ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class Client:
    """One connection: its door, what it sent that is not parsed yet, what waits to go."""

    __slots__ = ("sock", "kind", "ws", "open", "buf", "out", "room")

    def __init__(self, sock: socket.socket, kind: str) -> None:
        self.sock = sock
        self.kind = kind  # "line", "ws" or "irc"
        self.ws = kind == "ws"
        self.open = not self.ws  # a WebSocket is open once it has been answered
        self.buf = b""
        self.out = b""
        self.room = LOBBY


class Floor:
    """The bare fan-out server: accept, greet, and pass every line on to everyone else."""

    def __init__(self, line: socket.socket, web: socket.socket, irc: socket.socket) -> None:
        self.ep = select.epoll()
        self.listeners = {
            s.fileno(): (s, k) for s, k in ((line, "line"), (web, "ws"), (irc, "irc"))
        }
        for fd in self.listeners:
            self.ep.register(fd, IN)
        self.clients: dict[int, Client] = {}
        # receivers of each door in each room, for the loop (C{/join #x} moves a connection)
        self.rooms: dict[bytes, dict[str, list[socket.socket]]] = {}

    def run(self) -> None:
        stop = False

        def stopping(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, stopping)
        while not stop:
            try:
                events = self.ep.poll(0.5)
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd in self.listeners:
                    self.accept(*self.listeners[fd])
                elif ev & OUT:
                    self.drain(fd)
                else:
                    self.read(fd)

    def accept(self, listener: socket.socket, kind: str) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.clients[sock.fileno()] = Client(sock, kind)
            self.ep.register(sock.fileno(), IN)
            if kind == "line":
                self.enter(self.clients[sock.fileno()], LOBBY)
                self.send(sock, b"* you are on the floor\r\n")
            elif kind == "irc":  # the generator's IRC client is registered at the 366
                self.enter(self.clients[sock.fileno()], LOBBY)
                self.send(sock, b":floor 366 you #lobby :End of /NAMES list.\r\n")

    def read(self, fd: int) -> None:
        c = self.clients.get(fd)
        if c is None:
            return
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close(fd)
            return
        c.buf += data
        if not c.open:
            end = c.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, c.buf = c.buf[:end].decode("latin-1"), c.buf[end + 4 :]
            key = next(
                (v.strip() for k, _, v in (h.partition(":") for h in head.split("\r\n"))
                 if k.strip().lower() == "sec-websocket-key"),
                "",
            )  # fmt: skip
            accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
            self.send(
                c.sock,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n",
            )
            c.open = True
            self.enter(c, LOBBY)
        for line in self.lines(c):
            if line.startswith(b"/join "):  # bench.fanout --rooms: one room per connection
                self.leave(c)
                self.enter(c, line[6:].strip())
            elif c.kind != "irc":
                self.fan_out(c, line)
            elif line.startswith(b"PRIVMSG "):  # not NICK, USER, PONG
                self.fan_out(c, line.partition(b" :")[2])

    def lines(self, c: Client) -> list[bytes]:
        """The complete lines (line door) or text frames (WebSocket) in C{c.buf}."""
        buf = c.buf
        if not c.ws:
            cut = buf.rfind(b"\n") + 1
            c.buf = buf[cut:]
            return [line.rstrip(b"\r") for line in buf[:cut].split(b"\n") if line]
        found, i, n = [], 0, len(buf)
        while n - i >= 6:  # a client frame: header, 4-byte mask, payload
            size, start = buf[i + 1] & 0x7F, i + 2
            if size == 126:
                size, start = int.from_bytes(buf[i + 2 : i + 4], "big"), i + 4
            elif size == 127:
                size, start = int.from_bytes(buf[i + 2 : i + 10], "big"), i + 10
            if start + 4 + size > n:
                break
            if buf[i] & 0x0F == 1:  # text; pongs and the rest are not lines
                found.append(unmask(buf, start + 4, size, buf[start : start + 4]))
            i = start + 4 + size
        c.buf = buf[i:]
        return found

    def enter(self, c: Client, room: bytes) -> None:
        c.room = room
        self.rooms.setdefault(room, {"line": [], "ws": [], "irc": []})[c.kind].append(c.sock)

    def leave(self, c: Client) -> None:
        socks = self.rooms[c.room][c.kind]
        if c.sock in socks:
            socks.remove(c.sock)

    def fan_out(self, sender: Client, line: bytes) -> None:
        """The delivery made once per door, then one send() per receiver in the sender's
        room but the sender."""
        origin, room = sender.sock, self.rooms[sender.room]
        for kind, data in (
            ("line", b"sender: " + line + b"\r\n"),
            ("ws", frame(b"sender: " + line)),
            ("irc", b":sender!s@floor PRIVMSG #lobby :" + line + b"\r\n"),
        ):
            for sock in room[kind]:
                if sock is not origin:
                    self.send(sock, data)

    def send(self, sock: socket.socket, data: bytes) -> None:
        c = self.clients[sock.fileno()]
        if c.out:  # the kernel took less than everything before: keep the order
            c.out += data
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # closed: its read says so
        if sent < len(data):
            c.out = data[sent:]
            self.ep.modify(sock.fileno(), IN | OUT)

    def drain(self, fd: int) -> None:
        c = self.clients.get(fd)
        if c is None:
            return
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            return
        except OSError:
            self.close(fd)
            return
        c.out = c.out[sent:]
        if not c.out:
            self.ep.modify(fd, IN)

    def close(self, fd: int) -> None:
        c = self.clients.pop(fd, None)
        if c is None:
            return
        self.ep.unregister(fd)
        if c.open:
            self.leave(c)
        c.sock.close()


def listen(spec: str) -> socket.socket:
    """A listening socket for chatd's endpoint form C{tcp:PORT:interface=HOST}."""
    parts = spec.split(":")
    if parts[0] != "tcp":
        raise SystemExit(f"floor: only tcp: endpoints, not {spec!r}")
    options = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((options.get("interface", "127.0.0.1"), int(parts[1])))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def serve(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor --serve")
    p.add_argument("--line", required=True)
    p.add_argument("--web", required=True)
    p.add_argument("--irc", required=True)
    args, _ignored = p.parse_known_args(argv)  # chatd's other options mean nothing here
    Floor(listen(args.line), listen(args.web), listen(args.irc)).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        return serve(argv[1:])
    if "--haproxy" in argv or "--server-cmd" in argv:
        print("floor: the floor server takes neither --haproxy nor --server-cmd", file=sys.stderr)
        return 2
    cmd = f"{shlex.quote(sys.executable)} -m bench.floor --serve"
    if "--label" not in argv:
        a = fanout.parse_args(argv)
        argv = ["--label", f"floor {a.door} {a.receivers}r x{a.senders}s @{a.rate:g}/s", *argv]
    return fanout.main(["--spawn", "--server-cmd", cmd, *argv])


if __name__ == "__main__":
    sys.exit(main())
