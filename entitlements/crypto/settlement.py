"""Settling a crypto payment from its transfers: its status, and the plan it activates through
`EntitlementService` (or, after a reorg, revokes), with its revenue fact.

Status of a payment, from its (not reorged) transfers:
- none: PENDING, EXPIRED once the quote expired;
- some below the confirmation depth: PROCESSING;
- all at the depth: PAID_LATE if the first arrived after expiry, else UNDERPAID, CONFIRMED or
  OVERPAID by the total. CONFIRMED and OVERPAID activate the plan; the others wait for an admin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from entitlements.crypto.amounts import format_amount
from entitlements.crypto.config import CryptoSettings
from entitlements.service import EntitlementService
from entitlements.store.crypto_repository import (
    CryptoStore,
    PaymentRecord,
    RevenueRecord,
    TransferRecord,
)
from entitlements.store.records import SubscriptionInterval, SubscriptionRecord, utcnow

__all__ = ["Settlement", "add_interval", "excess_cents"]

# The payments logger, as before the split: log filters on it keep seeing REORG errors.
log = logging.getLogger("entitlements.crypto.payments")

_PAID = frozenset({"confirmed", "overpaid"})
#: Final for matching: the payment's slot is released and further transfers are unmatched.
_CLOSED = frozenset({"confirmed", "overpaid", "paid_late"})


def add_interval(start: datetime, interval: str) -> datetime:
    """`start` plus one calendar month or year (the day clamped to the month's last)."""
    months = 12 if interval == "year" else 1
    month0 = start.month - 1 + months
    year, month = start.year + month0 // 12, month0 % 12 + 1
    for day in (start.day, 30, 29, 28):
        try:
            return start.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise ValueError(f"cannot add a {interval} to {start}")  # pragma: no cover


def excess_cents(payment: PaymentRecord, received: int) -> int:
    """What `received` holds beyond the payment's amount, in US cents (rounded down) at the
    quote's rate: a stablecoin is a dollar, ETH is valued at the rate locked in the quote."""
    extra = Decimal(received - int(payment.amount_base_units)) / Decimal(10) ** payment.decimals
    if payment.currency == "ETH":
        extra *= Decimal(payment.eth_usd_rate or "0")
    return max(0, int(extra * 100))


class Settlement:
    """Settles payments on a `CryptoStore`, activating plans through `EntitlementService`."""

    def __init__(
        self,
        repo: CryptoStore,
        service: EntitlementService,
        settings: CryptoSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repo = repo
        self.service = service
        self.settings = settings
        self.clock = clock

    async def settle(
        self,
        payment: PaymentRecord,
        head: int,
        scanned_until: datetime | None = None,
        *,
        transfers: Sequence[TransferRecord] | None = None,
    ) -> PaymentRecord:
        """Recompute a payment from its transfers at chain head `head`, then activate or revoke
        its plan as needed. Idempotent: calling it again changes nothing.

        `scanned_until` is the time of the last block the watcher has read (default: now, a
        watcher at the head): a quote's slot is released only once the chain has been read
        past its late window, so a watcher catching up after downtime still matches a transfer
        made in time. A payment an admin resolved is no longer changed by the chain."""
        now = self.clock()
        if payment.resolution is not None:
            if payment.resolution == "admin_credit" and payment.activation in ("none", "pending"):
                return await self._activate(payment)  # a credit cut short by a crash
            return payment
        depth = payment.required_confirmations
        if transfers is None:
            transfers = await self.repo.transfers_of(payment.id)
        transfers = [t for t in transfers if t.status != "reorged"]
        received = sum(int(t.value_base_units) for t in transfers)
        note = payment.admin_note
        if not transfers:
            status = "expired" if now > payment.expires_at else "pending"
            confirmations = 0
        else:
            for t in transfers:
                if t.status == "seen" and head - t.block_number + 1 >= depth:
                    confirmed = replace(t, status="confirmed", confirmed_at=now)
                    await self.repo.update_transfer(confirmed)
            confirmations = min(max(0, head - t.block_number + 1) for t in transfers)
            amount = int(payment.amount_base_units)
            if confirmations < depth:
                status = "processing"
            elif min(t.block_time for t in transfers) > payment.expires_at:
                status = "paid_late"
            elif received < amount:
                status = "underpaid"
            elif received == amount:
                status = "confirmed"
            else:
                status = "overpaid"
        if status != payment.status and status in ("underpaid", "overpaid", "paid_late"):
            note = _append(
                note,
                f"{now.isoformat()}: {status}: received "
                f"{format_amount(received, payment.decimals)} {payment.currency} of "
                f"{format_amount(int(payment.amount_base_units), payment.decimals)}",
            )
        late_end = payment.expires_at + timedelta(seconds=self.settings.late_window_seconds)
        read_until = now if scanned_until is None else min(now, scanned_until)
        if status in _CLOSED or (status != "processing" and read_until > late_end):
            open_slot = None
        else:
            open_slot = payment.slot
        updated = replace(
            payment,
            status=status,
            received_base_units=str(received),
            tx_hash=transfers[0].tx_hash if transfers else None,
            confirmations=confirmations,
            open_slot=open_slot,
            admin_note=note,
            excess_cents=excess_cents(payment, received) if status == "overpaid" else 0,
        )
        if status in _PAID and payment.activation in ("none", "revoked"):
            return await self._activate(replace(updated, confirmed_at=now))
        if status in _PAID and payment.activation == "pending":
            return await self._activate(updated)
        if status not in _PAID and payment.activation in ("pending", "applied"):
            return await self._revoke(updated)
        if status not in _PAID:
            updated = replace(updated, confirmed_at=None)
        if updated != payment:
            updated = await self.repo.update_payment(updated)
            if updated.status != payment.status:
                log.info("crypto payment %s: %s -> %s", payment.id, payment.status, status)
        return updated

    async def activate(self, payment: PaymentRecord) -> PaymentRecord:
        """Activate the plan a stored payment pays for (an admin's credit), with its revenue."""
        return await self._activate(payment)

    async def _activate(self, payment: PaymentRecord) -> PaymentRecord:
        confirmed_at = payment.confirmed_at or self.clock()
        current = await self._current_subscription(payment.account_id)
        if payment.activation != "pending":
            extend = (
                current is not None
                and current.payment_method == "crypto"
                and current.plan_id == payment.plan_id
                and current.status == "active"
                and current.current_period_end is not None
                and current.current_period_end > confirmed_at
            )
            payment = replace(
                payment,
                activation="pending",
                confirmed_at=confirmed_at,
                subscription_id=current.id if extend and current else f"crypto_{payment.id}",
                previous_period_end=current.current_period_end if extend and current else None,
            )
            payment = await self.repo.update_payment(
                payment,
                revenue=RevenueRecord(
                    payment_id=payment.id,
                    account_id=payment.account_id,
                    subscription_id=payment.subscription_id,
                    plan_id=payment.plan_id,
                    interval=payment.interval,
                    amount_cents=payment.price_cents,
                    currency=payment.currency,
                    network=payment.network,
                    chain_id=payment.chain_id,
                    tx_hash=payment.tx_hash or "",
                    confirmed_at=confirmed_at,
                ),
            )
        assert payment.subscription_id is not None
        interval: SubscriptionInterval = "year" if payment.interval == "year" else "month"
        if payment.previous_period_end is None:
            record = SubscriptionRecord(
                id=payment.subscription_id,
                account_id=payment.account_id,
                plan_id=payment.plan_id,
                status="active",
                interval=interval,
                payment_method="crypto",
                current_period_start=confirmed_at,
                current_period_end=add_interval(confirmed_at, interval),
            )
        else:
            base = (
                current
                if current is not None and current.id == payment.subscription_id
                else SubscriptionRecord(
                    id=payment.subscription_id,
                    account_id=payment.account_id,
                    plan_id=payment.plan_id,
                    status="active",
                    interval=interval,
                    payment_method="crypto",
                    current_period_start=confirmed_at,
                )
            )
            record = replace(
                base,
                status="active",
                interval=interval,
                current_period_end=add_interval(payment.previous_period_end, interval),
            )
        await self.service.save_subscription(record)
        log.info(
            "crypto payment %s confirmed: %s on %s for account %s until %s",
            payment.id,
            payment.plan_id,
            payment.network,
            payment.account_id,
            record.current_period_end,
        )
        return await self.repo.update_payment(replace(payment, activation="applied"))

    async def _revoke(self, payment: PaymentRecord) -> PaymentRecord:
        now = self.clock()
        log.error(
            "REORG: crypto payment %s (account %s) was %s and its transfer is no longer on "
            "%s at the recorded block; revoking the plan it activated (status now %s)",
            payment.id,
            payment.account_id,
            "confirmed",
            payment.network,
            payment.status,
        )
        current = await self._current_subscription(payment.account_id)
        if current is not None and current.id == payment.subscription_id:
            # The period is what the subscription's other payments still pay for, each from
            # its confirmation or the end of the one before (a later payment that extended
            # this one keeps its own month).
            others = sorted(
                (
                    p
                    for p in await self.repo.applied_payments(current.id)
                    if p.id != payment.id and p.confirmed_at is not None
                ),
                key=lambda p: (p.confirmed_at, p.id),
            )
            end: datetime | None = None
            for other in others:
                assert other.confirmed_at is not None
                start = end if end is not None and end > other.confirmed_at else other.confirmed_at
                end = add_interval(start, other.interval)
            if end is None:
                record = replace(
                    current,
                    status="canceled",
                    canceled_at=now,
                    ended_at=now,
                    current_period_end=now,
                )
            else:
                record = replace(current, current_period_end=end)
            await self.service.save_subscription(record)
        else:
            log.error(
                "crypto payment %s: subscription %s is no longer the account's current one; "
                "not changed, an admin must review it",
                payment.id,
                payment.subscription_id,
            )
        payment = replace(
            payment,
            activation="revoked",
            confirmed_at=None,
            admin_note=_append(
                payment.admin_note,
                f"{now.isoformat()}: reorg after confirmation: activation revoked, revenue removed",
            ),
        )
        return await self.repo.update_payment(payment, drop_revenue=True)

    async def _current_subscription(self, account_id: str) -> SubscriptionRecord | None:
        snapshot = await self.service.store.get_account_snapshot(account_id)
        return None if snapshot is None else snapshot.subscription


def _append(note: str, line: str) -> str:
    return f"{note}\n{line}" if note else line
