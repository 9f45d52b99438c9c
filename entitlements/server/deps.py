"""What the servicers are built from (`Deps`): the store, the domain services, the optional
runtimes. `entitlements.server.app.build_deps` fills it; the `*_setup` modules add to it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from entitlements.observability.in_flight import Budgets

if TYPE_CHECKING:
    from adapters.chains.heads import HeadFollowers
    from entitlements.admin import AdminService
    from entitlements.billing import Billing
    from entitlements.coherence import ChangeFeed
    from entitlements.observability.http import OpsRoutes
    from entitlements.policies import Catalog
    from entitlements.server.crypto_runtime import CryptoRuntime
    from entitlements.server.events_runtime import EventsRuntime
    from entitlements.server.token_gate_runtime import TokenGateRuntime
    from entitlements.service import EntitlementService
    from entitlements.store.repository import Store
    from entitlements.usage.ledger import UsageLedger
    from entitlements.watch import WatchHub

__all__ = ["Deps"]

log = logging.getLogger(__name__)


@dataclass
class Deps:
    """What the servicers are built from; tests hand in their own (a SQLite file, a port 0)."""

    store: Store
    catalog: Catalog
    hub: WatchHub
    service: EntitlementService
    #: Servicers of the other services, by service name ("UsageService", ...); a service of the
    #: published API without one here answers UNIMPLEMENTED.
    servicers: dict[str, object] = field(default_factory=dict)
    #: Why a service is not served, by service name (its configuration leaves it off).
    disabled: dict[str, str] = field(default_factory=dict)
    #: Called in reverse order at shutdown, after the server has stopped (adapters' clients).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    ledger: UsageLedger | None = None
    feed: ChangeFeed | None = None
    #: The in-flight budgets of unary calls (reads, writes), shared by every servicer.
    in_flight: Budgets = field(default_factory=Budgets)
    #: Card billing through Stripe, when configured (BillingService, the webhook shim).
    billing: Billing | None = None
    #: Token gating (TokenGateService, chain readers, the re-verification task).
    token_gate: TokenGateRuntime | None = None
    #: Crypto payments (CryptoPaymentService, one chain watcher per configured network).
    #: Each configured network's head follower (heads.status(): number and age per network,
    #: for readiness and metrics); started with token gating, closed at shutdown.
    heads: HeadFollowers | None = None
    crypto: CryptoRuntime | None = None
    #: Admin analytics (AdminService, the /admin dashboard).
    admin: AdminService | None = None
    #: The HTTP shim's operations routes (/metrics, /readyz, /admin).
    ops: OpsRoutes | None = None
    #: Outbound events: the dispatcher and the renewal scan.
    events: EventsRuntime | None = None

    async def close(self) -> None:
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                log.exception("error while closing %r", close)
