"""A Stripe subscription as a row of the local mirror (`subscriptions`)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import cast

from adapters.stripe import PriceBook, StripeSubscription
from entitlements.errors import FailedPrecondition
from entitlements.state import KNOWN_STATUSES
from entitlements.store.records import SubscriptionRecord, SubscriptionStatus, utcnow


def subscription_record(
    sub: StripeSubscription,
    *,
    account_id: str,
    prices: PriceBook,
    observed_at: datetime,
    user_id: str | None = None,
) -> SubscriptionRecord:
    """The mirror row for `sub` as Stripe reported it at `observed_at`.

    Raises UnknownPrice for a price no plan is configured for (never guessed) and
    FailedPrecondition for a status this service does not know.
    """
    if sub.price_id is None:
        raise FailedPrecondition(f"Stripe subscription {sub.id!r} has no price")
    plan_id, interval = prices.plan_for(sub.price_id)
    if sub.status not in KNOWN_STATUSES:
        raise FailedPrecondition(
            f"Stripe subscription {sub.id!r} has an unknown status {sub.status!r}"
        )
    return SubscriptionRecord(
        # The Stripe id is the row's id: one row per Stripe subscription, found again on update.
        id=sub.id,
        account_id=account_id,
        user_id=user_id or sub.metadata.get("user_id") or None,
        plan_id=plan_id,
        status=cast(SubscriptionStatus, sub.status),
        interval=interval,
        payment_method="card",
        stripe_customer_id=sub.customer_id,
        stripe_subscription_id=sub.id,
        stripe_price_id=sub.price_id,
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        canceled_at=sub.canceled_at,
        ended_at=sub.ended_at,
        trial_end=sub.trial_end,
        source_updated_at=observed_at,
        created_at=sub.created or utcnow(),
    )


def derived_key(operation: str, *parts: object) -> str:
    """An idempotency key derived from what a request asks for, for callers that give none."""
    digest = hashlib.sha256("\x1f".join([operation, *map(str, parts)]).encode()).hexdigest()
    return f"ent-{operation}-{digest[:40]}"
