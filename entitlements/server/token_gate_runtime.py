"""Token gating as the server runs it: the domain service and its re-verification task."""

from __future__ import annotations

from dataclasses import dataclass

from entitlements.tokengate import Reverifier, TokenGate

__all__ = ["TokenGateRuntime"]


@dataclass
class TokenGateRuntime:
    gate: TokenGate
    reverifier: Reverifier

    async def start(self) -> None:
        """Refuse a node of the wrong chain (FailedPrecondition), then start re-verifying."""
        await self.gate.start()
        self.reverifier.start()

    async def close(self) -> None:
        await self.reverifier.stop()
        await self.gate.close()
