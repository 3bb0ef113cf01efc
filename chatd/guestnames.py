"""Random guest names such as C{JosephSmith}, from the C{names} package (seed 000).

C{names.get_first_name()} reads a data file on every call (about 6 ms), too slow for the
reactor thread when many people connect, so the package's lists are read once and sampled
with the same census frequencies it uses.
"""

from __future__ import annotations

import bisect
import functools
import random

import names


@functools.cache
def _table(key: str) -> tuple[list[str], list[float]]:
    words: list[str] = []
    cumulative: list[float] = []
    with open(names.FILES[key], encoding="ascii") as handle:
        for line in handle:
            word, _, total, _ = line.split()
            words.append(word.capitalize())
            cumulative.append(float(total))
    return words, cumulative


def _pick(key: str, rng: random.Random) -> str:
    words, cumulative = _table(key)
    index = bisect.bisect_right(cumulative, rng.random() * 90)
    return words[min(index, len(words) - 1)]


def preload() -> None:
    """Read the name lists now, at start-up, not on the reactor when the first guest comes."""
    for key in names.FILES:
        _table(key)


def guest_name(rng: random.Random = random._inst) -> str:  # type: ignore[attr-defined]
    """A space-free first and last name; the Room makes it unique among those online."""
    first = _pick(rng.choice(("first:male", "first:female")), rng)
    return "".join(ch for ch in first + _pick("last", rng) if ch.isalnum())
