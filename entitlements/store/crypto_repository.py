"""Crypto payments' storage: quotes with their unique amount slots, matched and unmatched
transfers, each network watcher's cursor, and the revenue facts of confirmed payments."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, literal, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from entitlements.errors import FailedPrecondition
from entitlements.events.transitions import CryptoPaymentState, crypto_payment_events
from entitlements.store.engine import is_postgres
from entitlements.store.events_repository import append_event
from entitlements.store.models import (
    CryptoPaymentRow,
    CryptoRevenue,
    CryptoTransferRow,
    CryptoUnmatchedTransfer,
    CryptoWatchCursor,
)
from entitlements.store.records import utcnow
from entitlements.store.sessions import Sessions

__all__ = [
    "CryptoStore",
    "Cursor",
    "PaymentRecord",
    "RevenueRecord",
    "TransferRecord",
    "UnmatchedRecord",
    "crypto_revenue",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRecord:
    """One row of `crypto_payments` (see the model for the meaning of each column)."""

    id: str
    account_id: str
    plan_id: str
    interval: str
    network: str
    chain_id: int
    currency: str
    token_contract: str
    pay_to_address: str
    amount_base_units: str
    decimals: int
    slot: int
    open_slot: int | None
    price_cents: int
    eth_usd_rate: str | None
    status: str
    received_base_units: str
    tx_hash: str | None
    confirmations: int
    required_confirmations: int
    created_block: int
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None = None
    subscription_id: str | None = None
    previous_period_end: datetime | None = None
    activation: str = "none"
    admin_note: str = ""
    updated_at: datetime
    payer_address: str | None = None
    excess_cents: int = 0
    resolution: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRecord:
    """A transfer matched to a payment, identified by (chain_id, tx_hash, log_position): its
    position among its transaction's logs (-1: a native transfer). `log_index` is where it sits
    in its current block."""

    payment_id: str
    network: str
    chain_id: int
    tx_hash: str
    log_position: int
    log_index: int
    block_number: int
    block_hash: str
    block_time: datetime
    token_contract: str
    from_address: str
    value_base_units: str
    status: str = "seen"
    seen_at: datetime
    confirmed_at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmatchedRecord:
    """A transfer that paid no payment (identified like a `TransferRecord`)."""

    network: str
    chain_id: int
    tx_hash: str
    log_position: int
    log_index: int
    block_number: int
    block_hash: str
    currency: str
    token_contract: str
    from_address: str
    to_address: str
    value_base_units: str
    reason: str
    reorged: bool = False
    seen_at: datetime
    kind: str = "unmatched"
    named_payment_id: str | None = None
    resolution: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    block_number: int
    block_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RevenueRecord:
    payment_id: str
    account_id: str
    subscription_id: str | None
    plan_id: str
    interval: str
    amount_cents: int
    currency: str
    network: str
    chain_id: int
    tx_hash: str
    confirmed_at: datetime


def crypto_revenue(until: datetime) -> Select[str, str | None, int, str, str, datetime]:
    """Crypto revenue as admin revenue facts: (account_id, subscription_id, amount_cents,
    "usd", "crypto", confirmed_at) of the payments confirmed at or before `until`."""
    return select(
        CryptoRevenue.account_id,
        CryptoRevenue.subscription_id,
        CryptoRevenue.amount_cents,
        literal("usd"),
        literal("crypto"),
        CryptoRevenue.confirmed_at,
    ).where(CryptoRevenue.confirmed_at <= until)


_PAYMENT_FIELDS = tuple(f.name for f in fields(PaymentRecord))
_TRANSFER_FIELDS = tuple(f.name for f in fields(TransferRecord))
_UNMATCHED_FIELDS = tuple(f.name for f in fields(UnmatchedRecord))
_REVENUE_FIELDS = tuple(f.name for f in fields(RevenueRecord))


class CryptoStore(Sessions):
    """Crypto payment rows in SQLite or PostgreSQL, on the same engine as `Store`; every method
    is one transaction and raises `Unavailable` when the database cannot be reached."""

    # -- payments --

    async def create_payment(
        self, draft: PaymentRecord, amount_for: Callable[[int], int], max_slot: int
    ) -> PaymentRecord:
        """Store `draft` with the lowest slot (1..max_slot) no open payment of the same network
        and receiving address holds (in any currency), and the amount `amount_for(slot)`. Concurrent
        quotes that pick the same slot collide on the unique constraint and try again."""
        for _ in range(8):
            try:
                async with self._transaction(write=True) as session:
                    if is_postgres(self._engine):
                        # Quotes for one address take turns (SQLite's BEGIN IMMEDIATE does it
                        # there); the unique constraint stays the guarantee.
                        await session.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"),
                            {"key": _lock_key(draft.network, draft.pay_to_address)},
                        )
                    # Slots are unique across currencies: a transfer's digits name one quote,
                    # so one sent in the wrong currency is told apart, never misapplied.
                    held = set(
                        (
                            await session.scalars(
                                select(CryptoPaymentRow.open_slot).where(
                                    CryptoPaymentRow.network == draft.network,
                                    CryptoPaymentRow.pay_to_address == draft.pay_to_address,
                                    CryptoPaymentRow.open_slot.is_not(None),
                                )
                            )
                        ).all()
                    )
                    slot = next((k for k in range(1, max_slot + 1) if k not in held), None)
                    if slot is None:
                        raise FailedPrecondition(
                            f"{max_slot} payments in {draft.currency} on {draft.network} are "
                            "open at once; try again when some have been paid or expired"
                        )
                    record = replace(
                        draft, slot=slot, open_slot=slot, amount_base_units=str(amount_for(slot))
                    )
                    session.add(CryptoPaymentRow(**_values(record, _PAYMENT_FIELDS)))
            except IntegrityError:
                continue  # another quote took the slot at the same time
            return record
        raise FailedPrecondition("could not reserve a unique amount; try again")

    async def get_payment(self, payment_id: str) -> PaymentRecord | None:
        async with self._transaction() as session:
            row = await session.get(CryptoPaymentRow, payment_id)
            return None if row is None else _payment(row)

    async def payments(self, network: str, *, open_only: bool = True) -> list[PaymentRecord]:
        """A network's payments that hold a slot (open), oldest first."""
        query = select(CryptoPaymentRow).where(CryptoPaymentRow.network == network)
        if open_only:
            query = query.where(CryptoPaymentRow.open_slot.is_not(None))
        async with self._transaction() as session:
            rows = await session.scalars(query.order_by(CryptoPaymentRow.created_at))
            return [_payment(r) for r in rows]

    async def payments_to_settle(
        self, network: str, ids: Iterable[str]
    ) -> tuple[list[PaymentRecord], list[TransferRecord]]:
        """In one transaction: the payments a watcher settles each poll (those holding a slot,
        those whose activation is still to be applied, and `ids`) and all their transfers."""
        wanted = sorted(set(ids))
        condition = or_(
            CryptoPaymentRow.open_slot.is_not(None),
            CryptoPaymentRow.activation == "pending",
            and_(
                CryptoPaymentRow.resolution == "admin_credit",
                CryptoPaymentRow.activation == "none",
            ),
        )
        if wanted:
            condition = or_(condition, CryptoPaymentRow.id.in_(wanted))
        async with self._transaction() as session:
            rows = await session.scalars(
                select(CryptoPaymentRow)
                .where(CryptoPaymentRow.network == network, condition)
                .order_by(CryptoPaymentRow.created_at)
            )
            payments = [_payment(r) for r in rows]
            if not payments:
                return [], []
            transfers = await session.scalars(
                select(CryptoTransferRow)
                .where(CryptoTransferRow.payment_id.in_([p.id for p in payments]))
                .order_by(CryptoTransferRow.block_number, CryptoTransferRow.log_index)
            )
            return payments, [_transfer(r) for r in transfers]

    async def payments_by_id(self, ids: Iterable[str]) -> list[PaymentRecord]:
        wanted = sorted(set(ids))
        if not wanted:
            return []
        async with self._transaction() as session:
            rows = await session.scalars(
                select(CryptoPaymentRow).where(CryptoPaymentRow.id.in_(wanted))
            )
            return [_payment(r) for r in rows]

    async def applied_payments(self, subscription_id: str) -> list[PaymentRecord]:
        """The payments whose activation is applied to the subscription `subscription_id`."""
        async with self._transaction() as session:
            rows = await session.scalars(
                select(CryptoPaymentRow).where(
                    CryptoPaymentRow.subscription_id == subscription_id,
                    CryptoPaymentRow.activation == "applied",
                )
            )
            return [_payment(r) for r in rows]

    async def payments_to_apply(self, network: str) -> list[PaymentRecord]:
        """Payments whose activation was decided but not yet written (a crash in between),
        and admin credits not yet activated."""
        async with self._transaction() as session:
            rows = await session.scalars(
                select(CryptoPaymentRow).where(
                    CryptoPaymentRow.network == network,
                    or_(
                        CryptoPaymentRow.activation == "pending",
                        and_(
                            CryptoPaymentRow.resolution == "admin_credit",
                            CryptoPaymentRow.activation == "none",
                        ),
                    ),
                )
            )
            return [_payment(r) for r in rows]

    async def update_payment(
        self,
        record: PaymentRecord,
        *,
        revenue: RevenueRecord | None = None,
        drop_revenue: bool = False,
    ) -> PaymentRecord:
        """Store `record`'s mutable state, and add or drop its revenue fact, in one transaction.
        Re-taking a released slot that another open payment holds leaves it released.

        The `crypto_payment.*` events of the status it leaves (as stored, read locked in this
        transaction) for its new one are written in the same transaction: a second watcher or
        replica settling the same confirmation finds the status already written, and no event.
        """
        now = utcnow()
        record = replace(record, updated_at=now)
        values = _values(record, _PAYMENT_FIELDS)
        values.pop("id")
        async with self._transaction(write=True) as session:
            stored = await session.get(CryptoPaymentRow, record.id, with_for_update=True)
            old = None if stored is None else _payment(stored)
            try:
                async with session.begin_nested():
                    await session.execute(
                        update(CryptoPaymentRow)
                        .where(CryptoPaymentRow.id == record.id)
                        .values(values)
                    )
            except IntegrityError:
                record = replace(record, open_slot=None)
                values["open_slot"] = None
                await session.execute(
                    update(CryptoPaymentRow).where(CryptoPaymentRow.id == record.id).values(values)
                )
            if drop_revenue:
                await session.execute(
                    delete(CryptoRevenue).where(CryptoRevenue.payment_id == record.id)
                )
            if revenue is not None and await session.get(CryptoRevenue, record.id) is None:
                session.add(CryptoRevenue(**_values(revenue, _REVENUE_FIELDS)))
            if old is not None:
                for event in crypto_payment_events(_state(old), _state(record), now=now):
                    await append_event(session, event)
        return record

    async def revenue(self) -> list[RevenueRecord]:
        async with self._transaction() as session:
            rows = await session.scalars(select(CryptoRevenue).order_by(CryptoRevenue.confirmed_at))
            return [RevenueRecord(**{n: getattr(r, n) for n in _REVENUE_FIELDS}) for r in rows]

    # -- transfers --

    async def open_payment(self, network: str, pay_to: str, slot: int) -> PaymentRecord | None:
        """The open payment (any currency) holding `slot` for the receiving address `pay_to`."""
        async with self._transaction() as session:
            rows = await session.scalars(
                select(CryptoPaymentRow).where(
                    CryptoPaymentRow.network == network,
                    CryptoPaymentRow.open_slot == slot,
                )
            )
            return next(
                (_payment(r) for r in rows if r.pay_to_address.lower() == pay_to.lower()), None
            )

    async def transfer(
        self, chain_id: int, tx_hash: str, log_position: int
    ) -> TransferRecord | None:
        async with self._transaction() as session:
            row = await session.scalar(
                select(CryptoTransferRow).where(
                    CryptoTransferRow.chain_id == chain_id,
                    CryptoTransferRow.tx_hash == tx_hash,
                    CryptoTransferRow.log_position == log_position,
                )
            )
            return None if row is None else _transfer(row)

    async def unmatched_transfer(
        self, chain_id: int, tx_hash: str, log_position: int
    ) -> UnmatchedRecord | None:
        async with self._transaction() as session:
            row = await session.scalar(
                select(CryptoUnmatchedTransfer).where(
                    CryptoUnmatchedTransfer.chain_id == chain_id,
                    CryptoUnmatchedTransfer.tx_hash == tx_hash,
                    CryptoUnmatchedTransfer.log_position == log_position,
                )
            )
            return None if row is None else _unmatched(row)

    async def payment_of_transaction(self, chain_id: int, tx_hash: str) -> str | None:
        """The payment a (not reorged) transaction paid, if any."""
        async with self._transaction() as session:
            return await session.scalar(
                select(CryptoTransferRow.payment_id)
                .where(
                    CryptoTransferRow.chain_id == chain_id,
                    CryptoTransferRow.tx_hash == tx_hash,
                    CryptoTransferRow.status != "reorged",
                )
                .limit(1)
            )

    async def add_transfer(self, record: TransferRecord) -> bool:
        """Record a matched transfer; False if (chain_id, tx_hash, log_position) already is."""
        try:
            async with self._transaction(write=True) as session:
                session.add(CryptoTransferRow(**_values(record, _TRANSFER_FIELDS, skip=("id",))))
        except IntegrityError:
            return False
        return True

    async def add_unmatched(self, record: UnmatchedRecord) -> bool:
        try:
            async with self._transaction(write=True) as session:
                session.add(
                    CryptoUnmatchedTransfer(**_values(record, _UNMATCHED_FIELDS, skip=("id",)))
                )
        except IntegrityError:
            return False
        return True

    async def update_transfer(self, record: TransferRecord) -> None:
        values = _values(record, _TRANSFER_FIELDS, skip=("id",))
        async with self._transaction(write=True) as session:
            await session.execute(
                update(CryptoTransferRow).where(CryptoTransferRow.id == record.id).values(values)
            )

    async def transfers_of(self, payment_id: str) -> list[TransferRecord]:
        async with self._transaction() as session:
            rows = await session.scalars(
                select(CryptoTransferRow)
                .where(CryptoTransferRow.payment_id == payment_id)
                .order_by(CryptoTransferRow.block_number, CryptoTransferRow.log_index)
            )
            return [_transfer(r) for r in rows]

    async def recent(
        self, network: str, min_block: int
    ) -> tuple[list[TransferRecord], list[UnmatchedRecord]]:
        """In one transaction: the matched and the unmatched transfers at or above `min_block`
        not known to be reorged (what a reorg could still undo)."""
        async with self._transaction() as session:
            matched = await session.scalars(
                select(CryptoTransferRow).where(
                    CryptoTransferRow.network == network,
                    CryptoTransferRow.status != "reorged",
                    CryptoTransferRow.block_number >= min_block,
                )
            )
            transfers = [_transfer(r) for r in matched]
            unmatched = await session.scalars(
                select(CryptoUnmatchedTransfer).where(
                    CryptoUnmatchedTransfer.network == network,
                    CryptoUnmatchedTransfer.reorged.is_(False),
                    CryptoUnmatchedTransfer.block_number >= min_block,
                )
            )
            return transfers, [_unmatched(r) for r in unmatched]

    async def unmatched(self, network: str | None = None) -> list[UnmatchedRecord]:
        query = select(CryptoUnmatchedTransfer).order_by(CryptoUnmatchedTransfer.id)
        if network is not None:
            query = query.where(CryptoUnmatchedTransfer.network == network)
        async with self._transaction() as session:
            rows = await session.scalars(query)
            return [_unmatched(r) for r in rows]

    async def update_unmatched(self, record: UnmatchedRecord) -> None:
        """Store an unmatched transfer's block, index and reorged flag (moved by a reorg)."""
        async with self._transaction(write=True) as session:
            await session.execute(
                update(CryptoUnmatchedTransfer)
                .where(CryptoUnmatchedTransfer.id == record.id)
                .values(
                    block_number=record.block_number,
                    block_hash=record.block_hash,
                    log_index=record.log_index,
                    reorged=record.reorged,
                )
            )

    # -- cursors --

    async def cursor(self, network: str) -> Cursor | None:
        async with self._transaction() as session:
            row = await session.get(CryptoWatchCursor, network)
            return None if row is None else Cursor(row.block_number, row.block_hash)

    async def set_cursor(self, network: str, chain_id: int, cursor: Cursor) -> None:
        async with self._transaction(write=True) as session:
            row = await session.get(CryptoWatchCursor, network)
            if row is None:
                session.add(
                    CryptoWatchCursor(
                        network=network,
                        chain_id=chain_id,
                        block_number=cursor.block_number,
                        block_hash=cursor.block_hash,
                        updated_at=utcnow(),
                    )
                )
            else:
                row.block_number = cursor.block_number
                row.block_hash = cursor.block_hash
                row.chain_id = chain_id
                row.updated_at = utcnow()


def _lock_key(*parts: str) -> int:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _values(record: Any, names: tuple[str, ...], *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {n: getattr(record, n) for n in names if n not in skip}


def _payment(row: CryptoPaymentRow) -> PaymentRecord:
    return PaymentRecord(**{n: getattr(row, n) for n in _PAYMENT_FIELDS})


def _state(record: PaymentRecord) -> CryptoPaymentState:
    return CryptoPaymentState(
        id=record.id,
        account_id=record.account_id,
        plan_id=record.plan_id,
        interval=record.interval,
        network=record.network,
        currency=record.currency,
        status=record.status,
        amount_base_units=int(record.amount_base_units),
        received_base_units=int(record.received_base_units or "0"),
        decimals=record.decimals,
        tx_hash=record.tx_hash,
        subscription_id=record.subscription_id,
        revision_ms=int(record.updated_at.timestamp() * 1000),
    )


def _transfer(row: CryptoTransferRow) -> TransferRecord:
    return TransferRecord(**{n: getattr(row, n) for n in _TRANSFER_FIELDS})


def _unmatched(row: CryptoUnmatchedTransfer) -> UnmatchedRecord:
    return UnmatchedRecord(**{n: getattr(row, n) for n in _UNMATCHED_FIELDS})
