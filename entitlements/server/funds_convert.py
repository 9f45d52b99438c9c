"""AdminService's unsettled crypto funds: request enums in, `UnsettledFunds` messages out."""

from __future__ import annotations

from nchat.entitlements.v1 import admin_service_pb2 as pb
from nchat.entitlements.v1 import plan_pb2

from entitlements.crypto.amounts import format_amount
from entitlements.crypto.funds import FundsRow
from entitlements.errors import InvalidArgument
from entitlements.server import convert
from entitlements.store.records import SubscriptionInterval

__all__ = ["KINDS", "funds_message", "interval_of", "kind_of"]

KINDS = {
    "underpaid": pb.UNSETTLED_FUNDS_KIND_UNDERPAID,
    "overpaid": pb.UNSETTLED_FUNDS_KIND_OVERPAID,
    "paid_late": pb.UNSETTLED_FUNDS_KIND_PAID_LATE,
    "wrong_currency": pb.UNSETTLED_FUNDS_KIND_WRONG_CURRENCY,
    "wrong_payer": pb.UNSETTLED_FUNDS_KIND_WRONG_PAYER,
    "unmatched": pb.UNSETTLED_FUNDS_KIND_UNMATCHED,
    "unsupported": pb.UNSETTLED_FUNDS_KIND_UNSUPPORTED,
}
_KIND_NAMES: dict[int, str] = {int(value): name for name, value in KINDS.items()}
_ACTIONS = {
    "credited": pb.FUNDS_RESOLUTION_ACTION_CREDITED,
    "refunded": pb.FUNDS_RESOLUTION_ACTION_REFUNDED,
}
_INTERVALS: dict[int, SubscriptionInterval] = {
    plan_pb2.BILLING_INTERVAL_MONTH: "month",
    plan_pb2.BILLING_INTERVAL_YEAR: "year",
}
_INTERVAL_VALUES = {name: value for value, name in _INTERVALS.items()}


def kind_of(value: int) -> str | None:
    """A request's kind filter: None for any; INVALID_ARGUMENT (`kind`) for an unknown value."""
    if value == pb.UNSETTLED_FUNDS_KIND_UNSPECIFIED:
        return None
    name = _KIND_NAMES.get(value)
    if name is None:
        raise InvalidArgument("kind", f"unknown kind {value}")
    return name


def interval_of(value: int, field: str) -> SubscriptionInterval | None:
    """A credit's interval: None when unspecified; INVALID_ARGUMENT for an unknown value."""
    if value == plan_pb2.BILLING_INTERVAL_UNSPECIFIED:
        return None
    interval = _INTERVALS.get(value)
    if interval is None:
        raise InvalidArgument(field, "must be BILLING_INTERVAL_MONTH or BILLING_INTERVAL_YEAR")
    return interval


def funds_message(row: FundsRow, decimals: int | None) -> pb.UnsettledFunds:
    """An item as a message; `decimals` of a transfer's currency on its network (None when the
    node could not say: the amount is then given in base units only)."""
    message = pb.UnsettledFunds(
        id=row.item_id,
        kind=KINDS.get(row.kind, pb.UNSETTLED_FUNDS_KIND_UNSPECIFIED),
        from_address=row.from_address,
        block_number=row.block_number,
        created_at=convert.timestamp(row.created_at),
    )
    if row.payment is not None:
        p = row.payment
        message.network = p.network
        message.currency = p.currency
        message.received_amount = format_amount(int(p.received_base_units), p.decimals)
        message.received_base_units = p.received_base_units
        message.expected_amount = format_amount(int(p.amount_base_units), p.decimals)
        message.excess_cents = p.excess_cents
        message.payment_id = p.id
        message.account_id = p.account_id
        message.plan_id = p.plan_id
        message.tx_hash = p.tx_hash or ""
        message.reason = p.admin_note
    elif row.transfer is not None:
        t = row.transfer
        message.network = t.network
        message.currency = t.currency
        if decimals is not None:
            message.received_amount = format_amount(int(t.value_base_units), decimals)
        message.received_base_units = t.value_base_units
        message.payment_id = t.named_payment_id or ""
        message.tx_hash = t.tx_hash
        message.reason = t.reason
    r = row.resolution
    if r is not None:
        message.resolution.CopyFrom(
            pb.FundsResolution(
                action=_ACTIONS[r.action],
                account_id=r.account_id,
                plan_id=r.plan_id,
                interval=_INTERVAL_VALUES.get(r.interval, plan_pb2.BILLING_INTERVAL_UNSPECIFIED),  # type: ignore[call-overload]
                payment_id=r.payment_id or "",
                refund_tx_hash=r.refund_tx_hash,
                actor=r.actor,
                reason=r.reason,
                resolved_at=convert.timestamp(r.created_at),
            )
        )
    return message
