"""A gRPC server with BillingService and the webhook shim, on the real Stripe SDK pointed at a
local Stripe-shaped server, over each database backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from nchat.entitlements.v1 import (
    billing_service_pb2_grpc,
    entitlements_service_pb2,
    entitlements_service_pb2_grpc,
)

from adapters.webhooks import WebhookServer
from entitlements.billing import Billing
from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.server.billing_setup import webhook_server
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML, OPS
from tests.stripe_double import StripeDouble, WebhookSender

WEBHOOK_SECRET = "whsec_test_current_0001"
PRICES = {
    ("starter", "month"): ("price_starter_monthly", 800),
    ("starter", "year"): ("price_starter_yearly", 8000),
    ("pro", "month"): ("price_pro_monthly", 2500),
    ("pro", "year"): ("price_pro_yearly", 25000),
    ("business", "month"): ("price_business_monthly", 7500),
    ("business", "year"): ("price_business_yearly", 75000),
}


def stripe_env(api_base: str, **extra: str) -> dict[str, str]:
    env = {
        "STRIPE_SECRET_KEY": "sk_test_double",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": api_base,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
    }
    for (plan, interval), (price_id, _) in PRICES.items():
        word = "MONTHLY" if interval == "month" else "YEARLY"
        env[f"STRIPE_{plan.upper()}_{word}_PRICE_ID"] = price_id
    env.update(extra)
    return env


@pytest.fixture
async def stripe_double() -> AsyncIterator[StripeDouble]:
    double = StripeDouble()
    await double.start()
    for (_, interval), (price_id, amount) in PRICES.items():
        double.add_price(price_id, amount=amount, interval=interval)
    try:
        yield double
    finally:
        await double.stop()


@pytest.fixture
def env_extra() -> dict[str, str]:
    """Extra environment for the billing settings; tests override it."""
    return {}


@pytest.fixture
def billing_settings(
    tmp_path: Path, stripe_double: StripeDouble, env_extra: dict[str, str]
) -> Settings:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    return Settings.from_env(
        {"ENTITLEMENTS_CALLERS_FILE": str(callers), **stripe_env(stripe_double.url, **env_extra)}
    )


@dataclass
class Harness:
    """Everything a billing test drives: gRPC stubs, the shim, Stripe's side, the store."""

    running: Running
    http: WebhookServer
    channel: grpc.aio.Channel
    double: StripeDouble
    store: Store
    settings: Settings

    @property
    def billing(self) -> Billing:
        assert self.running.deps.billing is not None
        return self.running.deps.billing

    @property
    def stub(self) -> billing_service_pb2_grpc.BillingServiceStub:
        return billing_service_pb2_grpc.BillingServiceStub(self.channel)

    @property
    def entitlements(self) -> entitlements_service_pb2_grpc.EntitlementsServiceStub:
        return entitlements_service_pb2_grpc.EntitlementsServiceStub(self.channel)

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}/webhooks/stripe"

    @property
    def sender(self) -> WebhookSender:
        return WebhookSender(self.webhook_url, WEBHOOK_SECRET)

    async def can_use(
        self, account_id: str, feature: str, min_revision: int = 0
    ) -> tuple[bool, str]:
        answer = await self.entitlements.CanUseFeature(
            entitlements_service_pb2.CanUseFeatureRequest(
                account_id=account_id, feature=feature, min_revision=min_revision
            ),
            metadata=OPS,
        )
        return answer.allowed, answer.plan_id

    async def call(self, method: str, request: Any) -> Any:
        return await getattr(self.stub, method)(request, metadata=OPS)


async def start_harness(
    settings: Settings, store: Store, double: StripeDouble
) -> tuple[Running, WebhookServer]:
    deps = build_deps(settings, store)
    running = await create_server(settings, deps, addr="127.0.0.1:0")
    await running.server.start()
    await running.set_serving(True)
    http = webhook_server(settings, deps.billing, addr="127.0.0.1:0")
    await http.start()
    return running, http


@pytest.fixture
async def harness(
    billing_settings: Settings, store: Store, stripe_double: StripeDouble
) -> AsyncIterator[Harness]:
    """On SQLite and PostgreSQL."""
    running, http = await start_harness(billing_settings, store, stripe_double)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Harness(running, http, channel, stripe_double, store, billing_settings)
    finally:
        await http.stop()
        await running.stop(0)


@pytest.fixture
async def lone_harness(
    billing_settings: Settings, tmp_path: Path, stripe_double: StripeDouble
) -> AsyncIterator[Harness]:
    """On SQLite only, for behaviour that does not depend on the database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}"
    await upgrade(url)
    store = Store.open(url)
    running, http = await start_harness(billing_settings, store, stripe_double)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Harness(running, http, channel, stripe_double, store, billing_settings)
    finally:
        await http.stop()
        await running.stop(0)
        await store.close()
