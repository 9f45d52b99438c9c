"""Which events a change makes, from the state before and after it; pure.

The stores call these inside the transaction that writes the change, with the row as it was
read there (locked), so an event exists exactly when its change committed, and a change applied
again (a replayed webhook, a second replica, a second watcher) finds nothing new to report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from entitlements.events.types import Event, iso, new_event
from entitlements.store.records import SubscriptionRecord

__all__ = [
    "CryptoPaymentState",
    "crypto_payment_events",
    "payment_failed",
    "subscription_events",
    "token_access_changed",
]

#: Statuses that hold the plan (past_due for its grace period).
_LIVE = frozenset({"active", "trialing", "past_due"})
_GRANTING = frozenset({"active", "trialing"})
#: Crypto payment statuses that paid (and activate the plan).
_PAID = frozenset({"confirmed", "overpaid"})


def subscription_events(
    old: SubscriptionRecord | None,
    new: SubscriptionRecord,
    *,
    ref: str,
    past_due_grace: timedelta,
    now: datetime,
) -> list[Event]:
    """The `subscription.*` events of `old` becoming `new` (None: a new subscription).

    `ref` names the change (a Stripe event id, or the account revision it was written with):
    it is part of each dedup key, so the same change written twice makes one event.
    - activated: it grants a plan (active or trialing) and did not hold one before;
    - past_due: it became past_due (a renewal payment failed; the plan is kept for the grace);
    - changed: it held a plan before and after, and the plan or the interval differs;
    - canceled: it held a plan and no longer does (ended), or it was set to end at the period's
      end (`cancel_at_period_end` turned on).
    A resumed cancellation, a recovery from past_due and a longer period make no event.
    """
    was_live = old is not None and old.status in _LIVE
    is_live = new.status in _LIVE
    made: list[tuple[str, str, dict[str, Any]]] = []
    if not was_live and new.status in _GRANTING:
        made.append(
            (
                "subscription.activated",
                "activated",
                {
                    "subscription_id": new.id,
                    "plan_id": new.plan_id,
                    "interval": new.interval,
                    "payment_method": new.payment_method,
                    "status": new.status,
                    "current_period_end": _iso_or_none(new.current_period_end),
                },
            )
        )
    if new.status == "past_due" and (old is None or old.status != "past_due"):
        since = new.past_due_since or now
        made.append(
            (
                "subscription.past_due",
                "past_due",
                {
                    "subscription_id": new.id,
                    "plan_id": new.plan_id,
                    "payment_method": new.payment_method,
                    "past_due_since": iso(since),
                    "grace_ends_at": iso(since + past_due_grace),
                },
            )
        )
    moved = old is not None and (old.plan_id, old.interval) != (new.plan_id, new.interval)
    if old is not None and was_live and is_live and moved:
        made.append(
            (
                "subscription.changed",
                "changed",
                {
                    "subscription_id": new.id,
                    "plan_id": new.plan_id,
                    "previous_plan_id": old.plan_id,
                    "interval": new.interval,
                    "previous_interval": old.interval,
                    "payment_method": new.payment_method,
                },
            )
        )
    ended = was_live and not is_live
    scheduled = (
        is_live and new.cancel_at_period_end and not (was_live and old and old.cancel_at_period_end)
    )
    if ended or scheduled:
        made.append(
            (
                "subscription.canceled",
                "ended" if ended else "scheduled",
                {
                    "subscription_id": new.id,
                    "plan_id": new.plan_id,
                    "payment_method": new.payment_method,
                    "status": new.status,
                    "cancel_at_period_end": new.cancel_at_period_end,
                    "current_period_end": _iso_or_none(new.current_period_end),
                    "ended_at": _iso_or_none(new.ended_at or (now if ended else None)),
                },
            )
        )
    return [
        new_event(type_, new.account_id, data, now=now, dedup_key=f"{type_}:{new.id}:{kind}:{ref}")
        for type_, kind, data in made
    ]


def payment_failed(
    account_id: str,
    *,
    invoice_id: str,
    subscription_id: str | None,
    amount_cents: int,
    currency: str,
    attempt_count: int,
    next_attempt_at: datetime | None,
    now: datetime,
) -> Event:
    """`payment.failed`: once per invoice and attempt."""
    return new_event(
        "payment.failed",
        account_id,
        {
            "subscription_id": subscription_id,
            "invoice_id": invoice_id,
            "amount_cents": amount_cents,
            "currency": currency,
            "attempt_count": attempt_count,
            "next_attempt_at": _iso_or_none(next_attempt_at),
        },
        now=now,
        dedup_key=f"payment.failed:{invoice_id}:{attempt_count}",
    )


@dataclass(frozen=True, slots=True)
class CryptoPaymentState:
    """What the crypto payment events read of a payment (the store's `PaymentRecord` has it)."""

    id: str
    account_id: str
    plan_id: str
    interval: str
    network: str
    currency: str
    status: str
    amount_base_units: int
    received_base_units: int
    decimals: int
    tx_hash: str | None
    subscription_id: str | None
    #: The stored row's last write (ms): names the state a transition leaves.
    revision_ms: int


def crypto_payment_events(
    old: CryptoPaymentState, new: CryptoPaymentState, *, now: datetime
) -> list[Event]:
    """The `crypto_payment.*` events of `old` (as stored) becoming `new`:
    - confirmed: it paid (confirmed or overpaid) and had not;
    - underpaid: it became underpaid (all transfers at the depth, short of the amount);
    - reversed: it had paid and no longer has (a reorg removed its transfer)."""
    # Imported here: the crypto package imports the store, which imports this module.
    from entitlements.crypto.amounts import format_amount

    amount = format_amount(new.amount_base_units, new.decimals)
    received = format_amount(new.received_base_units, new.decimals)
    made: list[tuple[str, dict[str, Any]]] = []
    if new.status in _PAID and old.status not in _PAID:
        made.append(
            (
                "crypto_payment.confirmed",
                {
                    "payment_id": new.id,
                    "plan_id": new.plan_id,
                    "interval": new.interval,
                    "network": new.network,
                    "currency": new.currency,
                    "amount": amount,
                    "received": received,
                    "status": new.status,
                    "tx_hash": new.tx_hash,
                },
            )
        )
    if new.status == "underpaid" and old.status != "underpaid":
        made.append(
            (
                "crypto_payment.underpaid",
                {
                    "payment_id": new.id,
                    "network": new.network,
                    "currency": new.currency,
                    "amount": amount,
                    "received": received,
                    "tx_hash": new.tx_hash,
                },
            )
        )
    if old.status in _PAID and new.status not in _PAID:
        made.append(
            (
                "crypto_payment.reversed",
                {
                    "payment_id": new.id,
                    "network": new.network,
                    "tx_hash": old.tx_hash,
                    "subscription_id": new.subscription_id or old.subscription_id,
                    "status": new.status,
                },
            )
        )
    return [
        new_event(
            type_,
            new.account_id,
            data,
            now=now,
            dedup_key=f"{type_}:{new.id}:{old.revision_ms}",
        )
        for type_, data in made
    ]


def token_access_changed(
    *,
    channel_id: str,
    user_id: str,
    wallet_addresses: Sequence[str],
    granted: bool,
    grant_id: int,
    since_ms: int,
    now: datetime,
) -> Event:
    """`token_access.granted` or `.revoked`: a stored decision (row `grant_id`, unchanged since
    `since_ms`) turned; once per turn. The channel stands in the envelope's `account_id` (the
    service does not know a channel's workspace), as WatchEntitlements keys channels."""
    type_ = "token_access.granted" if granted else "token_access.revoked"
    return new_event(
        type_,
        channel_id,
        {"channel_id": channel_id, "user_id": user_id, "wallet_addresses": list(wallet_addresses)},
        now=now,
        dedup_key=f"{type_}:{grant_id}:{since_ms}",
    )


def _iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else iso(value)
