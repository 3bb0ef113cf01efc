"""Generator processes: receivers (many connections each) and the sender.

Each runs one epoll loop over raw sockets and talks to the coordinator through a
multiprocessing pipe that sits in the same epoll set, so no threads and no busy waiting.
Messages on the pipe are tuples whose first item names them:

coordinator -> worker: ("go",) ("sender_done",) ("report",) ("stop",)
worker -> coordinator: ("ready", info) ("result", info) ("sent", info)
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from bench.wire import (
    CLOSED,
    CONNECTING,
    HANDSHAKE,
    IRC,
    LINE,
    OPEN,
    RECV_SIZE,
    SEQ,
    STAMP,
    WS,
    Conn,
    WireError,
    http_answer,
    irc_register,
    irc_say,
    open_conn,
    proxy_header,
    ws_feed,
    ws_frame,
    ws_request,
)

IN = select.EPOLLIN
OUT = select.EPOLLOUT
MAX_NOTES = 8  # error samples kept per process


@dataclass
class Target:
    """Where the server's doors are."""

    addr: str
    line_port: int
    web_port: int
    ws_path: str = "/"
    haproxy: bool = False  # the doors expect a PROXY header first (haproxy: endpoints)
    irc_port: int = 6667

    def port(self, door: str) -> int:
        if door == IRC:
            return self.irc_port
        return self.line_port if door == LINE else self.web_port


@dataclass
class ReceiverPlan:
    """What one receiver process opens and how long it waits."""

    target: Target
    doors: list[str]  # one entry per connection
    messages: int  # bench messages each connection should get once measuring
    connect_window: int  # connections being set up at once (the server's backlog is small)
    connect_timeout: float
    drain_timeout: float  # after the sender is done, give up when nothing came for this long
    rooms: list[str] = field(default_factory=list)  # per connection: a room to /join, or none


@dataclass
class SenderPlan:
    """The sending connections and the schedule."""

    target: Target
    doors: list[str]  # one entry per sending connection
    messages: int
    rate: float  # messages/s over all senders; 0 = as fast as the socket takes them
    window: int  # with rate 0: messages queued in the server at most (0 = no limit)
    connect_timeout: float
    run_timeout: float
    rooms: list[str] = field(default_factory=list)  # per sending connection: its room, or none


def _note(notes: list[str], text: str) -> None:
    if len(notes) < MAX_NOTES:
        notes.append(text)


_ERR_LINE = re.compile(rb"(?:^|\n)(! [^\r\n]*)")
_ERR_WS = re.compile(rb"\x81[\x02-\x7d](! [^\x81]{0,160})")


def _close(ep: select.epoll, conns: Iterable[Conn]) -> None:
    """On "stop": close every socket and the epoll set before the process returns."""
    for c in conns:
        c.sock.close()
    ep.close()


def _join_line(door: str, room: str) -> bytes:
    """What a connection sends to move into C{room}: C{/join}, as a person types it."""
    line = b"/join " + room.encode()
    return line + b"\n" if door == LINE else ws_frame(line)


def _error_lines(data: bytes, door: str, notes: list[str]) -> int:
    """Count server error lines ("! ...") in a chunk; called only when b"! " occurs."""
    found = (_ERR_WS if door == WS else _ERR_LINE).findall(data)
    for text in found[: MAX_NOTES - len(notes)]:
        _note(notes, text.decode("utf-8", "replace")[:160])
    return len(found)


