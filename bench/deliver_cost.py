"""User-space instructions per delivery, counted by callgrind: chatd's fan-out against the
bare send loop.

    python -m bench.deliver_cost --receivers 1000 --messages 20,120
    python -m bench.deliver_cost --run line --receivers 1000 --messages 120   # one run

Wall-clock and even CPU time are noisy on a shared machine; an instruction count is not.
Each run is one process: chatd's real Room (L{chatd.testing.make_room}, on the real reactor)
with a door listening on 127.0.0.1, C{--receivers} TCP clients connected to it and one
sender (a L{chatd.testing.FakeClient}) that says C{--messages} lines, one per reactor turn
(as at 50 messages/s), each fanned out to every receiver and sent with one C{send()} each.
The C{irc} run's receivers register (NICK, USER, no capabilities) and read each line as a
PRIVMSG to the default room's channel.
The C{floor} run connects the same clients to the line door, then sends the same number of
lines itself with a bare C{for sock in socks: sock.send(line)}: the user-space part of
bench.floor's cost.

Two runs of each kind, differing only in how many messages are sent, are counted under
C{valgrind --tool=callgrind}; their difference, divided by the deliveries it adds, leaves
out start-up, connecting and anything else done once.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/deliver_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import callgrind  # noqa: E402

KINDS = ("line", "ws", "irc", "floor")
LINE = "hello, this is a bench line of about the usual size"


def _iterate(reactor: object, until: object, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out setting up")
        reactor.iterate(0.01)  # type: ignore[attr-defined]


def _drain(socks: list[socket.socket]) -> int:
    got = 0
    for s in socks:
        while True:
            try:
                data = s.recv(1 << 16)
            except BlockingIOError:
                break
            if not data:
                raise SystemExit("a client was disconnected")
            got += len(data)
    return got


def run(kind: str, receivers: int, messages: int) -> None:
    """One counted run (see the module's docstring)."""
    from twisted.internet import reactor

    from bench.wire import ws_request
    from chatd.doors.irc import IRCFactory
    from chatd.doors.line import LineFactory
    from chatd.doors.web import make_site
    from chatd.testing import FakeClient, make_room

    room = make_room(
        clock=reactor,
        commands=[],
        connections_per_address=receivers + 10,
        new_connections_per_minute=receivers * 10,
        lines_per_second=1e6,
        messages_per_hour=10**9,
        crowd_summary=0,
        max_room_members=receivers + 10,
    )
    if kind == "ws":
        factory = make_site(room)
    elif kind == "irc":
        factory = IRCFactory(room)
    else:
        factory = LineFactory(room)
    if kind == "ws":  # no pings: under valgrind a run outlasts their interval, by chance
        factory.chat.protocol.autoPingInterval = 0
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1").getHost().port
    socks = []
    for i in range(receivers):
        s = socket.create_connection(("127.0.0.1", port))
        if kind == "ws":
            s.sendall(ws_request("127.0.0.1", port))
        elif kind == "irc":  # registered once both are read: then in the default room
            s.sendall(f"NICK r{i}\r\nUSER r{i} 0 * :bench\r\n".encode())
        s.setblocking(False)
        socks.append(s)
    _iterate(reactor, lambda: len(room.members.sessions) == receivers)
    sender = FakeClient()
    sender.session = room.connect(sender)
    # Settle: the join notices and member lists, all read by the clients; as many turns
    # in every run (a count of instructions must not depend on the time things took).
    for _ in range(20):
        reactor.iterate(0)
        _drain(socks)
    if os.environ.get("DELIVER_COST_DEBUG"):
        print(reactor.getDelayedCalls(), file=sys.stderr)
    line = (LINE + "\r\n").encode()
    targets = [s.client.transport.socket for s in room.members.sessions if s.client is not sender]
    got = 0  # bytes the clients read of the messages
    for i in range(messages):
        if kind == "floor":
            for sock in targets:
                sock.send(line)
        else:
            room.receive(sender.session, f"{LINE} {i}")
            reactor.iterate(0)  # the end of the turn: Turn.flush sends
        if i % 50 == 49:
            got += _drain(socks)
    got += _drain(socks)
    assert got > 0 or not messages, "nothing was delivered"
    print(f"{kind}: {receivers} receivers, {messages} messages, {got} bytes", file=sys.stderr)


def count(kind: str, receivers: int, messages: int) -> int:
    """Instructions callgrind counts for one run."""
    args = ["bench.deliver_cost", "--run", kind, "--receivers", str(receivers)]
    return callgrind.count([*args, "--messages", str(messages)])[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.deliver_cost", description=__doc__)
    p.add_argument("--run", choices=KINDS, help="one run, to be counted (no valgrind)")
    p.add_argument("--kinds", default="floor,line,ws,irc", help="what to count, comma-separated")
    p.add_argument("--receivers", type=int, default=1000)
    p.add_argument("--messages", default="20,120", help="two counts, or one with --run")
    args = p.parse_args(argv)
    if args.run:
        run(args.run, args.receivers, int(args.messages))
        return
    low, high = (int(m) for m in args.messages.split(","))
    deliveries = (high - low) * args.receivers
    for kind in args.kinds.split(","):
        extra = count(kind, args.receivers, high) - count(kind, args.receivers, low)
        print(f"{kind:5} {extra / deliveries:8.0f} instructions per delivery", flush=True)


if __name__ == "__main__":
    main()
