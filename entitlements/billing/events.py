"""Stripe events (already verified) applied to the mirror: once each, never backwards.

An event's object is never stored as the latest truth: the subscription it names is fetched
from Stripe again, in the subscription's turn (Billing.turn), and what Stripe says now is
applied before the turn passes on, so a late, repeated or slowly answered event cannot move a
subscription back to an older state. The event id is recorded in the same transaction as the
change (see BillingStore.apply).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from adapters.stripe import CheckoutSession, StripeInvoice, StripeSubscription, from_unix
from entitlements.billing.billing import Billing, BillingTurn
from entitlements.billing.mirror import subscription_record
from entitlements.errors import EntitlementsError, FailedPrecondition, NotFound, Unavailable
from entitlements.store.billing_repository import (
    DONE_STATUSES,
    ApplyResult,
    BillingChange,
    CheckoutUpdate,
    EventRef,
    FailedPaymentRecord,
    PaidInvoiceRecord,
)
from entitlements.store.records import SubscriptionRecord, utcnow

__all__ = ["HANDLED_EVENTS", "StripeEvents", "WebhookOutcome"]

log = logging.getLogger(__name__)

Outcome = Literal["processed", "ignored", "duplicate", "failed"]


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    """What became of one event. "failed" was recorded with its error and is retried by
    Stripe (the shim answers non-2xx); an unavailable database or Stripe raises Unavailable."""

    outcome: Outcome
    detail: str = ""
    account_id: str | None = None
    #: The account's entitlement revision after the event, when it changed the account's state
    #: (a consistency token: `min_revision` of a check on any replica).
    revision: int | None = None


class InvalidEvent(ValueError):
    """The body is not a Stripe event."""


Handler = Callable[[EventRef, Mapping[str, Any], datetime], Awaitable[WebhookOutcome]]


class StripeEvents:
    """Applies Stripe's webhook events through `Billing`."""

    def __init__(self, billing: Billing) -> None:
        self._billing = billing
        self._handlers: dict[str, Handler] = {
            type_: getattr(self, name) for type_, name in _HANDLERS.items()
        }

    async def handle(self, event: Mapping[str, Any]) -> WebhookOutcome:
        """Apply one event. Raises InvalidEvent for a body that is not an event, Unavailable
        when the database or Stripe cannot be reached (nothing was applied)."""
        event_id, event_type, created = _envelope(event)
        store = self._billing.store
        if await store.event_status(event_id) in DONE_STATUSES:
            return WebhookOutcome("duplicate", f"event {event_id} was applied before")
        handler = self._handlers.get(event_type)
        ref = EventRef(event_id, event_type)
        if handler is None:
            # Whatever its object (a balance has no id, an upcoming invoice neither): a 4xx
            # would only make Stripe retry it for three days.
            return await self._ignore(ref, f"event type {event_type} is not used")
        obj = _object(event_id, event)
        try:
            return await handler(ref, obj, created)
        except Unavailable:
            raise
        except EntitlementsError as exc:
            log.error("Stripe event %s (%s) not applied: %s", event_id, event_type, exc.message)
            await store.record_event(
                EventRef(event_id, event_type, "failed", error=exc.message[:2000])
            )
            return WebhookOutcome("failed", exc.message)

    # --- handlers ----------------------------------------------------------------------------

    async def _checkout(
        self, ref: EventRef, obj: Mapping[str, Any], created: datetime
    ) -> WebhookOutcome:
        billing = self._billing
        session = CheckoutSession.parse(obj)
        local = await billing.store.get_checkout(session.id)
        account_id = (
            session.account_id
            or (local.account_id if local else None)
            or await billing.store.find_account(customer_id=session.customer_id)
        )
        if not account_id:
            raise FailedPrecondition(
                f"checkout session {session.id!r} names no account (client_reference_id)"
            )
        if not session.subscription_id:
            result = await billing.apply(self._checkout_change(ref, session, account_id, None))
            return _outcome(result, account_id, f"checkout {session.payment_status}")
        subscription_id = session.subscription_id
        async with billing.turn(subscription_id) as turn:
            # The session too as Stripe has it now: a `completed` copy saying "unpaid" may
            # arrive after `async_payment_succeeded`.
            session = await self._fresh_session(session)
            sub, observed, fresh = await self._fresh(subscription_id, None, created)
            record = subscription_record(
                sub, account_id=account_id, prices=billing.prices, observed_at=observed
            )
            result = await turn.apply(
                self._checkout_change(ref, session, account_id, record), fresh=fresh
            )
        return _outcome(result, account_id, f"checkout {session.payment_status}")

    @staticmethod
    def _checkout_change(
        ref: EventRef,
        session: CheckoutSession,
        account_id: str,
        record: SubscriptionRecord | None,
    ) -> BillingChange:
        return BillingChange(
            account_id=account_id,
            event=ref,
            customer_id=session.customer_id,
            subscription=record,
            checkout=CheckoutUpdate(
                id=session.id,
                account_id=account_id,
                status=session.status or "complete",
                payment_status=session.payment_status or "unpaid",
                stripe_customer_id=session.customer_id,
                stripe_subscription_id=session.subscription_id,
                plan_id=record.plan_id if record else None,
                interval=record.interval if record else None,
                stripe_price_id=record.stripe_price_id if record else None,
            ),
        )

    async def _subscription(
        self, ref: EventRef, obj: Mapping[str, Any], created: datetime
    ) -> WebhookOutcome:
        billing = self._billing
        given = StripeSubscription.parse(obj)
        async with billing.turn(given.id) as turn:
            sub, observed, fresh = await self._fresh(given.id, given, created)
            account_id = await turn.account_of(sub)
            if not account_id:
                raise FailedPrecondition(
                    f"Stripe subscription {sub.id!r} of customer {sub.customer_id!r} belongs to "
                    "no known account (no metadata account_id, customer not linked by a checkout)"
                )
            record = subscription_record(
                sub, account_id=account_id, prices=billing.prices, observed_at=observed
            )
            result = await turn.apply(
                BillingChange(
                    account_id=account_id,
                    event=ref,
                    customer_id=sub.customer_id,
                    subscription=record,
                ),
                fresh=fresh,
            )
        return _outcome(result, account_id, f"subscription {sub.status}")

    async def _invoice_paid(
        self, ref: EventRef, obj: Mapping[str, Any], created: datetime
    ) -> WebhookOutcome:
        invoice = StripeInvoice.parse(obj)
        if invoice.subscription_id is None:
            return await self._ignore(ref, "the invoice is not for a subscription")
        async with self._billing.turn(invoice.subscription_id) as turn:
            account_id, record, fresh = await self._invoice_subject(turn, invoice, created)
            result = await turn.apply(
                BillingChange(
                    account_id=account_id,
                    event=ref,
                    customer_id=invoice.customer_id,
                    subscription=record,
                    paid_invoice=PaidInvoiceRecord(
                        stripe_invoice_id=invoice.id,
                        amount_cents=invoice.amount_paid,
                        currency=invoice.currency,
                        paid_at=invoice.paid_at or created,
                        subscription_id=invoice.subscription_id,
                        stripe_customer_id=invoice.customer_id,
                    ),
                ),
                fresh=fresh,
            )
        return _outcome(result, account_id, f"invoice paid {invoice.amount_paid}")

    async def _invoice_failed(
        self, ref: EventRef, obj: Mapping[str, Any], created: datetime
    ) -> WebhookOutcome:
        invoice = StripeInvoice.parse(obj)
        if invoice.subscription_id is None:
            return await self._ignore(ref, "the invoice is not for a subscription")
        async with self._billing.turn(invoice.subscription_id) as turn:
            account_id, record, fresh = await self._invoice_subject(turn, invoice, created)
            result = await turn.apply(
                BillingChange(
                    account_id=account_id,
                    event=ref,
                    customer_id=invoice.customer_id,
                    subscription=record,
                    failed_payment=FailedPaymentRecord(
                        stripe_invoice_id=invoice.id,
                        attempt_count=invoice.attempt_count,
                        amount_cents=invoice.amount_due,
                        currency=invoice.currency,
                        failed_at=created,
                        next_payment_attempt=invoice.next_payment_attempt,
                        subscription_id=invoice.subscription_id,
                    ),
                ),
                fresh=fresh,
            )
        if invoice.next_payment_attempt is None:
            log.warning(
                "Stripe stopped retrying invoice %s of account %s (attempt %d)",
                invoice.id,
                account_id,
                invoice.attempt_count,
            )
        final = " (Stripe stopped retrying)" if invoice.next_payment_attempt is None else ""
        return _outcome(result, account_id, f"payment failed{final}")

    # --- helpers -----------------------------------------------------------------------------

    async def _ignore(self, ref: EventRef, why: str) -> WebhookOutcome:
        ignored = EventRef(ref.id, ref.type, "ignored", error=why)
        if not await self._billing.store.record_event(ignored):
            return WebhookOutcome("duplicate", f"event {ref.id} was applied before")
        return WebhookOutcome("ignored", why)

    async def _invoice_subject(
        self, turn: BillingTurn, invoice: StripeInvoice, created: datetime
    ) -> tuple[str, SubscriptionRecord | None, bool]:
        """(account, the subscription as Stripe has it now, whether that was read fresh); no
        subscription if Stripe no longer has it (the invoice is recorded all the same)."""
        assert invoice.subscription_id is not None
        try:
            sub, observed, fresh = await self._fresh(invoice.subscription_id, None, created)
        except NotFound:
            account_id = await turn.store_turn.find_account(
                stripe_subscription_id=invoice.subscription_id, customer_id=invoice.customer_id
            )
            if account_id is None:
                raise
            return account_id, None, False
        account_id = await turn.account_of(sub) or await turn.store_turn.find_account(
            customer_id=invoice.customer_id
        )
        if account_id is None:
            raise FailedPrecondition(
                f"invoice {invoice.id!r} of customer {invoice.customer_id!r} belongs to no "
                "known account"
            )
        record = subscription_record(
            sub, account_id=account_id, prices=self._billing.prices, observed_at=observed
        )
        return account_id, record, fresh

    async def _fresh_session(self, given: CheckoutSession) -> CheckoutSession:
        try:
            session = await self._billing.gateway.retrieve_checkout_session(given.id)
        except NotFound:
            return given
        return session if session.subscription_id == given.subscription_id else given

    async def _fresh(
        self, subscription_id: str, given: StripeSubscription | None, created: datetime
    ) -> tuple[StripeSubscription, datetime, bool]:
        """What Stripe says about the subscription now (read in its turn: fresh), and when
        that was observed; the event's own copy, as of the event's time and not fresh, only
        if Stripe no longer has it."""
        try:
            sub = await self._billing.gateway.retrieve_subscription(subscription_id)
        except NotFound:
            if given is None:
                raise
            return given, created, False
        return sub, utcnow(), True


