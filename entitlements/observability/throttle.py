"""A log line that a caller can trigger is rate-limited, so no caller can fill the disk."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """A token bucket for log lines: `burst` at once, then `per_minute`. `allow()` says
    whether a line may be written now and, if so, how many were held back since the last one
    (so the line can say so)."""

    def __init__(
        self,
        *,
        burst: int = 10,
        per_minute: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = float(burst)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.held_back = 0

    def allow(self) -> int | None:
        """None if this line is to be dropped; else the number dropped since the last one."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            self.held_back += 1
            return None
        self._tokens -= 1.0
        held, self.held_back = self.held_back, 0
        return held
