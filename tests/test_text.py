"""Text from strangers: cleaning, the message size limit, cutting, look-alike names.

Property tests (hypothesis) feed these rules any text, as strangers will.
"""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from chatd import text
from chatd.doors.web import MAX_JSON_DEPTH, _nested_deeper
from chatd.events import History, Message
from chatd.lookalike import same, skeleton
from chatd.testing import make_room

INVISIBLE = ("Cc", "Cf", "Cs")


@given(st.text())
def test_clean_is_idempotent_never_grows_and_leaves_nothing_invisible(raw):
    cleaned = text.clean(raw)
    assert text.clean(cleaned) == cleaned
    assert len(cleaned) <= len(raw)
    assert not any(unicodedata.category(c) in INVISIBLE for c in cleaned)
    cleaned.encode("utf-8")  # no lone surrogate: every door can send it


def test_invisible_format_characters_are_stripped_and_printable_text_kept():
    assert "\u200b".isprintable() is False  # so printable text keeps the fast path
    for mark in "\u200b\u200c\u200d\u200e\u200f\u202e\u2066\u2069\ufeff\u00ad\u2060":
        assert text.clean(f"a{mark}lice") == "alice"
    assert text.clean("\ud800hi") == "hi"  # a lone surrogate, as JSON "\ud800" decodes
    assert text.clean("  héllo wörld, 你好 👋 ") == "héllo wörld, 你好 👋"
    assert text.clean("a\tb\x1b[31mred\x1b[0m") == "a bred"


def test_too_long_counts_utf8_bytes():
    assert text.too_long("x" * 4096, 4096) is None
    assert text.too_long("é" * 2048, 4096) is None
    assert text.too_long("é" * 2049, 4096) == (
        "your message was 4098 bytes, over the limit of 4096, and was not sent; "
        "split it into shorter messages"
    )
    assert text.too_long("x" * 10**6, 0) is None  # 0: no limit


@given(st.text(), st.integers(min_value=1, max_value=64))
def test_cut_keeps_within_the_limit_and_says_how_big_the_text_was(raw, limit):
    cut = text.cut(raw, limit)
    size = text.utf8_size(raw)
    if size <= limit:
        assert cut == raw
    else:
        kept, note = cut.rsplit(" \u2026 ", 1)
        assert note == f"[cut: {size} bytes]"
        assert text.utf8_size(kept) <= limit and raw.startswith(kept)


@given(st.lists(st.binary(max_size=50)), st.integers(min_value=1, max_value=200))
def test_chunks_keep_every_byte_in_order(pieces, size):
    chunks = list(text.chunks(iter(pieces), size))
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(c) < size + 50 for c in chunks)


def test_history_lines_cut_each_stored_message_with_a_note():
    messages = [Message(1, 0.0, "ann", "x" * 70_000), Message(2, 0.0, "bob", "short")]
    lines = list(text.history_lines(History(messages, "recent"), None, 4096))
    assert lines[0] == "* recent (2):"
    assert lines[1] == "[00:00:00] ann: " + "x" * 4096 + " \u2026 [cut: 70000 bytes]"
    assert lines[2] == "[00:00:00] bob: short"


# -- JSON requests nested too deep --------------------------------------------------------


@given(st.dictionaries(st.text(), st.one_of(st.text(), st.integers(), st.none())))
def test_flat_requests_are_never_taken_for_deep_ones(request):
    assert not _nested_deeper(json.dumps(request), MAX_JSON_DEPTH)
    assert not _nested_deeper(json.dumps(request, ensure_ascii=False), MAX_JSON_DEPTH)


@given(st.integers(min_value=0, max_value=200), st.sampled_from("[{"))
def test_nesting_is_measured_outside_strings(depth, bracket):
    close = "]" if bracket == "[" else "}"
    raw = bracket * depth + close * depth if bracket == "[" else '{"a":' * depth + "1" + "}" * depth
    assert _nested_deeper(raw, MAX_JSON_DEPTH) == (depth > MAX_JSON_DEPTH)
    assert not _nested_deeper(json.dumps({"text": bracket * depth}), MAX_JSON_DEPTH)


# -- look-alike names ---------------------------------------------------------------------


def test_look_alikes_of_a_name_share_its_key():
    for spoof in ("аlice", "ａlice", "𝐚lice", "ALICE", "a\u200blice", "Alice", "ａｌｉｃｅ"):
        assert skeleton(spoof) == skeleton("alice"), spoof
    assert skeleton("b0b") == skeleton("bob")  # digit zero, letter o
    assert skeleton("a1ice") == skeleton("alice")  # digit one, letter l
    assert skeleton("Ålice") != skeleton("alice")  # an accent is a different letter
    assert skeleton("alicia") != skeleton("alice")


def test_rn_and_m_are_confusable_as_ts39_says():
    # confusables.txt: 006D ; 0072 006E ; MA  (m -> rn)
    assert skeleton("m") == "rn" == skeleton("rn")
    assert same("mallory", "rnallory")
    assert not same("mallory", "rnalIory".replace("I", "i"))


FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}  # ! to ~ -> U+FF01 to U+FF5E


@given(st.text(max_size=30))
def test_skeleton_is_stable_and_ignores_case_and_width(name):
    key = skeleton(name)
    assert skeleton(key) == key
    assert skeleton(name.casefold()) == key
    assert skeleton(name.upper().casefold()) == skeleton(name.upper())
    assert skeleton(name.translate(FULLWIDTH)) == key
    assert skeleton(unicodedata.normalize("NFKC", name)) == key


@given(st.from_regex(r"[A-Za-z0-9]{2,12}", fullmatch=True))
def test_any_case_and_width_of_an_ascii_name_is_the_same_name(name):
    assert skeleton(name.upper()) == skeleton(name.lower()) == skeleton(name.translate(FULLWIDTH))


ROOM = make_room()


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_the_rooms_name_rules_never_raise(name):
    for candidate in (name, text.clean(name)):
        problem = ROOM.names.problem(candidate)
        assert problem is None or isinstance(problem, str)