def receiver(ctl: Connection, plan: ReceiverPlan) -> None:
    """Open plan.doors connections, drain them, and once told "go" time every stamp."""
    mono = time.monotonic_ns
    findall = STAMP.findall
    target = plan.target
    ep = select.epoll()
    ctl_fd = ctl.fileno()
    ep.register(ctl_fd, IN)
    conns: dict[int, Conn] = {}
    opening: dict[int, Conn] = {}
    rooms = plan.rooms or [""] * len(plan.doors)
    todo = list(reversed(list(zip(plan.doors, rooms, strict=True))))
    joining: dict[int, str] = {}  # fd -> the room it /joins once open
    notes: list[str] = []
    lat = {LINE: array("q"), WS: array("q")}
    lat[IRC] = lat[LINE]  # a stream of lines too
    failed = disconnected = error_lines = 0
    received = expected = 0
    t_go = t_first = t_last = 0
    cpu_go = 0.0
    sender_done_at = 0
    measuring = ready_sent = result_sent = False
    window = max(1, plan.connect_window)
    connect_ns = int(plan.connect_timeout * 1e9)
    drain_ns = int(plan.drain_timeout * 1e9)

    def drop(c: Conn, why: str | None) -> None:
        nonlocal failed, disconnected
        if c.state == OPEN:
            disconnected += 1
        else:
            failed += 1
            opening.pop(c.fd, None)
        if why:
            _note(notes, why)
        c.state = CLOSED
        joining.pop(c.fd, None)
        try:
            ep.unregister(c.fd)
        except (OSError, ValueError):
            pass
        c.sock.close()
        del conns[c.fd]

    def result() -> dict:
        now = mono()
        end = t_last if received else now
        short = sum(1 for c in conns.values() if c.got < plan.messages)
        return {
            "conns": len(plan.doors),
            "failed": failed,
            "disconnected": disconnected,
            "short_conns": short + disconnected + failed,
            "received": received,
            "expected": expected,
            "t_first": t_first,
            "t_last": t_last,
            "cpu": time.process_time() - cpu_go,
            "wall": (end - t_go) / 1e9 if t_go else 0.0,
            "error_lines": error_lines,
            "notes": notes,
            "lat_line": lat[LINE].tobytes(),
            "lat_ws": lat[WS].tobytes(),
        }

    while True:
        now = mono()
        while todo and len(opening) < window:
            door, room = todo.pop()
            try:
                c = open_conn(target.addr, target.port(door), door, now)
            except OSError as e:
                failed += 1
                _note(notes, f"connect: {e}")
                continue
            conns[c.fd] = opening[c.fd] = c
            if room:
                joining[c.fd] = room
            ep.register(c.fd, OUT)
        if opening:
            for c in [c for c in opening.values() if now - c.since > connect_ns]:
                drop(c, f"{c.door} connection not ready after {plan.connect_timeout:.0f} s")
        if not ready_sent and not todo and not opening:
            ctl.send(("ready", {"open": len(conns), "failed": failed, "notes": list(notes)}))
            ready_sent = True
        if measuring and not result_sent:
            quiet_since = max(t_last, sender_done_at)
            if received >= expected or (sender_done_at and now - quiet_since > drain_ns):
                ctl.send(("result", result()))
                result_sent = True

        events = ep.poll(0.1)
        if not measuring and len(events) >= 32:
            # Only draining (join notices): let lines pile up so one recv takes many.
            time.sleep(0.02)
        for fd, _ev in events:
            if fd == ctl_fd:
                while ctl.poll():
                    msg = ctl.recv()[0]
                    if msg == "go":
                        measuring = True
                        t_go = mono()
                        cpu_go = time.process_time()
                        expected = plan.messages * len(conns)
                        for c in conns.values():
                            if c.door != WS:
                                c.buf = b""  # parse from a fresh line: stamps come after go
                    elif msg == "sender_done":
                        sender_done_at = mono()
                    elif msg == "report" and not result_sent:
                        ctl.send(("result", result()))
                        result_sent = True
                    elif msg == "stop":
                        _close(ep, conns.values())
                        return
                continue
            c = conns.get(fd)
            if c is None:
                continue
            if c.state == CONNECTING:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    drop(c, f"connect: {os.strerror(err)}")
                    continue
                c.state = HANDSHAKE
                c.since = mono()
                req = proxy_header(c.sock) if target.haproxy else b""
                if c.door == WS:
                    req += ws_request(target.addr, target.web_port, target.ws_path)
                elif c.door == IRC:
                    req += irc_register(c.sock)
                if req:
                    if c.sock.send(req) != len(req):
                        drop(c, "handshake request not sent at once")
                        continue
                ep.modify(fd, IN)
                continue
            try:
                data = c.sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError as e:
                drop(c, f"{c.door} recv: {e}")
                continue
            if not data:
                drop(c, None if c.state == OPEN else f"{c.door}: closed during handshake")
                continue
            if b"! " in data:
                error_lines += _error_lines(data, c.door, notes)
            if c.state == HANDSHAKE:
                if c.door == WS:
                    try:
                        rest = http_answer(c, data)
                    except WireError as e:
                        drop(c, str(e))
                        continue
                    if rest is None:
                        continue
                    data = rest
                c.state = OPEN
                del opening[fd]
                if fd in joining:
                    c.sock.send(_join_line(c.door, joining.pop(fd)))
                if not data:
                    continue
            if c.door == WS:
                try:
                    msgs, ctrl = ws_feed(c, data)
                except WireError as e:
                    drop(c, str(e))
                    continue
                if ctrl:
                    for op, payload in ctrl:
                        if op == 0x9:
                            c.sock.send(ws_frame(payload, 0xA))
                        elif op == 0x8:
                            code = int.from_bytes(payload[:2], "big") if payload else 1005
                            reason = payload[2:].decode("utf-8", "replace")
                            try:  # finish the closing handshake like a polite client
                                c.sock.send(ws_frame(payload[:2], 0x8))
                            except OSError:
                                pass
                            drop(c, f"ws closed by server: {code} {reason}".rstrip())
                            break
                    if c.state == CLOSED:
                        continue
                if not measuring or not msgs:
                    continue
                text = b"\n".join(msgs) + b"\n"
            else:
                if not measuring:
                    continue
                if c.buf:
                    data = c.buf + data
                if data[-1] == 10:
                    c.buf = b""
                    text = data
                else:
                    cut = data.rfind(b"\n") + 1
                    c.buf = data[cut:]
                    text = data[:cut]
            found = findall(text)
            if found:
                now = mono()
                c.got += len(found)
                received += len(found)
                lat[c.door].extend([now - int(x) for x in found])
                if not t_first:
                    t_first = now
                t_last = now


