"""Plain frozen values the store hands out and takes in; ORM objects never leave the store."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, get_args

__all__ = [
    "ENDED_STATUSES",
    "OVERRIDE_KINDS",
    "PAYMENT_METHODS",
    "SUBSCRIPTION_INTERVALS",
    "SUBSCRIPTION_STATUSES",
    "AccountSnapshot",
    "AuditRecord",
    "OverrideKind",
    "OverrideRecord",
    "PaymentMethod",
    "SubscriptionInterval",
    "SubscriptionRecord",
    "SubscriptionStatus",
    "utcnow",
]

SubscriptionStatus = Literal[
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
]
SubscriptionInterval = Literal["month", "year"]
PaymentMethod = Literal["card", "crypto", "manual"]
OverrideKind = Literal["limit", "feature_grant", "feature_revoke"]

SUBSCRIPTION_STATUSES: tuple[SubscriptionStatus, ...] = get_args(SubscriptionStatus)
SUBSCRIPTION_INTERVALS: tuple[SubscriptionInterval, ...] = get_args(SubscriptionInterval)
PAYMENT_METHODS: tuple[PaymentMethod, ...] = get_args(PaymentMethod)
OVERRIDE_KINDS: tuple[OverrideKind, ...] = get_args(OverrideKind)
#: Statuses a Stripe subscription never leaves.
ENDED_STATUSES: tuple[SubscriptionStatus, ...] = ("canceled", "incomplete_expired")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionRecord:
    """One row of `subscriptions`. All datetimes are timezone-aware.

    `created_at` is written when the row is first stored and kept on later saves; the store sets
    `updated_at` to its own clock on every save.
    """

    id: str
    account_id: str
    plan_id: str
    status: SubscriptionStatus
    interval: SubscriptionInterval
    payment_method: PaymentMethod
    user_id: str | None = None
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    stripe_price_id: str | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    trial_end: datetime | None = None
    past_due_since: datetime | None = None
    #: A manual subscription's contract price per interval (minor units of `currency`, lower
    #: case ISO 4217); None for subscriptions billed at the catalog's prices.
    price_cents: int | None = None
    currency: str | None = None
    source_updated_at: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        _require_one_of(self, "status", SUBSCRIPTION_STATUSES)
        _require_one_of(self, "interval", SUBSCRIPTION_INTERVALS)
        _require_one_of(self, "payment_method", PAYMENT_METHODS)
        _require_aware(self)


@dataclass(frozen=True, slots=True)
class OverrideRecord:
    """An enterprise override of one account: a custom limit (`value` None = unlimited) or a
    feature grant or revoke (`value` unused). It stops applying at `expires_at`.

    `created_by`, `created_at` and `reason` are filled in by the store: `Store.set_overrides`
    takes them from its `actor`, its clock and its `reason`, and keeps them for an override that
    is set again unchanged.
    """

    kind: OverrideKind
    key: str
    value: int | None = None
    expires_at: datetime | None = None
    created_by: str = ""
    created_at: datetime | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        _require_one_of(self, "kind", OVERRIDE_KINDS)
        _require_aware(self)

    @property
    def identity(self) -> tuple[str, str]:
        """What makes an override unique within an account."""
        return (self.kind, self.key)

    def same_terms(self, other: OverrideRecord) -> bool:
        """True if both say the same thing, whoever set them and when."""
        return (self.kind, self.key, self.value, self.expires_at) == (
            other.kind,
            other.key,
            other.value,
            other.expires_at,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One entry of the audit log (`override_audit`): who changed what, when, and why.

    Written in the same transaction as the change it records; a store that bumps the account's
    revision adds it to `details` as "revision". `id` is set on the entries read back.
    """

    account_id: str
    actor: str
    action: str
    details: dict[str, Any] = field(default_factory=dict)
    #: The caller's idempotency key: unique, so a retried change finds its first entry.
    request_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    id: int = 0


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """What decides an account's entitlements, read together with the revision it belongs to.

    `subscription` is the account's most recently created subscription (the domain decides whether
    it still grants anything); `overrides` are those not expired at the time of the read.
    """

    account_id: str
    revision: int
    subscription: SubscriptionRecord | None
    overrides: tuple[OverrideRecord, ...] = ()


def _require_aware(record: SubscriptionRecord | OverrideRecord) -> None:
    # A naive datetime's zone is a guess; refuse it where it is made, not deep in the store.
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, datetime) and value.utcoffset() is None:
            raise ValueError(f"{type(record).__name__}.{f.name} must be timezone-aware: {value}")


def _require_one_of(
    record: SubscriptionRecord | OverrideRecord, name: str, allowed: tuple[str, ...]
) -> None:
    value = getattr(record, name)
    if value not in allowed:
        raise ValueError(f"{type(record).__name__}.{name} must be one of {allowed}: {value!r}")
