"""The billing store: the Stripe mirror's writes, each event applied in one transaction.

A Stripe event's id is recorded in `webhook_events` in the same transaction as the state change
it causes, so a duplicate (also one delivered to two replicas at once) is applied once. A
subscription's fetch from Stripe and the write of what it said happen in one `turn` of that
subscription (entitlements/store/turns.py), so writes follow the order of Stripe's reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import case, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from entitlements.errors import AlreadyExists
from entitlements.events.transitions import payment_failed, subscription_events
from entitlements.store.engine import is_postgres
from entitlements.store.events_repository import append_event
from entitlements.store.failures import translate_errors
from entitlements.store.models import (
    Account,
    FailedPayment,
    PaidInvoice,
    StripeCheckoutSession,
    Subscription,
    WebhookEvent,
)
from entitlements.store.records import SubscriptionRecord, utcnow
from entitlements.store.repository import Store, _subscription_record
from entitlements.store.sessions import Sessions
from entitlements.store.turns import FileTurns, LocalTurns, advisory_key

__all__ = [
    "ApplyResult",
    "BillingChange",
    "BillingStore",
    "CheckoutRecord",
    "CheckoutUpdate",
    "EventRef",
    "FailedPaymentRecord",
    "PaidInvoiceRecord",
    "SubscriptionTurn",
]

#: webhook_events.source of Stripe's events.
STRIPE = "stripe"
#: Outcomes recorded for an event; "failed" ones are applied again when Stripe retries.
DONE_STATUSES = ("processed", "ignored")
_GRANTING = ("active", "trialing")
_PAID = ("paid", "no_payment_required")

# Fields whose change is a change of the subscription (not bookkeeping of the mirror itself).
_COMPARED = tuple(
    f.name
    for f in fields(SubscriptionRecord)
    if f.name not in ("id", "account_id", "created_at", "updated_at", "source_updated_at")
)
_WRITTEN = tuple(f.name for f in fields(SubscriptionRecord) if f.name not in ("id", "account_id"))


@dataclass(frozen=True, slots=True)
class EventRef:
    """A received event: its id, type and the outcome to record with it."""

    id: str
    type: str
    status: str = "processed"
    error: str | None = None
    source: str = STRIPE


@dataclass(frozen=True, slots=True)
class CheckoutRecord:
    """A Checkout session started by CreateCheckoutSession."""

    id: str
    account_id: str
    plan_id: str
    interval: str
    stripe_price_id: str
    user_id: str | None = None
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    status: str = "open"
    payment_status: str = "unpaid"


@dataclass(frozen=True, slots=True)
class CheckoutUpdate:
    """What a checkout.session.* event says about a session."""

    id: str
    account_id: str
    status: str
    payment_status: str
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    #: Known from the subscription; used when the session was not started by this service.
    plan_id: str | None = None
    interval: str | None = None
    stripe_price_id: str | None = None


@dataclass(frozen=True, slots=True)
class PaidInvoiceRecord:
    stripe_invoice_id: str
    amount_cents: int
    currency: str
    paid_at: datetime
    subscription_id: str | None = None
    stripe_customer_id: str | None = None
    payment_method: str = "card"


@dataclass(frozen=True, slots=True)
class FailedPaymentRecord:
    stripe_invoice_id: str
    attempt_count: int
    amount_cents: int
    currency: str
    failed_at: datetime
    next_payment_attempt: datetime | None
    subscription_id: str | None = None


@dataclass(frozen=True, slots=True)
class BillingChange:
    """Everything one event (or one API answer) changes, applied together or not at all.

    `subscription` is the mirror's candidate row: the store keeps `created_at` and
    `past_due_since` consistent with the stored row, refuses it when an newer observation is
    stored (`source_updated_at`), and holds back the plan while its checkout is unpaid.
    """

    account_id: str
    event: EventRef | None = None
    customer_id: str | None = None
    subscription: SubscriptionRecord | None = None
    checkout: CheckoutUpdate | None = None
    paid_invoice: PaidInvoiceRecord | None = None
    failed_payment: FailedPaymentRecord | None = None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    #: The event had been applied before: nothing was done.
    duplicate: bool = False
    #: The account's entitlement state changed (its revision was bumped).
    changed: bool = False
    #: The subscription given was older than the stored one and was not applied.
    stale: bool = False
    revision: int | None = None
    subscription: SubscriptionRecord | None = None


class SubscriptionTurn:
    """One subscription's turn (see BillingStore.turn): what is read from Stripe inside it is
    newer than anything stored for that subscription, and is written through `apply`."""

    def __init__(self, billing: BillingStore, session: AsyncSession | None) -> None:
        self._billing = billing
        #: PostgreSQL: the transaction holding the advisory lock; the writes go in it too.
        self._session = session

    async def apply(self, change: BillingChange, *, fresh: bool) -> ApplyResult:
        """Apply `change`; `fresh`: its subscription was read from Stripe in this turn, so it
        replaces the stored one whatever their timestamps (the lock orders them, not clocks)."""
        if self._session is None:
            return await self._billing.apply(change, fresh=fresh)
        try:
            async with self._session.begin_nested():
                return await self._billing._apply(self._session, change, fresh=fresh)
        except IntegrityError as error:
            return await self._billing._conflict(change, error)

    async def stored(self, stripe_subscription_id: str) -> SubscriptionRecord | None:
        """The mirror's row of the subscription, as of this turn."""
        if self._session is None:
            return await self._billing.subscription_by_stripe_id(stripe_subscription_id)
        return await _subscription_by_stripe_id(self._session, stripe_subscription_id)

    async def find_account(
        self, *, stripe_subscription_id: str | None = None, customer_id: str | None = None
    ) -> str | None:
        if self._session is None:
            return await self._billing.find_account(
                stripe_subscription_id=stripe_subscription_id, customer_id=customer_id
            )
        return await _find_account(self._session, stripe_subscription_id, customer_id)


