"""Card subscriptions through Stripe: checkout, portal and changes, mirrored locally.

Stripe is the source of truth. Every change this service learns of (an API answer, a webhook, a
reconciliation) is applied to the mirror in a `turn` of its subscription: the subscription is
read from (or written to) Stripe and what Stripe answered is stored while no other task, worker
or replica does the same for that subscription, so the mirror follows the order in which Stripe
read its state. Each change is stored in one transaction with the account's revision bump, then,
like `EntitlementService`'s writes, the account is dropped from the cache and its new state
pushed to watchers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from adapters.stripe import CheckoutSession, Interval, PriceBook, StripeGateway, StripeSubscription
from entitlements.billing.mirror import derived_key, subscription_record
from entitlements.errors import FailedPrecondition, NotFound
from entitlements.service import EntitlementService
from entitlements.store.billing_repository import (
    ApplyResult,
    BillingChange,
    BillingStore,
    CheckoutRecord,
    EventRef,
    SubscriptionTurn,
)
from entitlements.store.records import SubscriptionRecord, utcnow

__all__ = ["Billing", "BillingTurn", "CheckoutRequest"]

log = logging.getLogger(__name__)

#: Statuses in which an account already pays for (or is trying) a subscription.
_LIVE = frozenset({"active", "trialing", "past_due", "incomplete", "unpaid", "paused"})
#: Statuses after which a Stripe subscription cannot be changed any more.
_ENDED = frozenset({"canceled", "incomplete_expired"})
#: Derived keys of session-creating calls hold for this many seconds: a retry within it gets the
#: same session, a new attempt later gets a new one.
_SESSION_KEY_WINDOW_S = 600


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    account_id: str
    plan_id: str
    interval: Interval
    success_url: str
    cancel_url: str
    user_id: str | None = None
    user_email: str | None = None
    idempotency_key: str | None = None


@dataclass
class BillingTurn:
    """A subscription's turn (Billing.turn): read it from Stripe and store what Stripe said."""

    billing: Billing
    store_turn: SubscriptionTurn
    changed: list[str] = field(default_factory=list)

    async def apply(self, change: BillingChange, *, fresh: bool = True) -> ApplyResult:
        """Store `change`; `fresh` (the default): its subscription was read from Stripe in
        this turn. The account's new state is published when the turn ends."""
        result = await self.store_turn.apply(change, fresh=fresh)
        if result.changed:
            self.changed.append(change.account_id)
        return result

    async def mirror(
        self, sub: StripeSubscription, account_id: str, *, event: EventRef | None = None
    ) -> ApplyResult:
        """Store what Stripe answered about `sub` in this turn."""
        record = subscription_record(
            sub, account_id=account_id, prices=self.billing.prices, observed_at=utcnow()
        )
        return await self.apply(
            BillingChange(
                account_id=account_id, event=event, customer_id=sub.customer_id, subscription=record
            )
        )

    async def mirrors(self, sub: StripeSubscription) -> bool:
        """True if the mirror already holds what `sub` says (as far as access depends on it)."""
        stored = await self.store_turn.stored(sub.id)
        return stored is not None and (
            stored.stripe_price_id,
            stored.status,
            stored.cancel_at_period_end,
            stored.current_period_end,
            stored.ended_at,
            stored.trial_end,
        ) == (
            sub.price_id,
            sub.status,
            sub.cancel_at_period_end,
            sub.current_period_end,
            sub.ended_at,
            sub.trial_end,
        )

    async def account_of(self, sub: StripeSubscription) -> str | None:
        return sub.metadata.get("account_id") or await self.store_turn.find_account(
            stripe_subscription_id=sub.id, customer_id=sub.customer_id
        )


