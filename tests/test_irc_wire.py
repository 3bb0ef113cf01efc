"""IRC's wire format as pure functions: what strangers send is parsed safely, what chatd
sends fits IRC's limits, and names map to nicks and back."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.doors import irc_wire as wire
from chatd.names import _NAME

# What a nick may hold (RFC 2812, with UTF-8 letters as modern servers allow).
NICK = re.compile(r"(?:[^\W\d]|[\[\]\\`^{}|])[\w\[\]\\`^{}|-]*\Z")

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=600)
word = st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters=":@"),
    min_size=1,
    max_size=20,
)
names = st.from_regex(r"[^\W][\w.-]{1,23}", fullmatch=True).filter(lambda n: _NAME.match(n))


@given(st.text(max_size=300))
def test_any_line_parses_or_is_refused_as_a_bad_line(line):
    try:
        parsed = wire.parse(line)
    except wire.BadLine:
        return
    assert parsed.command == parsed.command.upper() and parsed.command


@given(
    st.sampled_from(["PRIVMSG", "NOTICE", "JOIN", "001", "CAP"]),
    st.lists(word, max_size=4),
    text.map(lambda t: t.replace("\r", "").replace("\n", "").replace("\0", "")),
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), text, max_size=3),
)
def test_a_formatted_line_parses_back_to_the_same_parts(command, middle, last, tags):
    line = wire.format_line(command, [*middle, last], "chatd", tags)
    parsed = wire.parse(line)
    assert parsed.command == command
    assert parsed.params == [*middle, last]
    assert parsed.prefix == "chatd"
    assert parsed.tags == tags


def test_tags_unescape_as_ircv3_says():
    line = wire.parse(r"@a=x\sy\:z\\w;b;c=\n PRIVMSG #lobby :hi there")
    assert line.tags == {"a": "x y;z\\w", "b": "", "c": "\n"}
    assert line.params == ["#lobby", "hi there"]


@given(text, st.integers(min_value=4, max_value=500))
def test_split_text_keeps_every_piece_within_the_budget_and_loses_nothing(value, budget):
    pieces = wire.split_text(value, budget)
    assert all(wire.utf8_len(p) <= budget for p in pieces)
    # Only the spaces pieces were cut at (and the newlines) are gone.
    joined = "".join(pieces)
    assert joined.replace(" ", "") == value.replace("\n", "").replace(" ", "")


@given(st.text(st.characters(blacklist_categories=("Cs", "Zs"), blacklist_characters="\n")))
def test_split_text_without_spaces_is_exact(value):
    assert "".join(wire.split_text(value, 50)) == value


@given(names)
def test_every_chatd_name_is_a_valid_nick_that_maps_back(name):
    nick = wire.nick_of(name)
    assert NICK.match(nick), nick
    assert wire.name_of(nick) == name


@pytest.mark.parametrize(
    ("name", "nick"), [("ann", "ann"), ("a.b", "a|b"), ("2pac", "`2pac"), ("Юля", "Юля")]
)
def test_names_and_nicks(name, nick):
    assert wire.nick_of(name) == nick
    assert wire.name_of(nick) == name


def test_server_time_and_back():
    stamp = wire.server_time(1_700_000_000.25)
    assert stamp == "2023-11-14T22:13:20.250Z"
    assert wire.parse_time("timestamp=" + stamp) == 1_700_000_000.25
    assert wire.parse_time("timestamp=yesterday") is None
