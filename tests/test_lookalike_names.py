"""Names that look alike are one name: taken, reserved and found as one (hardening case 7)."""

from __future__ import annotations

import pytest

from tests.test_moderation import Chat


@pytest.mark.parametrize("lookalike", ["аlice", "ａlice", "𝐚lice", "ALICE", "a\u200blice"])
def test_a_name_that_looks_like_a_registered_one_is_refused(lookalike: str) -> None:
    chat = Chat()
    chat.device("alice")
    chat.room.disconnect(chat.device("alice").session)  # online or not, the name is hers
    guest = chat.join("10.0.0.2")
    answer = guest.send(f"/nick {lookalike}")
    assert answer == [
        "! the name alice belongs to an account; /login alice <password> if it is yours"
    ]


def test_a_name_that_looks_like_someone_online_is_taken_and_finds_them() -> None:
    chat = Chat()
    bob = chat.join("10.0.0.2", name="bob")
    mallory = chat.join("10.0.0.3")
    assert mallory.send("/nick bоb") == ["! the name bоb is taken; pick another"]  # Cyrillic о
    mallory.send("/w BOB hi")
    assert bob.take()[-1].endswith(": hi")