class BillingStore(Sessions):
    """Billing tables over the same engine as `Store`; raises Unavailable when the database is."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.engine)
        self._store = store
        database = store.engine.url.database
        self._turns: LocalTurns = (
            LocalTurns()
            if is_postgres(store.engine) or not database or database == ":memory:"
            else FileTurns(database)
        )

    @property
    def store(self) -> Store:
        return self._store

    @asynccontextmanager
    async def turn(self, stripe_subscription_id: str) -> AsyncIterator[SubscriptionTurn]:
        """Hold the subscription's turn: no other task, worker or replica on this database
        reads it from Stripe and writes it at the same time. Hold it across the fetch."""
        async with self._turns.hold(stripe_subscription_id):
            if not is_postgres(self._engine):
                yield SubscriptionTurn(self, None)
                return
            with translate_errors(self._engine.url):
                async with self._writes() as session, session.begin():
                    await session.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": advisory_key(stripe_subscription_id)},
                    )
                    yield SubscriptionTurn(self, session)

    # --- reads -------------------------------------------------------------------------------

    async def event_status(self, event_id: str) -> str | None:
        async with self._transaction() as session:
            row = await session.get(WebhookEvent, event_id)
            return row.status if row is not None else None

    async def customer_for_account(self, account_id: str) -> str | None:
        async with self._transaction() as session:
            return await session.scalar(
                select(Account.stripe_customer_id).where(Account.id == account_id)
            )

    async def find_account(
        self, *, stripe_subscription_id: str | None = None, customer_id: str | None = None
    ) -> str | None:
        """The account a Stripe subscription or customer belongs to, if this service knows it."""
        async with self._transaction() as session:
            return await _find_account(session, stripe_subscription_id, customer_id)

    async def get_checkout(self, session_id: str) -> CheckoutRecord | None:
        async with self._transaction() as session:
            row = await session.get(StripeCheckoutSession, session_id)
            return _checkout_record(row) if row is not None else None

    async def stripe_subscriptions(self) -> dict[str, SubscriptionRecord]:
        """Every mirrored Stripe subscription, by Stripe id."""
        async with self._transaction() as session:
            rows = await session.scalars(
                select(Subscription).where(Subscription.stripe_subscription_id.is_not(None))
            )
            return {
                row.stripe_subscription_id: _subscription_record(row)
                for row in rows
                if row.stripe_subscription_id
            }

    async def subscription_by_stripe_id(
        self, stripe_subscription_id: str
    ) -> SubscriptionRecord | None:
        async with self._transaction() as session:
            return await _subscription_by_stripe_id(session, stripe_subscription_id)

    async def paid_invoices(self, account_id: str) -> list[PaidInvoiceRecord]:
        async with self._transaction() as session:
            rows = await session.scalars(
                select(PaidInvoice)
                .where(PaidInvoice.account_id == account_id)
                .order_by(PaidInvoice.paid_at, PaidInvoice.id)
            )
            return [
                PaidInvoiceRecord(
                    stripe_invoice_id=r.stripe_invoice_id,
                    amount_cents=r.amount_cents,
                    currency=r.currency,
                    paid_at=r.paid_at,
                    subscription_id=r.subscription_id,
                    stripe_customer_id=r.stripe_customer_id,
                    payment_method=r.payment_method,
                )
                for r in rows
            ]

    async def failed_payments(self, account_id: str) -> list[FailedPaymentRecord]:
        async with self._transaction() as session:
            rows = await session.scalars(
                select(FailedPayment)
                .where(FailedPayment.account_id == account_id)
                .order_by(FailedPayment.failed_at, FailedPayment.id)
            )
            return [
                FailedPaymentRecord(
                    stripe_invoice_id=r.stripe_invoice_id,
                    attempt_count=r.attempt_count,
                    amount_cents=r.amount_cents,
                    currency=r.currency,
                    failed_at=r.failed_at,
                    next_payment_attempt=r.next_payment_attempt,
                    subscription_id=r.subscription_id,
                )
                for r in rows
            ]

    # --- writes ------------------------------------------------------------------------------

    async def save_checkout(self, record: CheckoutRecord) -> None:
        """Remember a Checkout session this service created (again: keeps the first)."""
        now = utcnow()
        values = {f.name: getattr(record, f.name) for f in fields(CheckoutRecord)}
        values |= {"created_at": now, "updated_at": now}
        async with self._transaction(write=True) as session:
            await session.execute(
                self._insert(StripeCheckoutSession)
                .values(values)
                .on_conflict_do_nothing(index_elements=[StripeCheckoutSession.id])
            )

    async def record_event(self, event: EventRef) -> bool:
        """Record an event that changes nothing (ignored, or failed); False if it was recorded
        as done before. A failed one is recorded again, and later applied when retried."""
        try:
            async with self._transaction(write=True) as session:
                return await self._claim_event(session, event)
        except IntegrityError:
            return False

    async def apply(self, change: BillingChange, *, fresh: bool = False) -> ApplyResult:
        """Apply `change` in one transaction; see BillingChange (and SubscriptionTurn for
        `fresh`)."""
        try:
            async with self._transaction(write=True) as session:
                return await self._apply(session, change, fresh=fresh)
        except IntegrityError as error:
            return await self._conflict(change, error)

    async def _conflict(self, change: BillingChange, error: IntegrityError) -> ApplyResult:
        # A concurrent delivery of the same event committed first: that one applied it.
        if change.event is not None and await self.event_status(change.event.id) in DONE_STATUSES:
            return ApplyResult(duplicate=True)
        raise AlreadyExists(
            f"the change for account {change.account_id!r} conflicts with stored data "
            f"(customer {change.customer_id!r} or subscription "
            f"{change.subscription.id if change.subscription else None!r} belongs to "
            "another account)"
        ) from error

    async def _claim_event(self, session: AsyncSession, event: EventRef) -> bool:
        """Record the event in this transaction; False if it was already done."""
        now = utcnow()
        stored = await session.get(WebhookEvent, event.id, with_for_update=True)
        if stored is not None:
            if stored.status in DONE_STATUSES:
                return False
            stored.status = event.status
            stored.error = event.error
            stored.processed_at = now
            return True
        session.add(
            WebhookEvent(
                id=event.id,
                source=event.source,
                type=event.type,
                received_at=now,
                processed_at=now,
                status=event.status,
                error=event.error,
            )
        )
        # Flush now: a concurrent delivery's row makes this fail here (or wait for it on
        # PostgreSQL, then fail), before anything else is written.
        await session.flush()
        return True

    async def _apply(
        self, session: AsyncSession, change: BillingChange, *, fresh: bool = False
    ) -> ApplyResult:
        if change.event is not None and not await self._claim_event(session, change.event):
            return ApplyResult(duplicate=True)
        account_id = change.account_id
        now = utcnow()
        await session.execute(
            self._insert(Account)
            .values(id=account_id, revision=0, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=[Account.id])
        )
        # Lock the account: changes to one account take turns (PostgreSQL; SQLite has one writer).
        account = await session.get(Account, account_id, with_for_update=True)
        assert account is not None
        changed = False
        if change.customer_id and account.stripe_customer_id != change.customer_id:
            account.stripe_customer_id = change.customer_id
            changed = True
        if change.checkout is not None:
            await self._update_checkout(session, change.checkout)
        stale = False
        saved: SubscriptionRecord | None = None
        previous: SubscriptionRecord | None = None
        sub_changed = False
        if change.subscription is not None:
            saved, previous, sub_changed, stale = await self._merge_subscription(
                session, change.subscription, now, fresh=fresh
            )
            changed = changed or sub_changed
        if change.paid_invoice is not None:
            await self._add_paid_invoice(session, account_id, change.paid_invoice, now)
        if change.failed_payment is not None:
            await self._add_failed_payment(session, account_id, change.failed_payment, now)
        revision = None
        await session.flush()
        if changed:
            # The store's own bump, so this change is seen like any other (e.g. by a change
            # feed written with the revision).
            revision = await self._store._bump_revision(session, account_id)
        if sub_changed and saved is not None:
            # The transition from the row as it was (locked above) to the row as written: a
            # replayed or duplicate event finds them equal and writes nothing.
            for event_ in subscription_events(
                previous,
                saved,
                ref=change.event.id if change.event is not None else f"r{revision}",
                past_due_grace=self._store.past_due_grace,
                now=now,
            ):
                await append_event(session, event_)
        return ApplyResult(changed=changed, stale=stale, revision=revision, subscription=saved)

    async def _update_checkout(self, session: AsyncSession, update_: CheckoutUpdate) -> None:
        values: dict[str, Any] = {"status": update_.status, "updated_at": utcnow()}
        # A session once paid stays paid (a late copy saying "unpaid" is older, not news).
        values["payment_status"] = case(
            (StripeCheckoutSession.payment_status.in_(_PAID), StripeCheckoutSession.payment_status),
            else_=update_.payment_status,
        )
        if update_.stripe_customer_id:
            values["stripe_customer_id"] = update_.stripe_customer_id
        if update_.stripe_subscription_id:
            values["stripe_subscription_id"] = update_.stripe_subscription_id
        done = await session.execute(
            update(StripeCheckoutSession)
            .where(StripeCheckoutSession.id == update_.id)
            .values(values)
            .returning(StripeCheckoutSession.id)
            .execution_options(synchronize_session=False)
        )
        if (
            done.first() is None
            and update_.plan_id
            and update_.interval
            and update_.stripe_price_id
        ):
            # A session started elsewhere (a payment link, the dashboard): remember it too, so
            # an unpaid one holds its subscription back like ours.
            now = utcnow()
            session.add(
                StripeCheckoutSession(
                    id=update_.id,
                    account_id=update_.account_id,
                    plan_id=update_.plan_id,
                    interval=update_.interval,
                    stripe_price_id=update_.stripe_price_id,
                    stripe_customer_id=update_.stripe_customer_id,
                    stripe_subscription_id=update_.stripe_subscription_id,
                    status=update_.status,
                    payment_status=update_.payment_status,
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.flush()

    async def _awaiting_payment(self, session: AsyncSession, stripe_subscription_id: str) -> bool:
        """True while the checkout that created the subscription waits for a delayed payment."""
        statuses = set(
            await session.scalars(
                select(StripeCheckoutSession.payment_status).where(
                    StripeCheckoutSession.stripe_subscription_id == stripe_subscription_id
                )
            )
        )
        return "unpaid" in statuses and not statuses & set(_PAID)

    async def _merge_subscription(
        self,
        session: AsyncSession,
        candidate: SubscriptionRecord,
        now: datetime,
        *,
        fresh: bool = False,
    ) -> tuple[SubscriptionRecord, SubscriptionRecord | None, bool, bool]:
        """(row as stored afterwards, row as it was (None: new), changed, stale). A `fresh`
        candidate (read from Stripe in the subscription's turn) is newer than the stored row by
        construction; any other is refused when it was observed before the stored one."""
        row = await session.get(Subscription, candidate.id, with_for_update=True)
        stored = _subscription_record(row) if row is not None else None
        if stored is not None and stored.account_id != candidate.account_id:
            raise AlreadyExists(
                f"subscription {candidate.id!r} belongs to account {stored.account_id!r}, "
                f"not {candidate.account_id!r}"
            )
        if stored is not None and stored.source_updated_at is not None:
            if fresh:
                # Stamps only order the observations that are not fresh: keep them monotonic
                # even if this replica's clock is behind the one that wrote the stored row.
                candidate = replace(
                    candidate,
                    source_updated_at=max(
                        candidate.source_updated_at or stored.source_updated_at,
                        stored.source_updated_at,
                    ),
                )
            elif (
                candidate.source_updated_at is not None
                and candidate.source_updated_at < stored.source_updated_at
            ):
                return stored, stored, False, True
        status = candidate.status
        if (
            status in _GRANTING
            and candidate.stripe_subscription_id
            and await self._awaiting_payment(session, candidate.stripe_subscription_id)
        ):
            # The first payment has not arrived (a delayed method): grant nothing yet.
            status = "incomplete"
        past_due_since = None
        if status == "past_due":
            past_due_since = (
                stored.past_due_since
                if stored is not None and stored.status == "past_due" and stored.past_due_since
                else candidate.past_due_since or now
            )
        merged = replace(candidate, status=status, past_due_since=past_due_since, updated_at=now)
        if stored is not None:
            merged = replace(merged, created_at=stored.created_at)
            if all(getattr(stored, n) == getattr(merged, n) for n in _COMPARED):
                return stored, stored, False, False
        if row is None:
            session.add(
                Subscription(
                    id=merged.id,
                    account_id=merged.account_id,
                    **{n: getattr(merged, n) for n in _WRITTEN},
                )
            )
        else:
            for name in _WRITTEN:
                setattr(row, name, getattr(merged, name))
        await session.flush()
        return merged, stored, True, False

    async def _add_paid_invoice(
        self, session: AsyncSession, account_id: str, record: PaidInvoiceRecord, now: datetime
    ) -> None:
        await session.execute(
            self._insert(PaidInvoice)
            .values(
                stripe_invoice_id=record.stripe_invoice_id,
                account_id=account_id,
                subscription_id=record.subscription_id,
                stripe_customer_id=record.stripe_customer_id,
                amount_cents=record.amount_cents,
                currency=record.currency,
                payment_method=record.payment_method,
                paid_at=record.paid_at,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[PaidInvoice.stripe_invoice_id])
        )

    async def _add_failed_payment(
        self, session: AsyncSession, account_id: str, record: FailedPaymentRecord, now: datetime
    ) -> None:
        added = await session.execute(
            self._insert(FailedPayment)
            .values(
                stripe_invoice_id=record.stripe_invoice_id,
                attempt_count=record.attempt_count,
                account_id=account_id,
                subscription_id=record.subscription_id,
                amount_cents=record.amount_cents,
                currency=record.currency,
                next_payment_attempt=record.next_payment_attempt,
                failed_at=record.failed_at,
                created_at=now,
            )
            .on_conflict_do_nothing(
                index_elements=[FailedPayment.stripe_invoice_id, FailedPayment.attempt_count]
            )
            .returning(FailedPayment.id)
        )
        if added.first() is not None:  # a new failed attempt, not one recorded before
            await append_event(
                session,
                payment_failed(
                    account_id,
                    invoice_id=record.stripe_invoice_id,
                    subscription_id=record.subscription_id,
                    amount_cents=record.amount_cents,
                    currency=record.currency,
                    attempt_count=record.attempt_count,
                    next_attempt_at=record.next_payment_attempt,
                    now=now,
                ),
            )


async def _subscription_by_stripe_id(
    session: AsyncSession, stripe_subscription_id: str
) -> SubscriptionRecord | None:
    row = await session.scalar(
        select(Subscription).where(Subscription.stripe_subscription_id == stripe_subscription_id)
    )
    return _subscription_record(row) if row is not None else None


async def _find_account(
    session: AsyncSession, stripe_subscription_id: str | None, customer_id: str | None
) -> str | None:
    if stripe_subscription_id:
        found = await session.scalar(
            select(Subscription.account_id).where(
                Subscription.stripe_subscription_id == stripe_subscription_id
            )
        )
        if found is None:
            found = await session.scalar(
                select(StripeCheckoutSession.account_id)
                .where(StripeCheckoutSession.stripe_subscription_id == stripe_subscription_id)
                .limit(1)
            )
        if found is not None:
            return found
    if customer_id:
        found = await session.scalar(
            select(Account.id).where(Account.stripe_customer_id == customer_id)
        )
        if found is None:
            found = await session.scalar(
                select(StripeCheckoutSession.account_id)
                .where(StripeCheckoutSession.stripe_customer_id == customer_id)
                .limit(1)
            )
        return found
    return None


def _checkout_record(row: StripeCheckoutSession) -> CheckoutRecord:
    return CheckoutRecord(
        id=row.id,
        account_id=row.account_id,
        plan_id=row.plan_id,
        interval=row.interval,
        stripe_price_id=row.stripe_price_id,
        user_id=row.user_id,
        stripe_customer_id=row.stripe_customer_id,
        stripe_subscription_id=row.stripe_subscription_id,
        status=row.status,
        payment_status=row.payment_status,
    )
