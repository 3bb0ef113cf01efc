"""CPU per chat message that does not depend on how many receive it: the store's round
trip, the metrics, reading the line, the Room's bookkeeping.

    python -m bench.msg_cost --messages 2000            # CPU seconds per message
    python -m bench.msg_cost --callgrind --messages 200,1200   # instructions per message

One process: chatd's real Room (L{chatd.testing.make_room}) on the real reactor, with the
real SQLite store in a temporary directory, the metrics wired as a server wires them, and
the line door on 127.0.0.1. One TCP client sends a line, one other receives it; the next
line is sent only once the last one arrived, so each message is a batch of its own (as at
50 messages/s). The two clients are plain blocking sockets in a child process, so only
the server is measured.

CPU time is counted for the reactor thread (C{time.thread_time}) and for the whole process
(C{getrusage}: the store's thread, and the kernel's part of the hand-off: futexes, the
waker's pipe, epoll). Callgrind counts user-space instructions, repeatably: two runs that
differ only in the number of messages, their difference divided by the messages it adds.
"""

from __future__ import annotations

import argparse
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/msg_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import callgrind  # noqa: E402

LINE = "hello, this is a bench line of about the usual size"
WARMUP = 200


def _cpu() -> tuple[float, float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.thread_time(), usage.ru_utime, usage.ru_stime


def serve(messages: int, quiet: bool = False, memory: bool = False) -> None:
    """Serve a client (L{client}, another process) that sends C{WARMUP + messages + 1}
    lines; count the CPU from the receipt of line C{WARMUP + 1} to the last one's."""
    from prometheus_client import CollectorRegistry
    from twisted.internet import reactor

    from chatd import metrics
    from chatd.doors.line import LineFactory
    from chatd.store.sqlite import SQLiteStore
    from chatd.testing import MemoryStore, make_room

    tmp = tempfile.mkdtemp(prefix="msg_cost")
    store = MemoryStore() if memory else SQLiteStore.open(Path(tmp) / "chatd.sqlite3", reactor)
    room = make_room(
        clock=reactor,
        commands=[],
        store=store,
        lines_per_second=1e6,
        messages_per_hour=10**9,
        crowd_summary=0,
    )
    factory = LineFactory(room)
    metrics.registry_for(room, {"line": factory.turn}, CollectorRegistry())
    port = reactor.listenTCP(0, factory, interface="127.0.0.1").getHost().port
    marks: list[tuple[float, float, float]] = []
    seen = [0]
    receive = room.receive

    def counted(session: object, line: str) -> object:
        seen[0] += 1
        if seen[0] == WARMUP + 1:
            marks.append(_cpu())
        elif seen[0] == WARMUP + messages + 1:
            marks.append(_cpu())
            reactor.stop()  # type: ignore[attr-defined]
            return None
        return receive(session, line)  # type: ignore[arg-type]

    room.receive = counted  # type: ignore[method-assign]
    reactor.addSystemEventTrigger("before", "shutdown", room.stopService)  # the store's thread
    cmd = [sys.executable, "-m", "bench.msg_cost", "--client", str(port)]
    cmd += ["--messages", str(WARMUP + messages + 1)]
    cwd = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(cmd, cwd=cwd)
    reactor.run()  # type: ignore[attr-defined]
    child.wait(timeout=60)
    if len(marks) != 2:
        raise SystemExit("the client did not send every line")
    (thread0, user0, sys0), (thread1, user1, sys1) = marks
    if not quiet:
        us = 1e6 / messages
        print(
            f"{messages} messages: reactor thread {(thread1 - thread0) * us:.1f} us/msg;"
            f" process user {(user1 - user0) * us:.1f} + sys {(sys1 - sys0) * us:.1f}"
            f" = {((user1 - user0) + (sys1 - sys0)) * us:.1f} us/msg",
            flush=True,
        )


def client(port: int, lines: int) -> None:
    """Log in a sender and a receiver; send C{lines} lines, each once the last arrived."""
    sender = socket.create_connection(("127.0.0.1", port))
    receiver = socket.create_connection(("127.0.0.1", port))
    receiver.settimeout(30)
    time.sleep(0.5)  # both joined; what they were told is read below
    receiver.setblocking(False)
    _drain(receiver)
    receiver.setblocking(True)
    receiver.settimeout(30)
    needle = LINE.encode()
    for i in range(lines):
        sender.sendall(f"{LINE} {i}\r\n".encode())
        if i == lines - 1:
            break  # the server stops at the last
        got = b""
        while needle not in got:
            data = receiver.recv(1 << 16)
            if not data:
                raise SystemExit("the receiver was disconnected")
            got += data
    time.sleep(0.2)


def _drain(s: socket.socket) -> bytes:
    got = b""
    while True:
        try:
            data = s.recv(1 << 16)
        except BlockingIOError:
            return got
        if not data:
            raise SystemExit("the receiver was disconnected")
        got += data


def count(messages: int, memory: bool = False) -> tuple[int, int]:
    """Instructions callgrind counts for one run: the main (reactor) thread's, the others'."""
    args = ["bench.msg_cost", "--quiet", *(["--memory"] if memory else [])]
    main, *others = callgrind.count([*args, "--messages", str(messages)], threads=True)
    return main, sum(others)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.msg_cost", description=__doc__)
    p.add_argument("--messages", default="2000", help="how many; two counts with --callgrind")
    p.add_argument("--callgrind", action="store_true", help="count instructions instead")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--memory", action="store_true", help="the tests' store, answering at once (no thread)"
    )
    p.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        client(args.client, int(args.messages))
        return
    if not args.callgrind:
        serve(int(args.messages), args.quiet, args.memory)
        return
    low, high = (int(m) for m in args.messages.split(","))
    (main0, others0), (main1, others1) = count(low, args.memory), count(high, args.memory)
    main, others = (main1 - main0) / (high - low), (others1 - others0) / (high - low)
    print(
        f"{main:8.0f} instructions per message on the reactor thread, {others:.0f} on others",
        flush=True,
    )


if __name__ == "__main__":
    main()
