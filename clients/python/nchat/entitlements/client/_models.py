"""The values the client returns: frozen dataclasses, never protobuf messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = [
    "AnswerSource",
    "Entitlements",
    "FeatureCheck",
    "FeatureDecisionReason",
    "FeatureInfo",
    "Limit",
    "LimitCheck",
    "LocalState",
    "MetricUsage",
    "MinimumPlanCheck",
    "Plan",
    "PlanCatalog",
    "Price",
    "SubscriptionStatus",
    "UpgradePath",
    "Usage",
    "UsageEventResult",
    "UsageEventStatus",
    "UsageLevel",
]

#: Where an answer came from: "rpc" (the service answered now), "local" (the local cache, kept
#: fresh by the watch stream), "stale" (the local cache while the service is unreachable).
AnswerSource = Literal["rpc", "local", "stale"]


class UsageLevel(enum.IntEnum):
    """How close usage is to its limit (the proto's `USAGE_LEVEL_*` numbers)."""

    UNSPECIFIED = 0
    OK = 1  # below 75 %, or unlimited
    WARNING = 2  # at or above 75 %
    UPGRADE_PROMPT = 3  # at or above 90 %
    EXCEEDED = 4  # at or above 100 %


class FeatureDecisionReason(enum.IntEnum):
    """Why a feature check answered as it did (the proto's `FEATURE_DECISION_REASON_*`)."""

    UNSPECIFIED = 0
    INCLUDED_IN_PLAN = 1
    GRANTED_BY_OVERRIDE = 2
    REVOKED_BY_OVERRIDE = 3
    FEATURE_NOT_IN_PLAN = 4


class SubscriptionStatus(enum.IntEnum):
    """The status of an account's subscription (the proto's `SUBSCRIPTION_STATUS_*`)."""

    UNSPECIFIED = 0
    NONE = 1
    TRIALING = 2
    ACTIVE = 3
    PAST_DUE = 4
    CANCELED = 5
    UNPAID = 6
    INCOMPLETE = 7
    INCOMPLETE_EXPIRED = 8
    PAUSED = 9


class UsageEventStatus(enum.IntEnum):
    """What happened to one reported usage event."""

    UNSPECIFIED = 0
    APPLIED = 1
    DUPLICATE = 2
    REFUSED = 3


@dataclass(frozen=True, slots=True)
class FeatureCheck:
    """May an account use a feature? `upgrade_plan_id`: the lowest plan with it ("" if none)."""

    allowed: bool
    plan_id: str
    upgrade_plan_id: str
    reason: FeatureDecisionReason
    revision: int
    message: str = ""
    source: AnswerSource = "rpc"
    #: How fresh the answer is: when the server read the state it came from (an RPC answer),
    #: or when this client's watch stream delivered it (a local one).
    as_of: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class MinimumPlanCheck:
    """Is the account's plan at least the given one?"""

    allowed: bool
    plan_id: str
    revision: int
    #: How fresh the answer is: when the server read the state it came from (an RPC answer),
    #: or when this client's watch stream delivered it (a local one).
    as_of: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit of a plan or an account; `value` is None when unlimited."""

    key: str
    value: int | None
    metric: str
    unit: str
    monthly: bool

    @property
    def unlimited(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """A count judged against a limit; `allowed` means room for one more (`current < limit`)."""

    allowed: bool
    limit: int | None
    current: int
    percentage: float
    level: UsageLevel
    unlimited: bool
    remaining: int | None
    plan_id: str
    revision: int
    source: AnswerSource = "rpc"
    #: How fresh the answer is: when the server read the state it came from (an RPC answer),
    #: or when this client's watch stream delivered it (a local one).
    as_of: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Entitlements:
    """Everything one account may do, at one `revision` (which grows on every change)."""

    account_id: str
    plan_id: str
    subscription_status: SubscriptionStatus
    features: frozenset[str]
    limits: tuple[Limit, ...]
    revision: int
    subscribed_plan_id: str = ""
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    grace_period_end: datetime | None = None
    granted_features: frozenset[str] = frozenset()
    revoked_features: frozenset[str] = frozenset()
    payment_method: str = ""

    def limit(self, key: str) -> Limit | None:
        """The limit `key` ("maxUsers"), or None when the account has no such limit."""
        for item in self.limits:
            if item.key == key:
                return item
        return None


@dataclass(frozen=True, slots=True)
class UpgradePath:
    """The plan to upgrade to for a feature; "" when already included or no plan has it."""

    plan_id: str
    already_included: bool


@dataclass(frozen=True, slots=True)
class Price:
    """One list price: `interval` is "month" or "year", amount in cents of `currency`."""

    interval: str
    amount_cents: int
    currency: str


@dataclass(frozen=True, slots=True)
class Plan:
    """One plan of the catalog with every feature (inherited ones too) and limit."""

    id: str
    name: str
    tier: int
    inherits_plan_id: str
    custom_pricing: bool
    prices: tuple[Price, ...]
    features: frozenset[str]
    added_features: frozenset[str]
    limits: tuple[Limit, ...]


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    """One feature key of the catalog and the lowest plan that has it."""

    key: str
    name: str
    description: str
    minimum_plan_id: str


@dataclass(frozen=True, slots=True)
class PlanCatalog:
    """The plan catalog: plans lowest tier first, and every feature."""

    plans: tuple[Plan, ...]
    features: tuple[FeatureInfo, ...]

    def plan(self, plan_id: str) -> Plan | None:
        for plan in self.plans:
            if plan.id == plan_id:
                return plan
        return None

    def upgrade_path(self, plan_id: str, feature: str) -> str:
        """The lowest plan above `plan_id` with `feature`; "" when `plan_id` has it or none does."""
        current = self.plan(plan_id)
        if current is None or feature in current.features:
            return ""
        for candidate in self.plans:
            if candidate.tier > current.tier and feature in candidate.features:
                return candidate.id
        return ""


@dataclass(frozen=True, slots=True)
class UsageEventResult:
    """The outcome of one reported event; `status` DUPLICATE means it was counted before."""

    idempotency_key: str
    status: UsageEventStatus
    total: int
    limit: int | None
    level: UsageLevel
    percentage: float
    period: str


@dataclass(frozen=True, slots=True)
class MetricUsage:
    """One metric's usage against its limit (`limit` None when unlimited)."""

    metric: str
    limit_key: str
    current: int
    limit: int | None
    percentage: float
    level: UsageLevel
    period: str
    monthly: bool


@dataclass(frozen=True, slots=True)
class Usage:
    """Every metric of an account in one period ("YYYY-MM")."""

    account_id: str
    period: str
    plan_id: str
    metrics: tuple[MetricUsage, ...]

    def metric(self, name: str) -> MetricUsage | None:
        for item in self.metrics:
            if item.metric == name:
                return item
        return None


@dataclass(frozen=True, slots=True)
class LocalState:
    """How fresh local evaluation is.

    `connected`: the watch stream is up and has delivered the state of every watched account.
    `last_event_at`: when the stream last delivered a message (epoch seconds), None if never.
    `staleness_bound_seconds`: how far behind the server's replica a local answer may be: 0 while
    connected (every change is pushed as it commits), else the time since the stream went down
    (inf when it never came up).
    """

    enabled: bool
    connected: bool
    accounts: int
    last_event_at: float | None
    staleness_bound_seconds: float
    reconnects: int = 0
    rpc_fallbacks: int = 0
    local_answers: int = 0
    last_error: str = field(default="")
