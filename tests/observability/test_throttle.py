"""The rate limit on log lines a caller can trigger."""

from __future__ import annotations

from entitlements.observability.throttle import Throttle


def test_a_burst_passes_then_one_line_per_refill_saying_how_many_were_held_back() -> None:
    now = [0.0]
    throttle = Throttle(burst=3, per_minute=6, clock=lambda: now[0])
    assert [throttle.allow() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] += 10.0  # one line's worth at 6 a minute
    assert throttle.allow() == 2
    assert throttle.allow() is None
    now[0] += 3600.0  # a long quiet spell refills only up to the burst
    assert [throttle.allow() for _ in range(4)] == [1, 0, 0, None]