class Billing:
    """The billing domain: commands that go to Stripe, and the mirror they keep."""

    def __init__(
        self,
        gateway: StripeGateway,
        store: BillingStore,
        service: EntitlementService,
        prices: PriceBook,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.service = service
        self.prices = prices

    # --- the mirror --------------------------------------------------------------------------

    @asynccontextmanager
    async def turn(self, stripe_subscription_id: str) -> AsyncIterator[BillingTurn]:
        """Hold the subscription's turn across a Stripe call and the write of its answer; the
        accounts it changed are published once it is stored."""
        async with self.store.turn(stripe_subscription_id) as store_turn:
            turn = BillingTurn(self, store_turn)
            yield turn
        for account_id in dict.fromkeys(turn.changed):
            await self.service.changed(account_id)

    async def apply(self, change: BillingChange) -> ApplyResult:
        """Store a change that reads nothing from Stripe (with its event id, once) and publish
        the account's new state."""
        result = await self.store.apply(change)
        if result.changed:
            await self.service.changed(change.account_id)
        return result

    async def account_of(self, sub: StripeSubscription) -> str | None:
        """The account a Stripe subscription belongs to: its metadata, else what is stored."""
        return sub.metadata.get("account_id") or await self.store.find_account(
            stripe_subscription_id=sub.id, customer_id=sub.customer_id
        )

    # --- commands ----------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        price_id = self.prices.price_for(request.plan_id, request.interval)
        current = await self._current(request.account_id)
        if current is not None and current.payment_method == "card" and current.status in _LIVE:
            raise FailedPrecondition(
                f"account {request.account_id!r} already has a {current.status} subscription "
                f"({current.plan_id}); change it with UpdateSubscription"
            )
        customer_id = await self.store.customer_for_account(request.account_id)
        key = request.idempotency_key or derived_key(
            "checkout",
            request.account_id,
            request.plan_id,
            request.interval,
            request.user_id,
            request.user_email,
            request.success_url,
            request.cancel_url,
            customer_id,
            int(time.time()) // _SESSION_KEY_WINDOW_S,
        )
        session = await self.gateway.create_checkout_session(
            account_id=request.account_id,
            price_id=price_id,
            success_url=request.success_url,
            cancel_url=request.cancel_url,
            idempotency_key=key,
            customer_id=customer_id,
            customer_email=None if customer_id else request.user_email,
            user_id=request.user_id,
        )
        await self.store.save_checkout(
            CheckoutRecord(
                id=session.id,
                account_id=request.account_id,
                plan_id=request.plan_id,
                interval=request.interval,
                stripe_price_id=price_id,
                user_id=request.user_id,
                stripe_customer_id=session.customer_id or customer_id,
                status=session.status or "open",
                payment_status=session.payment_status or "unpaid",
            )
        )
        return session

    async def create_portal(self, account_id: str, return_url: str) -> str:
        customer_id = await self.store.customer_for_account(account_id)
        if not customer_id:
            raise FailedPrecondition(
                f"account {account_id!r} has no Stripe customer yet: it must check out first"
            )
        key = derived_key("portal", account_id, customer_id, return_url, int(time.time()) // 60)
        return await self.gateway.create_portal_session(
            customer_id=customer_id, return_url=return_url, idempotency_key=key
        )

    async def get_subscription(self, account_id: str) -> SubscriptionRecord:
        current = await self._current(account_id)
        if current is None:
            raise NotFound(f"account {account_id!r} has no subscription")
        return current

    async def change_plan(
        self,
        account_id: str,
        *,
        plan_id: str | None,
        interval: Interval | None,
        idempotency_key: str | None = None,
    ) -> SubscriptionRecord:
        """Move the subscription to another plan or interval, with proration."""
        current = await self._changeable(account_id)
        new_plan = plan_id or current.plan_id
        new_interval: Interval = interval or current.interval
        price_id = self.prices.price_for(
            new_plan, new_interval, field="plan_id" if plan_id else "interval"
        )
        if price_id == current.stripe_price_id:
            return current
        stripe_id = _stripe_id(current)
        key = idempotency_key or derived_key("update", *_state(current), price_id)
        async with self.turn(stripe_id) as turn:
            upstream = await self.gateway.retrieve_subscription(stripe_id)
            if upstream.item_id is None:
                raise FailedPrecondition(f"Stripe subscription {stripe_id!r} has no item to change")
            changed = await self.gateway.change_price(
                stripe_id, item_id=upstream.item_id, price_id=price_id, idempotency_key=key
            )
            result = await turn.mirror(changed, account_id)
        return await self._mirrored(result, account_id)

    async def cancel(
        self, account_id: str, *, at_period_end: bool, idempotency_key: str | None = None
    ) -> SubscriptionRecord:
        current = await self._changeable(account_id)
        stripe_id = _stripe_id(current)
        key = idempotency_key or derived_key("cancel", *_state(current), at_period_end)
        if at_period_end and current.cancel_at_period_end:
            return current
        async with self.turn(stripe_id) as turn:
            if at_period_end:
                sub = await self.gateway.set_cancel_at_period_end(
                    stripe_id, True, idempotency_key=key
                )
            else:
                sub = await self.gateway.cancel_now(stripe_id, idempotency_key=key)
            result = await turn.mirror(sub, account_id)
        return await self._mirrored(result, account_id)

    async def resume(
        self, account_id: str, *, idempotency_key: str | None = None
    ) -> SubscriptionRecord:
        current = await self._changeable(account_id)
        if not current.cancel_at_period_end:
            raise FailedPrecondition(
                f"account {account_id!r}'s subscription is not scheduled to cancel"
            )
        key = idempotency_key or derived_key("resume", *_state(current))
        stripe_id = _stripe_id(current)
        async with self.turn(stripe_id) as turn:
            sub = await self.gateway.set_cancel_at_period_end(stripe_id, False, idempotency_key=key)
            result = await turn.mirror(sub, account_id)
        return await self._mirrored(result, account_id)

    # --- helpers -----------------------------------------------------------------------------

    async def _current(self, account_id: str) -> SubscriptionRecord | None:
        snapshot = await self.service.store.get_account_snapshot(account_id)
        return snapshot.subscription if snapshot is not None else None

    async def _changeable(self, account_id: str) -> SubscriptionRecord:
        current = await self.get_subscription(account_id)
        if current.payment_method != "card" or not current.stripe_subscription_id:
            raise FailedPrecondition(
                f"account {account_id!r}'s subscription is paid by {current.payment_method}, "
                "not through Stripe"
            )
        if current.status in _ENDED:
            raise FailedPrecondition(
                f"account {account_id!r}'s subscription has ended ({current.status})"
            )
        return current

    async def _mirrored(self, result: ApplyResult, account_id: str) -> SubscriptionRecord:
        if result.subscription is not None:
            return result.subscription
        return await self.get_subscription(account_id)


def _stripe_id(record: SubscriptionRecord) -> str:
    assert record.stripe_subscription_id is not None
    return record.stripe_subscription_id


def _state(record: SubscriptionRecord) -> tuple[object, ...]:
    # A derived key covers the state it acts on: the same call on a changed subscription is a
    # new request, a retry of one on the same state is not.
    return (
        record.account_id,
        record.stripe_subscription_id,
        record.stripe_price_id,
        record.status,
        record.cancel_at_period_end,
        record.updated_at.isoformat(),
    )
