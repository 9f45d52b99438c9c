"""Wiring token gating into the server: the domain service on the shared engine, the chain
readers from settings, the servicer, the re-verification task and their shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.chains import ChainReaders, ChainSettings
from adapters.chains.heads import HeadFollowers
from entitlements.coherence import ChangeFeed
from entitlements.observability.metrics import observe_chain_read
from entitlements.observability.tracing import chain_read_observer
from entitlements.server.token_gate_runtime import TokenGateRuntime
from entitlements.server.token_gate_servicer import TokenGateServicer
from entitlements.store.tokengate_repository import TokenGateStore
from entitlements.tokengate import Reverifier, TokenGate, TransferListener
from entitlements.watch import TokenAccessChanged, TokenAccessFeed, WatchHub

if TYPE_CHECKING:
    from entitlements.config import Settings
    from entitlements.server.deps import Deps

__all__ = ["TokenGateRuntime", "install_token_gate"]


class _HubFeed(TokenAccessFeed):
    """Token access changes go to in-process listeners and to WatchEntitlements subscribers, on
    this replica at once and on the others through the change feed."""

    def __init__(self, hub: WatchHub, changes: ChangeFeed | None) -> None:
        super().__init__()
        self._hub = hub
        self._changes = changes

    def publish(self, event: TokenAccessChanged) -> None:
        """Deliver here only (an event another replica found, or with no change feed)."""
        super().publish(event)
        self._hub.publish(event)

    async def announce(self, event: TokenAccessChanged) -> None:
        if self._changes is None:
            self.publish(event)
        else:
            await self._changes.announce_token_access(event)


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
        readers.get(network).observer = chain_read_observer(observe_chain_read)
    feed = _HubFeed(deps.hub, deps.feed)
    if deps.feed is not None:
        deps.feed.token_sink = feed.publish
    gate = TokenGate(
        TokenGateStore(deps.store.engine),
        readers,
        chains,
        feed=feed,
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
