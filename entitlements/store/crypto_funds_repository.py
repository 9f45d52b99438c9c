"""Crypto money received without access, for an admin: the listing (payments underpaid, overpaid
beyond a tolerance or paid late; transfers that paid no quote) and the resolutions, each written
with its audit row in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select, update
from sqlalchemy.exc import IntegrityError

from entitlements.errors import FailedPrecondition
from entitlements.store.crypto_repository import (
    PaymentRecord,
    UnmatchedRecord,
    _payment,
    _unmatched,
    _values,
)
from entitlements.store.models import (
    CryptoPaymentRow,
    CryptoResolution,
    CryptoTransferRow,
    CryptoUnmatchedTransfer,
    OverrideAudit,
)
from entitlements.store.sessions import Sessions

__all__ = [
    "FUNDS_KINDS",
    "FundsFilter",
    "FundsRow",
    "FundsStore",
    "ResolutionRecord",
    "unmatched_item_id",
]

#: The kinds of money received without (full) access, as listed.
PAYMENT_KINDS = ("underpaid", "overpaid", "paid_late")
TRANSFER_KINDS = ("wrong_currency", "wrong_payer", "unmatched", "unsupported")
FUNDS_KINDS = PAYMENT_KINDS + TRANSFER_KINDS
_UNMATCHED_PREFIX = "ut_"


def unmatched_item_id(row_id: int) -> str:
    """An unmatched transfer's item id: zero-padded, so ids sort like the numbers."""
    return f"{_UNMATCHED_PREFIX}{row_id:012d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolutionRecord:
    """One row of `crypto_resolutions`."""

    item_id: str
    action: str
    account_id: str
    plan_id: str
    interval: str
    payment_id: str | None
    refund_tx_hash: str
    actor: str
    reason: str
    created_at: datetime


_RESOLUTION_FIELDS = tuple(f.name for f in fields(ResolutionRecord))


@dataclass(frozen=True, slots=True)
class FundsFilter:
    """What to list; None means any."""

    kind: str | None = None
    network: str | None = None
    account_id: str | None = None
    include_resolved: bool = False


@dataclass(frozen=True, slots=True)
class FundsRow:
    """One listed item: a payment or an unmatched transfer, with its resolution if any."""

    item_id: str
    kind: str
    created_at: datetime
    payment: PaymentRecord | None = None
    transfer: UnmatchedRecord | None = None
    #: For a payment: the wallet its first (live) transfer came from.
    from_address: str = ""
    #: For a payment: the highest block of its live transfers.
    block_number: int = 0
    resolution: ResolutionRecord | None = None


def _payment_kind(p: PaymentRecord, tolerance_cents: int) -> str | None:
    if p.status == "overpaid":
        return "overpaid" if p.excess_cents > tolerance_cents else None
    return p.status if p.status in PAYMENT_KINDS else None


