"""Wiring token gating into the server: the domain service on the shared engine, the chain
readers from settings, the servicer, the re-verification task and their shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.chains import ChainReaders, ChainSettings
from entitlements.observability.metrics import observe_chain_read
from entitlements.server.token_gate_runtime import TokenGateRuntime
from entitlements.server.token_gate_servicer import TokenGateServicer
from entitlements.store.tokengate_repository import TokenGateStore
from entitlements.tokengate import Reverifier, TokenGate
from entitlements.watch import TokenAccessChanged, TokenAccessFeed, WatchHub

if TYPE_CHECKING:
    from entitlements.config import Settings
    from entitlements.server.deps import Deps

__all__ = ["TokenGateRuntime", "install_token_gate"]


class _HubFeed(TokenAccessFeed):
    """Token access changes go to in-process listeners and to WatchEntitlements subscribers."""

    def __init__(self, hub: WatchHub) -> None:
        super().__init__()
        self._hub = hub

    def publish(self, event: TokenAccessChanged) -> None:
        super().publish(event)
        self._hub.publish(event)


def install_token_gate(
    settings: Settings, deps: Deps, *, readers: ChainReaders | None = None
) -> TokenGateRuntime:
    """Build token gating on `deps.store`'s engine and register its servicer and closer."""
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
    runtime = TokenGateRuntime(gate, Reverifier(gate, chains.reverify_interval_seconds))
    deps.servicers["TokenGateService"] = TokenGateServicer(gate)
    deps.closers.append(runtime.close)
    return runtime