def _outcome(result: ApplyResult, account_id: str, detail: str) -> WebhookOutcome:
    if result.duplicate:
        return WebhookOutcome("duplicate", "applied before", account_id)
    return WebhookOutcome("processed", detail, account_id, result.revision)


def _envelope(event: Mapping[str, Any]) -> tuple[str, str, datetime]:
    event_id = event.get("id")
    event_type = event.get("type")
    if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
        raise InvalidEvent("not a Stripe event: id and type are required")
    return event_id, event_type, from_unix(event.get("created")) or utcnow()


def _object(event_id: str, event: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object of an event of a handled type, which must have an id."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
        raise InvalidEvent(f"event {event_id}: data.object with an id is required")
    return obj


#: The event types this service applies, with their handlers; every other type is
#: acknowledged and recorded as ignored.
_HANDLERS = {
    "checkout.session.completed": "_checkout",
    "checkout.session.async_payment_succeeded": "_checkout",
    "checkout.session.async_payment_failed": "_checkout",
    "customer.subscription.created": "_subscription",
    "customer.subscription.updated": "_subscription",
    "customer.subscription.deleted": "_subscription",
    "customer.subscription.paused": "_subscription",
    "customer.subscription.resumed": "_subscription",
    "invoice.paid": "_invoice_paid",
    "invoice.payment_failed": "_invoice_failed",
}
#: In the order docs/stripe.md lists them for `stripe listen --events` (a test checks it).
HANDLED_EVENTS = tuple(_HANDLERS)
