"""The one line splitter of the line and minechat doors, fed what strangers send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatd.doors.lines import LineSplitter


def split(segments: list[bytes], limit: int) -> list[bytes | None]:
    """Lines, and None for each over-long line reported."""
    out: list[bytes | None] = []
    splitter = LineSplitter(limit, out.append, lambda: out.append(None))
    for segment in segments:
        splitter.feed(segment)
    return out


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


text = st.binary(max_size=300) | st.lists(
    st.sampled_from([b"a", b"\xc3\xa9", b"\r", b"\n", b"\r\n", b"\r\0", b" ", b"\xff"]),
    max_size=120,
).map(b"".join)


@given(text, st.lists(st.integers(0, 400), max_size=12), st.integers(1, 64))
def test_where_segments_are_cut_changes_nothing(data, points, limit):
    assert split(cuts(data, points), limit) == split([data], limit)


@given(text, st.integers(1, 64))
def test_lines_hold_no_line_ends_and_respect_the_limit(data, limit):
    for line in split([data], limit):
        if line is not None:
            assert b"\r" not in line and b"\n" not in line and len(line) <= limit


def test_every_ending_ends_a_line_and_an_over_long_line_is_skipped_once():
    assert split([b"a\r\nb\r\0c\nd\re\n"], 10) == [b"a", b"b", b"c", b"d", b"e"]
    assert split([b"0123456789ABC", b"DEF\nnext\n"], 10) == [None, b"next"]
