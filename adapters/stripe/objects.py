"""Plain values parsed from Stripe's JSON (API responses and webhook payloads alike)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CheckoutSession",
    "StripeInvoice",
    "StripeSubscription",
    "from_unix",
]


def from_unix(value: object) -> datetime | None:
    """A Stripe timestamp (seconds since the epoch) as an aware datetime."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, UTC)


def _id(value: object) -> str | None:
    """An id field that may be expanded into its object."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        inner = value.get("id")
        return inner if isinstance(inner, str) else None
    return None


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(frozen=True, slots=True)
class StripeSubscription:
    """What this service mirrors of a Stripe subscription."""

    id: str
    customer_id: str | None
    status: str
    price_id: str | None
    item_id: str | None
    cancel_at_period_end: bool
    current_period_start: datetime | None
    current_period_end: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    trial_end: datetime | None
    created: datetime | None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> StripeSubscription:
        items = data.get("items")
        item: Mapping[str, Any] = {}
        if isinstance(items, Mapping):
            rows = items.get("data")
            if isinstance(rows, list) and rows and isinstance(rows[0], Mapping):
                item = rows[0]
        price = item.get("price")
        # Recent API versions carry the period on the item; older ones on the subscription.
        period_start = item.get("current_period_start", data.get("current_period_start"))
        period_end = item.get("current_period_end", data.get("current_period_end"))
        return cls(
            id=str(data["id"]),
            customer_id=_id(data.get("customer")),
            status=str(data.get("status") or ""),
            price_id=_id(price),
            item_id=_id(item.get("id")),
            cancel_at_period_end=bool(data.get("cancel_at_period_end")),
            current_period_start=from_unix(period_start),
            current_period_end=from_unix(period_end),
            canceled_at=from_unix(data.get("canceled_at")),
            ended_at=from_unix(data.get("ended_at")),
            trial_end=from_unix(data.get("trial_end")),
            created=from_unix(data.get("created")),
            metadata=_str_map(data.get("metadata")),
        )


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    """A Stripe Checkout session."""

    id: str
    url: str | None
    customer_id: str | None
    subscription_id: str | None
    client_reference_id: str | None
    payment_status: str
    status: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> CheckoutSession:
        reference = data.get("client_reference_id")
        return cls(
            id=str(data["id"]),
            url=data.get("url") if isinstance(data.get("url"), str) else None,
            customer_id=_id(data.get("customer")),
            subscription_id=_id(data.get("subscription")),
            client_reference_id=reference if isinstance(reference, str) and reference else None,
            payment_status=str(data.get("payment_status") or ""),
            status=str(data.get("status") or ""),
            metadata=_str_map(data.get("metadata")),
        )

    @property
    def account_id(self) -> str | None:
        return self.client_reference_id or self.metadata.get("account_id") or None


@dataclass(frozen=True, slots=True)
class StripeInvoice:
    """A Stripe invoice: what revenue and failed-payment facts need."""

    id: str
    customer_id: str | None
    subscription_id: str | None
    status: str
    currency: str
    amount_paid: int
    amount_due: int
    attempt_count: int
    next_payment_attempt: datetime | None
    paid_at: datetime | None
    created: datetime | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> StripeInvoice:
        # Recent API versions name the subscription under parent.subscription_details.
        subscription = data.get("subscription")
        parent = data.get("parent")
        if subscription is None and isinstance(parent, Mapping):
            details = parent.get("subscription_details")
            if isinstance(details, Mapping):
                subscription = details.get("subscription")
        transitions = data.get("status_transitions")
        paid_at = transitions.get("paid_at") if isinstance(transitions, Mapping) else None
        return cls(
            id=str(data["id"]),
            customer_id=_id(data.get("customer")),
            subscription_id=_id(subscription),
            status=str(data.get("status") or ""),
            currency=str(data.get("currency") or "usd"),
            amount_paid=_int(data.get("amount_paid")),
            amount_due=_int(data.get("amount_due")),
            attempt_count=_int(data.get("attempt_count")),
            next_payment_attempt=from_unix(data.get("next_payment_attempt")),
            paid_at=from_unix(paid_at),
            created=from_unix(data.get("created")),
        )
