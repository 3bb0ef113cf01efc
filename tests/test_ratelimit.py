"""The sliding-window limiter on a driven clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from chatd.ratelimit import RateLimiter, duration


def test_the_limit_holds_until_the_oldest_action_leaves_the_period() -> None:
    clock = Clock()
    limiter = RateLimiter(clock, 3, 60)
    for _ in range(3):
        assert limiter.can_do_action("ann")[0] is True
        clock.advance(10)
    assert limiter.can_do_action("ann") == (False, 60)
    clock.advance(29)
    assert limiter.can_do_action("ann")[0] is False
    clock.advance(1)
    assert limiter.can_do_action("ann") == (True, 60)
    assert limiter.can_do_action("ann") == (False, 70)


def test_keys_are_independent_and_remaining_counts_down() -> None:
    clock = Clock()
    limiter = RateLimiter(clock, 2, 60)
    limiter.can_do_action("ann")
    assert limiter.remaining("ann") == 1
    assert limiter.remaining("bob") == 2
    limiter.can_do_action("ann")
    assert limiter.can_do_action("bob")[0] is True
    assert limiter.remaining("ann") == 0
    clock.advance(60)
    assert limiter.remaining("ann") == 2


def test_a_check_without_update_does_not_count() -> None:
    limiter = RateLimiter(Clock(), 1, 60)
    assert limiter.can_do_action("ann", update=False)[0] is True
    assert limiter.can_do_action("ann")[0] is True
    assert limiter.can_do_action("ann")[0] is False


def test_undo_gives_the_action_back() -> None:
    limiter = RateLimiter(Clock(), 1, 60)
    limiter.can_do_action("ann")
    limiter.undo("ann")
    assert limiter.can_do_action("ann")[0] is True


def test_zero_means_no_limit() -> None:
    limiter = RateLimiter(Clock(), 0, 60)
    assert all(limiter.can_do_action("ann")[0] for _ in range(1000))


def test_waits_read_naturally_and_never_say_zero() -> None:
    assert duration(0.2) == "1s"
    assert duration(59.5) == "1m00s"
    assert duration(245) == "4m05s"
    assert duration(3600) == "1h00m"


def test_reset_forgets_a_key_only() -> None:
    limiter = RateLimiter(Clock(), 1, 60)
    limiter.can_do_action("ann")
    limiter.can_do_action("bob")
    limiter.reset("ann")
    assert limiter.can_do_action("ann")[0] is True
    assert limiter.can_do_action("bob")[0] is False