class FundsStore(Sessions):
    """The admin's view of crypto money received without access, on the shared engine."""

    async def page(
        self,
        *,
        limit: int,
        after: tuple[datetime, str] | None,
        filters: FundsFilter,
        tolerance_cents: int,
    ) -> list[FundsRow]:
        """Up to `limit` items newest first ((created_at, item id) descending) after the keyset
        `after`: payments by their quote's time, transfers by when they were seen."""
        rows: list[FundsRow] = []
        async with self._transaction() as session:
            if filters.kind is None or filters.kind in PAYMENT_KINDS:
                rows += await self._payments(session, limit, after, filters, tolerance_cents)
            if filters.kind is None or filters.kind in TRANSFER_KINDS:
                rows += await self._transfers(session, limit, after, filters)
            rows.sort(key=lambda r: (r.created_at, r.item_id), reverse=True)
            rows = rows[:limit]
            resolutions = await self._resolutions(session, [r.item_id for r in rows])
        return [replace(r, resolution=resolutions.get(r.item_id)) for r in rows]

    async def _payments(
        self,
        session: Any,
        limit: int,
        after: tuple[datetime, str] | None,
        filters: FundsFilter,
        tolerance_cents: int,
    ) -> list[FundsRow]:
        statuses = [filters.kind] if filters.kind else list(PAYMENT_KINDS)
        query = select(CryptoPaymentRow).where(CryptoPaymentRow.status.in_(statuses))
        overpaid_beyond: ColumnElement[bool] = or_(
            CryptoPaymentRow.status != "overpaid",
            CryptoPaymentRow.excess_cents > tolerance_cents,
        )
        query = query.where(overpaid_beyond)
        if filters.network:
            query = query.where(CryptoPaymentRow.network == filters.network)
        if filters.account_id:
            query = query.where(CryptoPaymentRow.account_id == filters.account_id)
        if not filters.include_resolved:
            query = query.where(CryptoPaymentRow.resolution.is_(None))
        if after is not None:
            at, item_id = after
            query = query.where(
                or_(
                    CryptoPaymentRow.created_at < at,
                    and_(CryptoPaymentRow.created_at == at, CryptoPaymentRow.id < item_id),
                )
            )
        query = query.order_by(CryptoPaymentRow.created_at.desc(), CryptoPaymentRow.id.desc())
        payments = [_payment(r) for r in await session.scalars(query.limit(limit))]
        firsts: dict[str, tuple[str, int]] = {}
        if payments:
            transfers = await session.execute(
                select(
                    CryptoTransferRow.payment_id,
                    CryptoTransferRow.from_address,
                    CryptoTransferRow.block_number,
                )
                .where(
                    CryptoTransferRow.payment_id.in_([p.id for p in payments]),
                    CryptoTransferRow.status != "reorged",
                )
                .order_by(CryptoTransferRow.block_number, CryptoTransferRow.log_index)
            )
            for payment_id, sender, block in transfers:
                first_sender = firsts.get(payment_id, (sender, block))[0]
                firsts[payment_id] = (first_sender, block)
        out = []
        for p in payments:
            kind = _payment_kind(p, tolerance_cents)
            if kind is None:
                continue
            sender, block = firsts.get(p.id, ("", 0))
            out.append(
                FundsRow(
                    item_id=p.id,
                    kind=kind,
                    created_at=p.created_at,
                    payment=p,
                    from_address=sender,
                    block_number=block,
                )
            )
        return out

    async def _transfers(
        self,
        session: Any,
        limit: int,
        after: tuple[datetime, str] | None,
        filters: FundsFilter,
    ) -> list[FundsRow]:
        if filters.account_id:
            return []  # an unmatched transfer belongs to no account
        t = CryptoUnmatchedTransfer
        query = select(t).where(t.reorged.is_(False))
        if filters.kind:
            query = query.where(t.kind == filters.kind)
        if filters.network:
            query = query.where(t.network == filters.network)
        if not filters.include_resolved:
            query = query.where(t.resolution.is_(None))
        if after is not None:
            at, item_id = after
            same_time: ColumnElement[bool]
            if item_id.startswith(_UNMATCHED_PREFIX):
                same_time = and_(t.seen_at == at, t.id < int(item_id[len(_UNMATCHED_PREFIX) :]))
            elif item_id > _UNMATCHED_PREFIX:
                same_time = t.seen_at == at  # every "ut_" id sorts below it
            else:
                same_time = false()
            query = query.where(or_(t.seen_at < at, same_time))
        query = query.order_by(t.seen_at.desc(), t.id.desc()).limit(limit)
        out = []
        for row in await session.scalars(query):
            record = _unmatched(row)
            out.append(
                FundsRow(
                    item_id=unmatched_item_id(row.id),
                    kind=record.kind,
                    created_at=record.seen_at,
                    transfer=record,
                    from_address=record.from_address,
                    block_number=record.block_number,
                )
            )
        return out

    async def _resolutions(
        self, session: Any, item_ids: Sequence[str]
    ) -> dict[str, ResolutionRecord]:
        if not item_ids:
            return {}
        rows = await session.scalars(
            select(CryptoResolution).where(CryptoResolution.item_id.in_(list(item_ids)))
        )
        return {
            r.item_id: ResolutionRecord(**{n: getattr(r, n) for n in _RESOLUTION_FIELDS})
            for r in rows
        }

    async def item(self, item_id: str, tolerance_cents: int) -> FundsRow | None:
        """One item by id, listed kind or not (kind "" when it is not money without access)."""
        async with self._transaction() as session:
            row: FundsRow | None = None
            if item_id.startswith(_UNMATCHED_PREFIX):
                digits = item_id[len(_UNMATCHED_PREFIX) :]
                if not digits.isdigit():
                    return None
                found = await session.get(CryptoUnmatchedTransfer, int(digits))
                if found is not None:
                    record = _unmatched(found)
                    row = FundsRow(
                        item_id=item_id,
                        kind="" if record.reorged else record.kind,
                        created_at=record.seen_at,
                        transfer=record,
                        from_address=record.from_address,
                        block_number=record.block_number,
                    )
            else:
                payment = await session.get(CryptoPaymentRow, item_id)
                if payment is not None:
                    record_p = _payment(payment)
                    blocks = await session.execute(
                        select(CryptoTransferRow.from_address, CryptoTransferRow.block_number)
                        .where(
                            CryptoTransferRow.payment_id == item_id,
                            CryptoTransferRow.status != "reorged",
                        )
                        .order_by(CryptoTransferRow.block_number, CryptoTransferRow.log_index)
                    )
                    live = list(blocks)
                    row = FundsRow(
                        item_id=item_id,
                        kind=_payment_kind(record_p, tolerance_cents) or "",
                        created_at=record_p.created_at,
                        payment=record_p,
                        from_address=live[0][0] if live else "",
                        block_number=max((b for _, b in live), default=0),
                    )
            if row is None:
                return None
            resolutions = await self._resolutions(session, [item_id])
            return replace(row, resolution=resolutions.get(item_id))

    async def resolve(
        self,
        row: FundsRow,
        resolution: ResolutionRecord,
        *,
        credit: PaymentRecord | None,
        audit_account: str,
        details: dict[str, Any],
    ) -> None:
        """Record `resolution` of `row` (and the payment a credit activates through), mark the
        item resolved (releasing a payment's slot) and write the audit row, in one
        transaction. FailedPrecondition if the item was resolved meanwhile."""
        action = resolution.action
        try:
            async with self._transaction(write=True) as session:
                session.add(CryptoResolution(**_values(resolution, _RESOLUTION_FIELDS)))
                if row.payment is not None:
                    await session.execute(
                        update(CryptoPaymentRow)
                        .where(
                            CryptoPaymentRow.id == row.payment.id,
                            CryptoPaymentRow.resolution.is_(None),
                        )
                        .values(resolution=action, open_slot=None)
                    )
                elif row.transfer is not None:
                    await session.execute(
                        update(CryptoUnmatchedTransfer)
                        .where(CryptoUnmatchedTransfer.id == row.transfer.id)
                        .values(resolution=action)
                    )
                if credit is not None:
                    session.add(CryptoPaymentRow(**_values(credit, _PAYMENT_FIELDS)))
                session.add(
                    OverrideAudit(
                        account_id=audit_account,
                        actor=resolution.actor,
                        action="resolve_crypto_funds",
                        details=details,
                        created_at=resolution.created_at,
                    )
                )
        except IntegrityError as exc:
            raise FailedPrecondition(f"{row.item_id} was resolved meanwhile") from exc

    async def resolution(self, item_id: str) -> ResolutionRecord | None:
        async with self._transaction() as session:
            return (await self._resolutions(session, [item_id])).get(item_id)


_PAYMENT_FIELDS = tuple(f.name for f in fields(PaymentRecord))
