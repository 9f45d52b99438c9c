"""The Stripe simulation's world: Stripe (the Stripe-shaped server, whose state is the truth the
invariants are checked against), two replicas of the real billing code sharing one database,
and the webhook deliveries Stripe still owes them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete

from entitlements.admin.service import AdminService
from entitlements.billing import Billing, StripeEvents, WebhookOutcome
from entitlements.config import Settings
from entitlements.policies import default_catalog
from entitlements.server.billing_setup import build_billing
from entitlements.service import EntitlementService
from entitlements.store.admin_repository import AdminStore
from entitlements.store.models import Base
from entitlements.store.repository import Store
from entitlements.watch import WatchHub
from tests.billing.conftest import PRICES, stripe_env
from tests.stripe_double import StripeDouble, event

GRACE = timedelta(days=7)
PLAN_OF_PRICE = {price: plan for (plan, _), (price, _) in PRICES.items()}
MONTHLY = {plan: price for (plan, interval), (price, _) in PRICES.items() if interval == "month"}
#: Statuses whose plan Stripe's state grants (past_due within the grace period, which no
#: simulated step outlasts).
GRANTING = ("active", "trialing", "past_due")


class Replica:
    """One service instance: its own engine, cache, Stripe client and webhook handler."""

    def __init__(self, name: str, url: str, settings: Settings) -> None:
        self.name = name
        self._url = url
        self._settings = settings
        self.tasks: set[asyncio.Task[Any]] = set()
        self.restarts = 0

    async def start(self) -> None:
        self.store = Store.open(self._url)
        self.service = EntitlementService(
            self.store, default_catalog(), WatchHub(), past_due_grace=GRACE
        )
        self.billing: Billing = build_billing(self._settings, self.service)
        self.events = StripeEvents(self.billing)
        self.admin = AdminService(
            AdminStore(self.store), self.service, default_catalog(), past_due_grace=GRACE
        )

    async def stop(self) -> None:
        await self.billing.gateway.close()
        await self.store.close()

    async def crash(self) -> None:
        """Killed mid-step: whatever it was doing stops where it was; then it starts again."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.stop()
        self.restarts += 1
        await self.start()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def plan(self, account_id: str) -> str:
        """The plan this replica answers with, once it has heard of every change (what the
        change feed does on a replica that did not apply the change itself)."""
        return (await self.service.changed(account_id)).plan_id


@dataclass
class Account:
    id: str
    sub_id: str | None = None
    session_id: str | None = None
    #: The failed invoice a recovery pays, while past_due.
    open_invoice: str | None = None


@dataclass
class Delivery:
    """An event Stripe will deliver until some replica answers it with a 2xx."""

    body: dict[str, Any]
    done: bool = False
    attempts: int = 0

    @property
    def label(self) -> str:
        obj = self.body["data"]["object"]
        return f"{self.body['id'][-12:]} {self.body['type']} ({obj.get('id')})"


@dataclass
class World:
    """Stripe, its customers' accounts, the paid invoices and the deliveries it owes."""

    double: StripeDouble
    replicas: list[Replica]
    accounts: list[Account] = field(default_factory=list)
    #: Stripe invoice id -> amount, for every invoice Stripe has settled.
    settled: dict[str, int] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    #: Stripe's clock, in whole seconds: the simulation moves it (the double reads it).
    clock: int = 0

    def __post_init__(self) -> None:
        # An hour ago: what Stripe stamps stays in the past for the service (revenue as of now
        # counts it) however far the simulation moves the clock.
        self.clock = int(time.time()) - 3600
        self.double.clock = lambda: self.clock

    def now(self) -> int:
        return self.clock

    def send(self, type_: str, obj: dict[str, Any]) -> None:
        self.deliveries.append(Delivery(event(type_, obj, created=self.clock)))

    def pending(self) -> list[Delivery]:
        return [d for d in self.deliveries if not d.done]

    def sub(self, account: Account) -> dict[str, Any] | None:
        return self.double.subscriptions.get(account.sub_id) if account.sub_id else None

    def expected_plan(self, account: Account) -> str:
        """What Stripe's latest state grants the account."""
        sub = self.sub(account)
        if sub is None or sub["status"] not in GRANTING:
            return "free"
        session = self.double.checkout_sessions.get(account.session_id or "")
        if session is not None and session["payment_status"] != "paid":
            return "free"  # a delayed payment has not arrived
        return PLAN_OF_PRICE[sub["items"]["data"][0]["price"]["id"]]

    def expected_revenue(self) -> int:
        return sum(self.settled.values())

    async def deliver(self, delivery: Delivery, replica: Replica) -> WebhookOutcome:
        """Deliver once and return the outcome (an error is a 5xx: "failed")."""
        delivery.attempts += 1
        try:
            outcome = await replica.events.handle(delivery.body)
        except Exception as exc:  # a 5xx: Stripe retries
            return WebhookOutcome("failed", f"{type(exc).__name__}: {exc}")
        if outcome.outcome != "failed":
            delivery.done = True
        return outcome


_BILLING_TABLES = {
    "accounts",
    "subscriptions",
    "webhook_events",
    "stripe_checkout_sessions",
    "paid_invoices",
    "failed_payments",
    "entitlement_changes",
}


async def reset(store: Store, double: StripeDouble) -> None:
    """A clean database and Stripe for the next seed (much cheaper than new ones)."""
    async with store.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name in _BILLING_TABLES:
                await connection.execute(delete(table))
    for table in (
        double.customers,
        double.checkout_sessions,
        double.portal_sessions,
        double.subscriptions,
        double.invoices,
    ):
        table.clear()
    double.requests.clear()


def world_settings(double: StripeDouble, url: str) -> Settings:
    return Settings.from_env(
        {
            "ENTITLEMENTS_DEV_MODE": "1",
            "ENTITLEMENTS_DATABASE_URL": url,
            **stripe_env(double.url),
        }
    )


def iter_prices() -> Iterator[tuple[str, int, str]]:
    for (_, interval), (price_id, amount) in PRICES.items():
        yield price_id, amount, interval