def _connect_blocking(target: Target, door: str, timeout: float) -> Conn:
    """Sender connections are few: set them up synchronously, then go non-blocking."""
    sock = socket.create_connection((target.addr, target.port(door)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = Conn(sock, door, time.monotonic_ns())
    if target.haproxy:
        sock.sendall(proxy_header(sock))
    if door == WS:
        sock.sendall(ws_request(target.addr, target.web_port, target.ws_path))
        rest = None
        while rest is None:
            data = sock.recv(RECV_SIZE)
            if not data:
                raise WireError("closed during WebSocket handshake")
            rest = http_answer(c, data)
        c.buf = b""
        ws_feed(c, rest)
    elif door == IRC:  # registered once the default room's names came (the 366)
        sock.sendall(irc_register(sock))
        seen = b""
        while b" 366 " not in seen:
            data = sock.recv(RECV_SIZE)
            if not data:
                raise WireError("closed during IRC registration: " + seen[-200:].decode())
            seen = seen[-1000:] + data
    sock.setblocking(False)
    c.state = OPEN
    return c


def sender(ctl: Connection, plan: SenderPlan) -> None:
    """Send plan.messages stamped lines on schedule; drain and discard what comes back.

    Flat out (rate 0) with a window, a probe connection in this process watches its own
    deliveries so that at most `window` messages are queued in the server: the run then
    measures throughput at a bounded queue instead of how long one huge burst takes.
    """
    mono = time.monotonic_ns
    target = plan.target
    notes: list[str] = []
    senders: list[Conn] = []
    probe: Conn | None = None
    try:
        for door, room in zip(plan.doors, plan.rooms or [""] * len(plan.doors), strict=True):
            senders.append(_connect_blocking(target, door, plan.connect_timeout))
            if room:
                senders[-1].sock.send(_join_line(door, room))
        if plan.rate == 0 and plan.window > 0:
            probe = _connect_blocking(target, plan.doors[0], plan.connect_timeout)
    except (OSError, WireError) as e:
        ctl.send(("ready", {"ok": False, "notes": [f"sender connect: {e}"]}))
        ctl.recv()
        return
    ctl.send(("ready", {"ok": True, "notes": []}))
    ep = select.epoll()
    ctl_fd = ctl.fileno()
    ep.register(ctl_fd, IN)
    by_fd = {c.fd: c for c in senders + ([probe] if probe else [])}
    watching_out = dict.fromkeys(by_fd, False)
    for fd in by_fd:
        ep.register(fd, IN)
    count = len(senders)
    total = plan.messages
    interval = 1e9 / plan.rate if plan.rate > 0 else 0.0
    window = plan.window if probe else 0
    batch = 64
    sending = finished = False
    k = acked = t0 = t_last = 0
    progress_at = 0
    cpu0 = 0.0
    error_lines = disconnected = 0
    deadline = stall_ns = 0

    def report(status: str) -> None:
        nonlocal finished, t_last
        finished = True
        t_last = t_last or mono()
        info = {
            "status": status,
            "sent": k,
            "t_first": t0,
            "t_last": t_last,
            "cpu": time.process_time() - cpu0,
            "wall": (t_last - t0) / 1e9,
            "error_lines": error_lines,
            "disconnected": disconnected,
            "notes": notes,
        }
        ctl.send(("sent", info))

    while True:
        timeout = 0.5
        if sending and not finished:
            now = mono()
            pending = any(c.out for c in senders)
            if interval:
                due = min(total, int((now - t0) / interval) + 1)
            elif pending:
                due = k
            elif window:
                due = min(total, acked + window, k + batch)
            else:
                due = min(total, k + batch)
            while k < due:
                c = senders[k % count]
                line = b"b %d %d" % (k, now)
                if c.door == IRC:
                    c.out += irc_say(line)
                else:
                    c.out += line + b"\n" if c.door == LINE else ws_frame(line)
                k += 1
            for c in senders:
                if c.out:
                    try:
                        n = c.sock.send(c.out)
                    except BlockingIOError:
                        n = 0
                    except OSError as e:
                        _note(notes, f"send: {e}")
                        report("send failed")
                        break
                    c.out = c.out[n:]
            if not finished:
                pending = False
                for c in senders:
                    want = bool(c.out)
                    pending = pending or want
                    if want != watching_out[c.fd]:
                        ep.modify(c.fd, IN | OUT if want else IN)
                        watching_out[c.fd] = want
                now = mono()
                if k >= total and not pending:
                    t_last = now
                    report("ok")
                elif now > deadline:
                    report(f"timeout after {plan.run_timeout:.0f} s")
                elif window and k >= acked + window and now - progress_at > stall_ns:
                    report("stalled: the probe connection got nothing for 10 s")
                elif interval and k < total:
                    timeout = max(0.0, (t0 + k * interval - now) / 1e9)
                    timeout = min(timeout, 1.0) if pending else timeout
                elif not pending and not (window and k >= acked + window):
                    timeout = 0
        for fd, ev in ep.poll(timeout):
            if fd == ctl_fd:
                while ctl.poll():
                    msg = ctl.recv()[0]
                    if msg == "go":
                        sending = True
                        t0 = progress_at = mono()
                        cpu0 = time.process_time()
                        deadline = t0 + int(plan.run_timeout * 1e9)
                        stall_ns = 10 * 10**9
                        if probe:
                            probe.buf = b""
                    elif msg == "stop":
                        _close(ep, by_fd.values())
                        return
                continue
            c = by_fd.get(fd)
            if c is None or not ev & (IN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                data = c.sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno not in (errno.ECONNRESET,):
                    _note(notes, f"sender recv: {e}")
                data = b""
            if not data:
                disconnected += 1
                _note(notes, f"server closed a sending {c.door} connection")
                ep.unregister(fd)
                del by_fd[fd]
                if sending and not finished:
                    report("sender disconnected")
                continue
            if b"! " in data:
                error_lines += _error_lines(data, c.door, notes)
            text = data
            if c.door == WS:
                try:
                    msgs, ctrl = ws_feed(c, data)
                except WireError as e:
                    _note(notes, str(e))
                    continue
                for op, payload in ctrl:
                    if op == 0x9 and c.out:
                        c.out += ws_frame(payload, 0xA)
                    elif op == 0x9:
                        c.sock.send(ws_frame(payload, 0xA))
                if c is probe and msgs:
                    text = b"\n".join(msgs) + b"\n"
            elif c is probe:
                text = c.buf + data
                cut = text.rfind(b"\n") + 1
                c.buf = text[cut:]
                text = text[:cut]
            if c is probe and sending:
                seqs = SEQ.findall(text)
                if seqs:
                    acked = max(acked, int(seqs[-1]) + 1)
                    progress_at = mono()
