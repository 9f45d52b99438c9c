"""Manual (sales-led) billing in the store: manual subscriptions read by id, and manual
invoices recorded once per reference with their audit entry, read back as revenue facts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, literal, select

from entitlements.store.models import ManualInvoice, Subscription
from entitlements.store.records import AuditRecord, SubscriptionRecord, utcnow
from entitlements.store.repository import _subscription_record, audit_row
from entitlements.store.sessions import Sessions

__all__ = ["ManualInvoiceRecord", "ManualStore", "manual_revenue"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ManualInvoiceRecord:
    id: str
    reference: str
    account_id: str
    subscription_id: str
    amount_cents: int
    #: Lower case ISO 4217.
    currency: str
    paid_at: datetime
    recorded_by: str
    reason: str = ""
    created_at: datetime

    def same_terms(self, other: ManualInvoiceRecord) -> bool:
        """True if both record the same payment (whoever recorded it, and when)."""
        return (
            self.subscription_id,
            self.amount_cents,
            self.currency,
            self.paid_at,
        ) == (other.subscription_id, other.amount_cents, other.currency, other.paid_at)


def manual_revenue(until: datetime) -> Select[str, str | None, int, str, str, datetime]:
    """Manual revenue as admin revenue facts: (account_id, subscription_id, amount_cents,
    currency, "manual", paid_at) of the manual invoices paid at or before `until`."""
    return select(
        ManualInvoice.account_id,
        ManualInvoice.subscription_id,
        ManualInvoice.amount_cents,
        ManualInvoice.currency,
        literal("manual"),
        ManualInvoice.paid_at,
    ).where(ManualInvoice.paid_at <= until)


def _invoice(row: ManualInvoice) -> ManualInvoiceRecord:
    return ManualInvoiceRecord(
        id=row.id,
        reference=row.reference,
        account_id=row.account_id,
        subscription_id=row.subscription_id,
        amount_cents=int(row.amount_cents),
        currency=row.currency,
        paid_at=row.paid_at,
        recorded_by=row.recorded_by,
        reason=row.reason,
        created_at=row.created_at,
    )


class ManualStore(Sessions):
    async def subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        async with self._transaction() as session:
            row = await session.get(Subscription, subscription_id)
            return _subscription_record(row) if row is not None else None

    async def invoice_by_reference(self, reference: str) -> ManualInvoiceRecord | None:
        async with self._transaction() as session:
            row = await session.scalar(
                select(ManualInvoice).where(ManualInvoice.reference == reference)
            )
            return _invoice(row) if row is not None else None

    async def record_invoice(
        self, invoice: ManualInvoiceRecord, audit: AuditRecord
    ) -> tuple[ManualInvoiceRecord, bool]:
        """Store the invoice and its audit entry in one transaction, unless its reference is
        stored already: then (the stored invoice, False), and nothing is written."""
        values = {
            "id": invoice.id,
            "reference": invoice.reference,
            "account_id": invoice.account_id,
            "subscription_id": invoice.subscription_id,
            "amount_cents": invoice.amount_cents,
            "currency": invoice.currency,
            "paid_at": invoice.paid_at,
            "recorded_by": invoice.recorded_by,
            "reason": invoice.reason,
            "created_at": invoice.created_at or utcnow(),
        }
        async with self._transaction(write=True) as session:
            # ON CONFLICT DO NOTHING: two replicas recording the same reference at once both
            # succeed, and only one row (and one audit entry) is written.
            inserted = await session.execute(
                self._insert(ManualInvoice)
                .values(values)
                .on_conflict_do_nothing(index_elements=[ManualInvoice.reference])
                .returning(ManualInvoice.id)
            )
            if inserted.first() is not None:
                session.add(audit_row(audit))
                return invoice, True
            row = await session.scalar(
                select(ManualInvoice).where(ManualInvoice.reference == invoice.reference)
            )
            assert row is not None  # the conflict was on this reference
            return _invoice(row), False
