"""Typed payloads of the subscription, payment, crypto payment and token access events
(docs/events.md); `usage.threshold_crossed` and `subscription.renewal_upcoming` are in
`_events.py`. Each `X.of(event)` refuses an event of another type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nchat.entitlements.client._events import Event

__all__ = [
    "CryptoPaymentConfirmed",
    "CryptoPaymentReversed",
    "CryptoPaymentUnderpaid",
    "PaymentFailed",
    "SubscriptionActivated",
    "SubscriptionCanceled",
    "SubscriptionChanged",
    "SubscriptionPastDue",
    "TokenAccessChanged",
]


def _data(event: Event, *types: str) -> Mapping[str, Any]:
    if event.type not in types:
        raise ValueError(f"not a {' or '.join(types)} event: {event.type}")
    return event.data


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class SubscriptionActivated:
    """`subscription.activated`: a subscription started granting `plan_id`."""

    account_id: str
    subscription_id: str
    plan_id: str
    interval: str
    payment_method: str
    status: str
    current_period_end: datetime | None

    @classmethod
    def of(cls, event: Event) -> SubscriptionActivated:
        d = _data(event, "subscription.activated")
        return cls(
            event.account_id,
            d["subscription_id"],
            d["plan_id"],
            d["interval"],
            d["payment_method"],
            d["status"],
            _time(d["current_period_end"]),
        )


@dataclass(frozen=True, slots=True)
class SubscriptionChanged:
    """`subscription.changed`: another plan or interval."""

    account_id: str
    subscription_id: str
    plan_id: str
    previous_plan_id: str
    interval: str
    previous_interval: str
    payment_method: str

    @classmethod
    def of(cls, event: Event) -> SubscriptionChanged:
        d = _data(event, "subscription.changed")
        return cls(
            event.account_id,
            d["subscription_id"],
            d["plan_id"],
            d["previous_plan_id"],
            d["interval"],
            d["previous_interval"],
            d["payment_method"],
        )


@dataclass(frozen=True, slots=True)
class SubscriptionCanceled:
    """`subscription.canceled`: ended (`ended_at` set) or set to end at the period's end."""

    account_id: str
    subscription_id: str
    plan_id: str
    payment_method: str
    status: str
    cancel_at_period_end: bool
    current_period_end: datetime | None
    ended_at: datetime | None

    @classmethod
    def of(cls, event: Event) -> SubscriptionCanceled:
        d = _data(event, "subscription.canceled")
        return cls(
            event.account_id,
            d["subscription_id"],
            d["plan_id"],
            d["payment_method"],
            d["status"],
            d["cancel_at_period_end"],
            _time(d["current_period_end"]),
            _time(d["ended_at"]),
        )


@dataclass(frozen=True, slots=True)
class SubscriptionPastDue:
    """`subscription.past_due`: a renewal payment failed; the plan is kept until
    `grace_ends_at`."""

    account_id: str
    subscription_id: str
    plan_id: str
    payment_method: str
    past_due_since: datetime
    grace_ends_at: datetime

    @classmethod
    def of(cls, event: Event) -> SubscriptionPastDue:
        d = _data(event, "subscription.past_due")
        return cls(
            event.account_id,
            d["subscription_id"],
            d["plan_id"],
            d["payment_method"],
            datetime.fromisoformat(d["past_due_since"]),
            datetime.fromisoformat(d["grace_ends_at"]),
        )


@dataclass(frozen=True, slots=True)
class PaymentFailed:
    """`payment.failed`: a Stripe invoice payment attempt failed (`next_attempt_at` None:
    Stripe stopped retrying)."""

    account_id: str
    subscription_id: str | None
    invoice_id: str
    amount_cents: int
    currency: str
    attempt_count: int
    next_attempt_at: datetime | None

    @classmethod
    def of(cls, event: Event) -> PaymentFailed:
        d = _data(event, "payment.failed")
        return cls(
            event.account_id,
            d["subscription_id"],
            d["invoice_id"],
            d["amount_cents"],
            d["currency"],
            d["attempt_count"],
            _time(d["next_attempt_at"]),
        )


@dataclass(frozen=True, slots=True)
class CryptoPaymentConfirmed:
    """`crypto_payment.confirmed`: paid (`status` confirmed or overpaid); amounts are decimal
    strings."""

    account_id: str
    payment_id: str
    plan_id: str
    interval: str
    network: str
    currency: str
    amount: str
    received: str
    status: str
    tx_hash: str | None

    @classmethod
    def of(cls, event: Event) -> CryptoPaymentConfirmed:
        d = _data(event, "crypto_payment.confirmed")
        return cls(
            event.account_id,
            d["payment_id"],
            d["plan_id"],
            d["interval"],
            d["network"],
            d["currency"],
            d["amount"],
            d["received"],
            d["status"],
            d["tx_hash"],
        )


@dataclass(frozen=True, slots=True)
class CryptoPaymentUnderpaid:
    """`crypto_payment.underpaid`: `received` is short of `amount` (decimal strings)."""

    account_id: str
    payment_id: str
    network: str
    currency: str
    amount: str
    received: str
    tx_hash: str | None

    @classmethod
    def of(cls, event: Event) -> CryptoPaymentUnderpaid:
        d = _data(event, "crypto_payment.underpaid")
        return cls(
            event.account_id,
            d["payment_id"],
            d["network"],
            d["currency"],
            d["amount"],
            d["received"],
            d["tx_hash"],
        )


@dataclass(frozen=True, slots=True)
class CryptoPaymentReversed:
    """`crypto_payment.reversed`: a reorg removed the transfer of a confirmed payment."""

    account_id: str
    payment_id: str
    network: str
    tx_hash: str | None
    subscription_id: str | None
    status: str

    @classmethod
    def of(cls, event: Event) -> CryptoPaymentReversed:
        d = _data(event, "crypto_payment.reversed")
        return cls(
            event.account_id,
            d["payment_id"],
            d["network"],
            d["tx_hash"],
            d["subscription_id"],
            d["status"],
        )


@dataclass(frozen=True, slots=True)
class TokenAccessChanged:
    """`token_access.granted` or `token_access.revoked` (`granted` tells which)."""

    channel_id: str
    user_id: str
    wallet_addresses: tuple[str, ...]
    granted: bool

    @classmethod
    def of(cls, event: Event) -> TokenAccessChanged:
        d = _data(event, "token_access.granted", "token_access.revoked")
        return cls(
            d["channel_id"],
            d["user_id"],
            tuple(d["wallet_addresses"]),
            event.type == "token_access.granted",
        )
