"""In-flight budgets: how many unary calls of each kind (reads, writes) are being handled, against
a limit per kind, and whether the server still admits calls. The servicers' wrapper sheds calls
past a limit (and every call once the server is closing); /metrics reads the counts."""

from __future__ import annotations

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
    and writes (every other call), so a flood of one kind never sheds the other."""

    reads: InFlight = field(default_factory=lambda: InFlight("reads", 2000))
    writes: InFlight = field(default_factory=lambda: InFlight("writes", 2000))
    #: Set at shutdown: new calls are refused with UNAVAILABLE while those in flight finish.
    closing: bool = False
    #: Calls refused because the server was closing (a drain waits for these to stop).
    refused_closing: int = 0

    @classmethod
    def of(cls, *, reads: int, writes: int) -> Budgets:
        return cls(InFlight("reads", reads), InFlight("writes", writes))

    def both(self) -> tuple[InFlight, InFlight]:
        return (self.reads, self.writes)

    @property
    def current(self) -> int:
        return self.reads.current + self.writes.current

    @property
    def shed(self) -> int:
        return self.reads.shed + self.writes.shed
