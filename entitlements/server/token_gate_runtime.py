"""Token gating as the server runs it: the domain service, the head followers and transfer
listener, and the re-verification task."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.chains.heads import HeadFollowers
from entitlements.tokengate import Reverifier, TokenGate, TransferListener

__all__ = ["TokenGateRuntime"]


@dataclass
class TokenGateRuntime:
    gate: TokenGate
    reverifier: Reverifier
    #: The networks' head followers (shared with the crypto payment watchers).
    heads: HeadFollowers | None = None
    #: Re-checks the wallets each block's transfers touched (None when blocks are not followed).
    listener: TransferListener | None = None

    async def start(self) -> None:
        """Refuse a node of the wrong chain (FailedPrecondition), then follow the heads, listen
        to transfers and start re-verifying."""
        await self.gate.start()
        if self.listener is not None:
            self.listener.start()
        if self.heads is not None:
            self.heads.start()
        self.reverifier.start()

    async def close(self) -> None:
        await self.reverifier.stop()
        if self.listener is not None:
            await self.listener.stop()
        await self.gate.close()
