"""Reads for the admin dashboard: every subscription, revenue facts, failed payments, and a
keyset-paginated subscription listing. Read-only; each method is one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, or_, select

from entitlements.store.crypto_repository import crypto_revenue
from entitlements.store.manual_repository import manual_revenue
from entitlements.store.models import FailedPayment, PaidInvoice, Subscription
from entitlements.store.records import SubscriptionRecord
from entitlements.store.repository import Store, _subscription_record
from entitlements.store.sessions import Sessions

__all__ = [
    "REVENUE_SOURCES",
    "AdminStore",
    "FailedPaymentFact",
    "RevenueFact",
    "RevenueSource",
    "SubscriptionPage",
]


@dataclass(frozen=True, slots=True)
class RevenueFact:
    """Money received: one paid invoice (card) or one confirmed crypto payment."""

    account_id: str
    subscription_id: str | None
    amount_cents: int
    #: ISO 4217, lower case ("usd"); crypto payments are valued in USD cents when confirmed.
    currency: str
    payment_method: str
    paid_at: datetime


@dataclass(frozen=True, slots=True)
class FailedPaymentFact:
    invoice_id: str
    account_id: str
    amount_cents: int
    currency: str
    failed_at: datetime


#: A source of revenue facts: a SELECT of (account_id, subscription_id, amount_cents, currency,
#: payment_method, paid_at) for the facts paid at or before the given time.
RevenueSource = Callable[[datetime], Select[str, str | None, int, str, str, datetime]]


def paid_invoices(until: datetime) -> Select[str, str | None, int, str, str, datetime]:
    """Card revenue: Stripe invoices recorded by the webhook shim (`paid_invoices`)."""
    return select(
        PaidInvoice.account_id,
        PaidInvoice.subscription_id,
        PaidInvoice.amount_cents,
        PaidInvoice.currency,
        PaidInvoice.payment_method,
        PaidInvoice.paid_at,
    ).where(PaidInvoice.paid_at <= until)


#: Every table that holds money received: Stripe invoices, confirmed crypto payments (their USD
#: value, payment_method "crypto") and manual invoices (payment_method "manual", in their currency).
REVENUE_SOURCES: list[RevenueSource] = [paid_invoices, crypto_revenue, manual_revenue]


@dataclass(frozen=True, slots=True)
class SubscriptionPage:
    subscriptions: list[SubscriptionRecord]
    #: (created_at, id) of the last row when more may follow, else None.
    last: tuple[datetime, str] | None


class AdminStore(Sessions):
    """Admin reads over the same engine as `Store`; raises Unavailable when the database is."""

    def __init__(
        self, store: Store, *, revenue_sources: Sequence[RevenueSource] | None = None
    ) -> None:
        super().__init__(store.engine)
        self._sources = tuple(revenue_sources if revenue_sources is not None else REVENUE_SOURCES)

    async def subscriptions(self) -> list[SubscriptionRecord]:
        """Every subscription row (current and historical), oldest first."""
        async with self._transaction() as session:
            rows = await session.scalars(
                select(Subscription).order_by(Subscription.created_at, Subscription.id)
            )
            return [_subscription_record(row) for row in rows]

    async def revenue_facts(self, until: datetime) -> list[RevenueFact]:
        """Money received at or before `until`, from every revenue source."""
        facts: list[RevenueFact] = []
        async with self._transaction() as session:
            for source in self._sources:
                for account, sub, amount, currency, method, paid_at in await session.execute(
                    source(until)
                ):
                    facts.append(
                        RevenueFact(
                            account_id=account,
                            subscription_id=sub,
                            amount_cents=int(amount),
                            currency=currency.lower(),
                            payment_method=method,
                            paid_at=paid_at,
                        )
                    )
        facts.sort(key=lambda f: f.paid_at)
        return facts

    async def failed_payments(self, since: datetime, until: datetime) -> list[FailedPaymentFact]:
        """Every failed payment attempt in (since, until], oldest first."""
        async with self._transaction() as session:
            rows = await session.scalars(
                select(FailedPayment)
                .where(FailedPayment.failed_at > since, FailedPayment.failed_at <= until)
                .order_by(FailedPayment.failed_at, FailedPayment.id)
            )
            return [
                FailedPaymentFact(
                    invoice_id=row.stripe_invoice_id,
                    account_id=row.account_id,
                    amount_cents=int(row.amount_cents),
                    currency=row.currency.lower(),
                    failed_at=row.failed_at,
                )
                for row in rows
            ]

    async def subscription_page(
        self,
        *,
        limit: int,
        after: tuple[datetime, str] | None,
        status: str | None,
        plan_id: str | None,
    ) -> SubscriptionPage:
        """Up to `limit` subscriptions newest first ((created_at, id) descending), strictly after
        the keyset `after`; rows inserted later never shift a page already handed out."""
        conditions: list[ColumnElement[bool]] = []
        if status is not None:
            conditions.append(Subscription.status == status)
        if plan_id is not None:
            conditions.append(Subscription.plan_id == plan_id)
        if after is not None:
            created_at, sub_id = after
            conditions.append(
                or_(
                    Subscription.created_at < created_at,
                    and_(Subscription.created_at == created_at, Subscription.id < sub_id),
                )
            )
        query = (
            select(Subscription)
            .where(*conditions)
            .order_by(Subscription.created_at.desc(), Subscription.id.desc())
            .limit(limit + 1)
        )
        async with self._transaction() as session:
            rows = list(await session.scalars(query))
        records = [_subscription_record(row) for row in rows[:limit]]
        last = None
        if len(rows) > limit and records:
            last = (records[-1].created_at, records[-1].id)
        return SubscriptionPage(subscriptions=records, last=last)
