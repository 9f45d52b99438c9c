"""Wiring token gating into the server: the domain service on the shared engine, the chain
readers from settings, the servicer, the head followers and transfer listener, the
re-verification task and their shutdown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.chains import ChainReaders, ChainSettings
from adapters.chains.heads import HeadFollowers
from entitlements.observability.metrics import observe_chain_read
from entitlements.server.token_gate_servicer import TokenGateServicer
from entitlements.store.tokengate_repository import TokenGateStore
from entitlements.tokengate import Reverifier, TokenGate, TransferListener
from entitlements.watch import TokenAccessChanged, TokenAccessFeed, WatchHub

if TYPE_CHECKING:
    from entitlements.config import Settings
    from entitlements.server.app import Deps

__all__ = ["TokenGateRuntime", "install_token_gate"]


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


class _HubFeed(TokenAccessFeed):
    """Token access changes go to in-process listeners and to WatchEntitlements subscribers."""

    def __init__(self, hub: WatchHub) -> None:
        super().__init__()
        self._hub = hub

    def publish(self, event: TokenAccessChanged) -> None:
        super().publish(event)
        self._hub.publish(event)


def install_token_gate(
    settings: Settings,
    deps: Deps,
    *,
    readers: ChainReaders | None = None,
    heads: HeadFollowers | None = None,
) -> TokenGateRuntime:
    """Build token gating on `deps.store`'s engine and register its servicer and closer. With
    `heads` (the networks' head followers) transfers are followed block by block."""
    chains: ChainSettings = settings.chains
    readers = readers or ChainReaders.from_settings(chains)
    for network in readers.networks:
        readers.get(network).observer = observe_chain_read
    gate = TokenGate(
        TokenGateStore(deps.store.engine),
        readers,
        chains,
        feed=_HubFeed(deps.hub),
    )
    listener = TransferListener(gate, heads) if heads is not None and chains.follow_blocks else None
    runtime = TokenGateRuntime(
        gate, Reverifier(gate, chains.reverify_interval_seconds), heads, listener
    )
    deps.servicers["TokenGateService"] = TokenGateServicer(
        gate, None if settings.dev_mode else settings.callers
    )
    deps.closers.append(runtime.close)
    return runtime
