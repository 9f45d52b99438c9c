"""Wiring of the Stripe parts: BillingService, the webhook shim and reconciliation's Billing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from adapters.stripe import StripeGateway
from adapters.webhooks import StripeWebhookConfig, WebhookServer, create_app
from entitlements.billing import Billing, StripeEvents
from entitlements.config import ConfigError, Settings
from entitlements.observability.http import OpsRoutes, install_routes, observed_sink
from entitlements.observability.tracing import http_middleware
from entitlements.server.billing_servicer import BillingServicer
from entitlements.server.schema import check_schema
from entitlements.service import EntitlementService
from entitlements.store.billing_repository import BillingStore

if TYPE_CHECKING:  # app.py builds Deps with install_billing
    from entitlements.server.deps import Deps

__all__ = ["build_billing", "install_billing", "run_reconcile", "run_webhooks", "webhook_server"]

log = logging.getLogger(__name__)


def build_billing(settings: Settings, service: EntitlementService) -> Billing:
    """The billing domain on the real SDK; the caller closes `billing.gateway`."""
    gateway = StripeGateway(settings.stripe)
    return Billing(gateway, BillingStore(service.store), service, settings.stripe.prices)


def install_billing(settings: Settings, deps: Deps) -> Billing | None:
    """Register BillingService in `deps` when Stripe is configured; None when it is not."""
    if not settings.stripe.configured:
        log.info("Stripe is not configured (STRIPE_SECRET_KEY): BillingService is off")
        deps.disabled["BillingService"] = (
            "card billing is off on this server: Stripe is not configured "
            "(set STRIPE_SECRET_KEY and the STRIPE_*_PRICE_ID variables, see docs/stripe.md)"
        )
        return None
    billing = build_billing(settings, deps.service)
    deps.closers.append(billing.gateway.close)
    deps.servicers["BillingService"] = BillingServicer(billing, deps.catalog)
    if not settings.stripe.webhook_secrets:
        log.warning("STRIPE_WEBHOOK_SECRET is not set: /webhooks/stripe refuses every event")
    log.info("BillingService on %s", settings.stripe)
    return billing


def webhook_server(
    settings: Settings,
    billing: Billing | None,
    *,
    addr: str | None = None,
    ops: OpsRoutes | None = None,
) -> WebhookServer:
    """The HTTP shim (not started) on `addr`, default ENTITLEMENTS_HTTP_ADDR; with `ops`, also
    /metrics, /readyz and /admin (entitlements/observability/http.py)."""
    config = StripeWebhookConfig(
        secrets=settings.stripe.webhook_secrets,
        sink=observed_sink(StripeEvents(billing).handle) if billing is not None else None,
        tolerance_seconds=settings.stripe.webhook_tolerance_seconds,
    )
    app = create_app(config)
    app.middlewares[:0] = http_middleware()  # traces (nothing when off), outermost
    if ops is not None:
        install_routes(app, ops)
    return WebhookServer(app, addr or settings.http_addr, reuse_port=settings.reuse_port)


async def run_webhooks(settings: Settings) -> None:
    """`entitlements webhooks`: the HTTP shim alone, until SIGTERM or SIGINT."""
    import asyncio
    import signal

    await check_schema(settings.database_url)
    async with _standalone_billing(settings) as billing:
        http = webhook_server(settings, billing)
        port = await http.start()
        log.info(
            "serving HTTP (/webhooks/stripe, /healthz) on %s (port %d)", settings.http_addr, port
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await http.stop()


async def run_reconcile(settings: Settings) -> list[str]:
    """`entitlements reconcile stripe`: repair the mirror; the summary's lines."""
    from entitlements.billing import reconcile

    await check_schema(settings.database_url)
    async with _standalone_billing(settings) as billing:
        if billing is None:
            raise ConfigError("Stripe is not configured: set STRIPE_SECRET_KEY and the price ids")
        summary = await reconcile(billing)
        return summary.lines()


@asynccontextmanager
async def _standalone_billing(settings: Settings) -> AsyncIterator[Billing | None]:
    from entitlements.policies import default_catalog
    from entitlements.store.repository import Store
    from entitlements.watch import WatchHub

    store = Store.open(settings.database_url)
    store.past_due_grace = settings.past_due_grace  # as subscription.past_due events report it
    try:
        service = EntitlementService(
            store,
            default_catalog(),
            WatchHub(),
            past_due_grace=settings.past_due_grace,
            cache_size=settings.cache_size,
            cache_ttl_seconds=settings.cache_ttl_seconds,
        )
        if not settings.stripe.configured:
            yield None
            return
        billing = build_billing(settings, service)
        try:
            yield billing
        finally:
            await billing.gateway.close()
    finally:
        await store.close()
