"""Retry policy: a bounded number of attempts with exponential backoff and full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before retrying a call that failed with UNAVAILABLE.

    Attempt `n` (from 1) waits a random time in `[0, min(max_backoff, initial_backoff *
    multiplier ** (n - 1))]` ("full jitter"), so many clients do not retry in lockstep.
    `max_attempts` counts the first try: 1 means no retry.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number `attempt` (1 is the first)."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))

    def backoff(self, attempt: int) -> float:
        """A jittered wait after failed attempt number `attempt`."""
        return random.uniform(0, self.ceiling(attempt))


#: No retry at all.
NO_RETRY = RetryPolicy(max_attempts=1)
