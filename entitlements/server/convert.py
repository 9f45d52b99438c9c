"""Domain values to protobuf messages; the only module that knows both shapes."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from nchat.entitlements.v1 import (
    entitlements_service_pb2 as ent_pb,
)
from nchat.entitlements.v1 import (
    plan_pb2,
    subscription_pb2,
)

from entitlements.policies import Catalog, Plan
from entitlements.state import AccountEntitlements
from entitlements.store.records import SubscriptionRecord

STATUSES = {
    "none": subscription_pb2.SUBSCRIPTION_STATUS_NONE,
    "trialing": subscription_pb2.SUBSCRIPTION_STATUS_TRIALING,
    "active": subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE,
    "past_due": subscription_pb2.SUBSCRIPTION_STATUS_PAST_DUE,
    "canceled": subscription_pb2.SUBSCRIPTION_STATUS_CANCELED,
    "unpaid": subscription_pb2.SUBSCRIPTION_STATUS_UNPAID,
    "incomplete": subscription_pb2.SUBSCRIPTION_STATUS_INCOMPLETE,
    "incomplete_expired": subscription_pb2.SUBSCRIPTION_STATUS_INCOMPLETE_EXPIRED,
    "paused": subscription_pb2.SUBSCRIPTION_STATUS_PAUSED,
}

PAYMENT_METHODS = {
    "card": subscription_pb2.PAYMENT_METHOD_CARD,
    "crypto": subscription_pb2.PAYMENT_METHOD_CRYPTO,
    "manual": subscription_pb2.PAYMENT_METHOD_MANUAL,
}

REASONS = {
    "INCLUDED_IN_PLAN": ent_pb.FEATURE_DECISION_REASON_INCLUDED_IN_PLAN,
    "GRANTED_BY_OVERRIDE": ent_pb.FEATURE_DECISION_REASON_GRANTED_BY_OVERRIDE,
    "REVOKED_BY_OVERRIDE": ent_pb.FEATURE_DECISION_REASON_REVOKED_BY_OVERRIDE,
    "FEATURE_NOT_IN_PLAN": ent_pb.FEATURE_DECISION_REASON_FEATURE_NOT_IN_PLAN,
}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def stamp(target: Timestamp, ent: AccountEntitlements) -> None:
    """Set `target` (a response's Timestamp field) to the account's `as_of` (converted once,
    when the entitlements were derived); leave it unset when there is none."""
    parts = ent.as_of_parts
    if parts is not None:
        target.seconds, target.nanos = parts


def limits(catalog: Catalog, values: dict[str, int | None] | object) -> list[plan_pb2.Limit]:
    out = []
    for key, info in catalog.limits.items():
        value = values[key]  # type: ignore[index]
        out.append(
            plan_pb2.Limit(
                key=key,
                unlimited=value is None,
                value=value or 0,
                metric=info.metric or "",
                unit=info.unit,
                monthly=info.monthly,
            )
        )
    return out


def plan(catalog: Catalog, p: Plan) -> plan_pb2.Plan:
    prices = []
    if not p.custom_pricing:
        if p.price_monthly_cents is not None:
            prices.append(
                plan_pb2.Price(
                    interval=plan_pb2.BILLING_INTERVAL_MONTH,
                    amount_cents=p.price_monthly_cents,
                    currency="usd",
                )
            )
        if p.price_yearly_cents is not None:
            prices.append(
                plan_pb2.Price(
                    interval=plan_pb2.BILLING_INTERVAL_YEAR,
                    amount_cents=p.price_yearly_cents,
                    currency="usd",
                )
            )
    return plan_pb2.Plan(
        id=p.id,
        name=p.name,
        tier=p.tier,
        inherits_plan_id=p.inherits or "",
        custom_pricing=p.custom_pricing,
        prices=prices,
        features=sorted(p.features),
        added_features=sorted(p.own_features),
        limits=limits(catalog, p.limits),
    )


def entitlements(catalog: Catalog, ent: AccountEntitlements) -> ent_pb.Entitlements:
    sub = ent.subscription
    eff = ent.effective
    return ent_pb.Entitlements(
        account_id=ent.account_id,
        plan_id=eff.plan.id,
        subscription_status=STATUSES[ent.status],
        features=sorted(eff.features),
        limits=limits(catalog, eff.limits),
        current_period_end=timestamp(sub.current_period_end if sub else None),
        cancel_at_period_end=bool(sub and sub.cancel_at_period_end),
        revision=ent.revision,
        subscribed_plan_id=sub.plan_id if sub else "",
        grace_period_end=timestamp(ent.grace_period_end),
        payment_method=(
            PAYMENT_METHODS[sub.payment_method]
            if sub
            else subscription_pb2.PAYMENT_METHOD_UNSPECIFIED
        ),
        granted_features=sorted(eff.overrides.granted_features),
        revoked_features=sorted(eff.overrides.revoked_features),
    )


INTERVALS = {
    "month": plan_pb2.BILLING_INTERVAL_MONTH,
    "year": plan_pb2.BILLING_INTERVAL_YEAR,
}


def subscription(record: SubscriptionRecord) -> subscription_pb2.Subscription:
    """A stored subscription (the seed's `subscriptions` columns) as the API's message."""
    return subscription_pb2.Subscription(
        id=record.id,
        account_id=record.account_id,
        user_id=record.user_id or "",
        plan_id=record.plan_id,
        status=STATUSES[record.status],
        interval=INTERVALS[record.interval],
        payment_method=PAYMENT_METHODS[record.payment_method],
        stripe_customer_id=record.stripe_customer_id or "",
        stripe_subscription_id=record.stripe_subscription_id or "",
        stripe_price_id=record.stripe_price_id or "",
        current_period_start=timestamp(record.current_period_start),
        current_period_end=timestamp(record.current_period_end),
        cancel_at_period_end=record.cancel_at_period_end,
        canceled_at=timestamp(record.canceled_at),
        trial_end=timestamp(record.trial_end),
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        ended_at=timestamp(record.ended_at),
    )
