"""In-flight budgets: how many unary calls of each kind (reads, writes) are being handled, against
a limit per kind, and whether the server still admits calls. Calls are admitted on gRPC's handler
threads (the hot path answered there) and on the event loop (the calls bridged to it), so every
change goes through one lock; /metrics and the drain read the counts."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Budgets", "InFlight", "Kind"]

Kind = Literal["reads", "writes"]


@dataclass(eq=False, slots=True)
class InFlight:
    """The unary calls of one kind being handled, and how many were refused past `limit`."""

    kind: Kind
    limit: int
    current: int = 0
    shed: int = 0


@dataclass(eq=False, slots=True)
class Budgets:
    """A server's two budgets: reads (calls that change nothing, the hot-path checks among them)
    and writes (every other call), so a flood of one kind never sheds the other.

    `enter`/`leave`/`refuse_closing` are safe from any thread: a `+= 1` is a read and a write,
    and two threads interleaving them lose a count (a budget that never drains, or one that
    admits past its limit)."""

    reads: InFlight = field(default_factory=lambda: InFlight("reads", 2000))
    writes: InFlight = field(default_factory=lambda: InFlight("writes", 2000))
    #: Set at shutdown: new calls are refused with UNAVAILABLE while those in flight finish.
    closing: bool = False
    #: Calls refused because the server was closing (a drain waits for these to stop).
    refused_closing: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, *, reads: int, writes: int) -> Budgets:
        return cls(InFlight("reads", reads), InFlight("writes", writes))

    def both(self) -> tuple[InFlight, InFlight]:
        return (self.reads, self.writes)

    def enter(self, budget: InFlight) -> bool:
        """Count a call in `budget`; False (and counted as shed) when it is full."""
        with self._lock:
            if budget.current >= budget.limit:
                budget.shed += 1
                return False
            budget.current += 1
            return True

    def try_enter(self, budget: InFlight) -> bool:
        """Like `enter`, but a full budget is not counted as shed (the caller hands the call to
        a path that sheds it)."""
        with self._lock:
            if budget.current >= budget.limit:
                return False
            budget.current += 1
            return True

    def leave(self, budget: InFlight) -> None:
        with self._lock:
            budget.current -= 1

    def refuse_closing(self) -> None:
        with self._lock:
            self.refused_closing += 1

    @property
    def current(self) -> int:
        return self.reads.current + self.writes.current

    @property
    def shed(self) -> int:
        return self.reads.shed + self.writes.shed
