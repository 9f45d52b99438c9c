"""Seeds and replayable traces for the billing simulations.

`make test` runs `DEFAULT_SEEDS` seeds per database; `make soak SEEDS=N` sets
`ENTITLEMENTS_SIM_SEEDS`; `ENTITLEMENTS_SIM_SEED=K` replays one seed (the failure message says how).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_SEEDS = 300


def seeds() -> list[int]:
    """The seeds this run covers: one replayed seed, or the first N."""
    replay = os.environ.get("ENTITLEMENTS_SIM_SEED")
    if replay:
        return [int(replay)]
    return list(range(int(os.environ.get("ENTITLEMENTS_SIM_SEEDS", DEFAULT_SEEDS))))


@dataclass
class Trace:
    """The steps one seed took, printed when an invariant fails so the run can be replayed."""

    name: str
    seed: int
    steps: list[str] = field(default_factory=list)

    def step(self, text: str) -> None:
        self.steps.append(text)

    def failure(self, invariant: str) -> str:
        lines = "\n".join(f"  {i:3}. {s}" for i, s in enumerate(self.steps, 1))
        return (
            f"{self.name} seed {self.seed}: {invariant}\n"
            f"steps:\n{lines}\n"
            f"replay: ENTITLEMENTS_SIM_SEED={self.seed} "
            f".venv/bin/pytest tests/simulation -k {self.name}"
        )
