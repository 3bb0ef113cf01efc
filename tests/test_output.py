"""Output: what a door writes in one reactor turn reaches the client as one write, in order."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatd.doors.output import Output, Turn


class CountingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


def make_output(turn: Turn) -> tuple[Output, CountingTransport]:
    transport = CountingTransport()
    return Output(transport, turn, 1000, lambda: "client"), transport


def test_a_burst_of_one_turn_is_one_write_in_order():
    clock = Clock()
    turn = Turn(clock)
    (a, ta), (b, tb) = make_output(turn), make_output(turn)
    for i in range(3):
        a.write(b"line %d\n" % i)
    b.write(b"only\n")
    assert ta.writes == tb.writes == []  # held until the turn ends
    clock.advance(0)
    assert ta.writes == [b"line 0\nline 1\nline 2\n"]
    assert tb.writes == [b"only\n"]
    a.write(b"next turn\n")
    clock.advance(0)
    assert ta.writes[1:] == [b"next turn\n"]


def test_flush_sends_what_is_held_now_and_the_turn_then_has_nothing_more():
    clock = Clock()
    output, transport = make_output(Turn(clock))
    output.write(b"goodbye\n")
    output.flush()  # what a door does before it closes the connection
    assert transport.writes == [b"goodbye\n"]
    clock.advance(0)
    assert transport.writes == [b"goodbye\n"]
