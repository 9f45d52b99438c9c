"""When to try a delivery again, and when to stop trying an endpoint for a while; pure."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "CircuitBreaker"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to base * 2**(n-1), capped; a
    delivery is failed once its event is older than `give_up_after_s`."""

    base_s: float = 5.0
    cap_s: float = 6 * 3600.0
    give_up_after_s: float = 3 * 86400.0

    def delay_s(self, attempts: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** max(0, min(attempts - 1, 40)))
        # Half fixed, half random: spread retries of many deliveries, never retry at once.
        return float(ceiling / 2 + (rng or random).uniform(0, ceiling / 2))

    def gives_up(self, age_s: float) -> bool:
        return age_s >= self.give_up_after_s


@dataclass(slots=True)
class CircuitBreaker:
    """Per endpoint: after `threshold` failures in a row the endpoint is left alone for
    `cooldown_s`, then one delivery probes it (half open); a success closes it again."""

    threshold: int = 5
    cooldown_s: float = 30.0
    _failures: dict[str, int] = field(default_factory=dict)
    _open_until: dict[str, float] = field(default_factory=dict)

    def allows(self, endpoint: str, now: float) -> bool:
        return self._open_until.get(endpoint, 0.0) <= now

    def half_open(self, endpoint: str) -> bool:
        """After a cooldown: send one delivery only, to see whether the endpoint is back."""
        return self._failures.get(endpoint, 0) >= self.threshold

    def record(self, endpoint: str, ok: bool, now: float) -> None:
        if ok:
            self._failures.pop(endpoint, None)
            self._open_until.pop(endpoint, None)
            return
        failures = self._failures.get(endpoint, 0) + 1
        self._failures[endpoint] = failures
        if failures >= self.threshold:
            self._open_until[endpoint] = now + self.cooldown_s

    def is_open(self, endpoint: str, now: float) -> bool:
        return not self.allows(endpoint, now)
