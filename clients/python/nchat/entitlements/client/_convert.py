"""Protobuf responses to the client's dataclasses; the only module that knows both shapes."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from nchat.entitlements.client._models import (
    Entitlements,
    FeatureCheck,
    FeatureDecisionReason,
    FeatureInfo,
    Limit,
    LimitCheck,
    MetricUsage,
    MinimumPlanCheck,
    Plan,
    PlanCatalog,
    Price,
    SubscriptionStatus,
    UpgradePath,
    Usage,
    UsageEventResult,
    UsageEventStatus,
    UsageLevel,
)
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import plan_pb2, subscription_pb2
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb

_E = TypeVar("_E", bound=enum.IntEnum)

_INTERVALS = {plan_pb2.BILLING_INTERVAL_MONTH: "month", plan_pb2.BILLING_INTERVAL_YEAR: "year"}
_PAYMENT_METHODS = {
    subscription_pb2.PAYMENT_METHOD_CARD: "card",
    subscription_pb2.PAYMENT_METHOD_CRYPTO: "crypto",
    subscription_pb2.PAYMENT_METHOD_MANUAL: "manual",
}


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _enum(cls: type[_E], value: int) -> _E:
    try:
        return cls(value)
    except ValueError:  # a value added to the proto after this client was built
        return cls(0)


def limit(msg: plan_pb2.Limit) -> Limit:
    return Limit(
        key=msg.key,
        value=None if msg.unlimited else msg.value,
        metric=msg.metric,
        unit=msg.unit,
        monthly=msg.monthly,
    )


def feature_check(msg: ent_pb.CanUseFeatureResponse) -> FeatureCheck:
    return FeatureCheck(
        allowed=msg.allowed,
        plan_id=msg.plan_id,
        upgrade_plan_id=msg.upgrade_plan_id,
        reason=_enum(FeatureDecisionReason, msg.reason),
        revision=msg.revision,
        message=msg.message,
        source="rpc",
        as_of=_time(msg.as_of) if msg.HasField("as_of") else None,
    )


def minimum_plan_check(msg: ent_pb.CheckMinimumPlanResponse) -> MinimumPlanCheck:
    return MinimumPlanCheck(
        allowed=msg.allowed,
        plan_id=msg.plan_id,
        revision=msg.revision,
        as_of=_time(msg.as_of) if msg.HasField("as_of") else None,
    )


def entitlements(msg: ent_pb.Entitlements) -> Entitlements:
    return Entitlements(
        account_id=msg.account_id,
        plan_id=msg.plan_id,
        subscription_status=_enum(SubscriptionStatus, msg.subscription_status),
        features=frozenset(msg.features),
        limits=tuple(limit(item) for item in msg.limits),
        revision=msg.revision,
        subscribed_plan_id=msg.subscribed_plan_id,
        current_period_end=(
            _time(msg.current_period_end) if msg.HasField("current_period_end") else None
        ),
        cancel_at_period_end=msg.cancel_at_period_end,
        grace_period_end=_time(msg.grace_period_end) if msg.HasField("grace_period_end") else None,
        granted_features=frozenset(msg.granted_features),
        revoked_features=frozenset(msg.revoked_features),
        payment_method=_PAYMENT_METHODS.get(msg.payment_method, ""),
    )


def upgrade_path(msg: ent_pb.GetUpgradePathResponse) -> UpgradePath:
    return UpgradePath(plan_id=msg.plan_id, already_included=msg.already_included)


def plan(msg: plan_pb2.Plan) -> Plan:
    return Plan(
        id=msg.id,
        name=msg.name,
        tier=msg.tier,
        inherits_plan_id=msg.inherits_plan_id,
        custom_pricing=msg.custom_pricing,
        prices=tuple(
            Price(
                interval=_INTERVALS.get(p.interval, ""),
                amount_cents=p.amount_cents,
                currency=p.currency,
            )
            for p in msg.prices
        ),
        features=frozenset(msg.features),
        added_features=frozenset(msg.added_features),
        limits=tuple(limit(item) for item in msg.limits),
    )


def catalog(msg: ent_pb.ListPlansResponse) -> PlanCatalog:
    return PlanCatalog(
        plans=tuple(sorted((plan(p) for p in msg.plans), key=lambda p: p.tier)),
        features=tuple(
            FeatureInfo(
                key=f.key, name=f.name, description=f.description, minimum_plan_id=f.minimum_plan_id
            )
            for f in msg.features
        ),
    )


def limit_check(msg: usage_pb.CheckLimitResponse) -> LimitCheck:
    return LimitCheck(
        allowed=msg.allowed,
        limit=None if msg.unlimited else msg.limit,
        current=msg.current,
        percentage=msg.percentage,
        level=_enum(UsageLevel, msg.level),
        unlimited=msg.unlimited,
        remaining=None if msg.unlimited else msg.remaining,
        plan_id=msg.plan_id,
        revision=msg.revision,
        source="rpc",
        as_of=_time(msg.as_of) if msg.HasField("as_of") else None,
    )


def event_result(msg: usage_pb.UsageEventResult) -> UsageEventResult:
    return UsageEventResult(
        idempotency_key=msg.idempotency_key,
        status=_enum(UsageEventStatus, msg.status),
        total=msg.total,
        limit=None if msg.unlimited else msg.limit,
        level=_enum(UsageLevel, msg.level),
        percentage=msg.percentage,
        period=msg.period,
    )


def metric_usage(msg: usage_pb.MetricUsage) -> MetricUsage:
    return MetricUsage(
        metric=msg.metric,
        limit_key=msg.limit_key,
        current=msg.current,
        limit=None if msg.unlimited else msg.limit,
        percentage=msg.percentage,
        level=_enum(UsageLevel, msg.level),
        period=msg.period,
        monthly=msg.monthly,
    )


def usage(msg: usage_pb.GetUsageResponse) -> Usage:
    return Usage(
        account_id=msg.account_id,
        period=msg.period,
        plan_id=msg.plan_id,
        metrics=tuple(metric_usage(m) for m in msg.metrics),
    )
