"""AdminService's sales-led and audit RPCs (manual subscriptions and invoices, the audit log):
thin, on `entitlements.admin.sales.ManualBilling` and `entitlements.admin.audit.AuditLog`;
mixed into the AdminService servicer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from nchat.entitlements.v1 import admin_service_pb2 as pb

from entitlements.admin.audit import AuditLog, AuditQuery
from entitlements.admin.sales import InvoiceRequest, ManualBilling, ManualChange, TermsRequest
from entitlements.errors import FailedPrecondition, InvalidArgument
from entitlements.server import convert
from entitlements.server.funds_convert import interval_of
from entitlements.server.status import unary
from entitlements.server.validation import require_id, require_timestamp
from entitlements.store.manual_repository import ManualInvoiceRecord
from entitlements.store.records import AuditRecord

__all__ = ["SalesAdminMethods", "audit_message"]

Ctx = grpc.aio.ServicerContext[Any, Any]


def _time(message: Any, name: str, field: str) -> datetime | None:
    if not message.HasField(name):
        return None
    value: Timestamp = getattr(message, name)
    return require_timestamp(value, field).ToDatetime(tzinfo=UTC)


def _terms(t: pb.ManualSubscriptionTerms) -> TermsRequest:
    return TermsRequest(
        plan_id=t.plan_id,
        price_cents=t.price_cents,
        currency=t.currency,
        interval=interval_of(t.interval, "terms.interval"),
        term_start=_time(t, "term_start", "terms.term_start"),
        term_end=_time(t, "term_end", "terms.term_end"),
    )


def _manual(change: ManualChange) -> pb.ManualSubscription:
    sub = change.subscription
    return pb.ManualSubscription(
        subscription=convert.subscription(sub),
        price_cents=sub.price_cents or 0,
        currency=sub.currency or "",
    )


def _invoice(record: ManualInvoiceRecord) -> pb.ManualInvoice:
    return pb.ManualInvoice(
        id=record.id,
        account_id=record.account_id,
        subscription_id=record.subscription_id,
        amount_cents=record.amount_cents,
        currency=record.currency,
        reference=record.reference,
        paid_at=convert.timestamp(record.paid_at),
        recorded_by=record.recorded_by,
        recorded_at=convert.timestamp(record.created_at),
    )


def audit_message(entry: AuditRecord) -> pb.AuditEntry:
    message = pb.AuditEntry(
        id=entry.id,
        account_id=entry.account_id,
        actor=entry.actor,
        action=entry.action,
        reason=str(entry.details.get("reason") or ""),
        created_at=convert.timestamp(entry.created_at),
    )
    # The request's fingerprint is the idempotency check's, not a fact an operator reads.
    message.details.update({k: v for k, v in entry.details.items() if k != "request_digest"})
    return message


class SalesAdminMethods:
    #: Set by the server's wiring (entitlements.server.admin_servicer.install_admin).
    manual_billing: ManualBilling | None = None
    audit_log: AuditLog | None = None

    def _actor(self, context: Ctx) -> str:  # pragma: no cover - the servicer defines it
        raise NotImplementedError

    def _billing(self) -> ManualBilling:
        if self.manual_billing is None:
            raise FailedPrecondition("manual billing is not set up on this server")
        return self.manual_billing

    @unary
    async def CreateManualSubscription(
        self, request: pb.CreateManualSubscriptionRequest, context: Ctx
    ) -> pb.CreateManualSubscriptionResponse:
        account_id = require_id(request.account_id, "account_id")
        change = await self._billing().create(
            account_id,
            _terms(request.terms),
            request_id=request.request_id,
            reason=request.reason,
            actor=self._actor(context),
        )
        return pb.CreateManualSubscriptionResponse(
            subscription=_manual(change), revision=change.revision
        )

    @unary
    async def UpdateManualSubscription(
        self, request: pb.UpdateManualSubscriptionRequest, context: Ctx
    ) -> pb.UpdateManualSubscriptionResponse:
        sub_id = require_id(request.subscription_id, "subscription_id")
        change = await self._billing().update(
            sub_id,
            _terms(request.terms),
            request_id=request.request_id,
            reason=request.reason,
            actor=self._actor(context),
        )
        return pb.UpdateManualSubscriptionResponse(
            subscription=_manual(change), revision=change.revision
        )

    @unary
    async def EndManualSubscription(
        self, request: pb.EndManualSubscriptionRequest, context: Ctx
    ) -> pb.EndManualSubscriptionResponse:
        sub_id = require_id(request.subscription_id, "subscription_id")
        change = await self._billing().end(
            sub_id,
            request_id=request.request_id,
            reason=request.reason,
            actor=self._actor(context),
        )
        return pb.EndManualSubscriptionResponse(
            subscription=_manual(change), revision=change.revision
        )

    @unary
    async def RecordManualInvoice(
        self, request: pb.RecordManualInvoiceRequest, context: Ctx
    ) -> pb.RecordManualInvoiceResponse:
        invoice, created = await self._billing().record_invoice(
            InvoiceRequest(
                subscription_id=require_id(request.subscription_id, "subscription_id"),
                amount_cents=request.amount_cents,
                currency=request.currency,
                reference=request.reference,
                paid_at=_time(request, "paid_at", "paid_at"),
                reason=request.reason,
            ),
            actor=self._actor(context),
        )
        return pb.RecordManualInvoiceResponse(
            invoice=_invoice(invoice), already_recorded=not created
        )

    @unary
    async def ListAuditEntries(
        self, request: pb.ListAuditEntriesRequest, context: Ctx
    ) -> pb.ListAuditEntriesResponse:
        if self.audit_log is None:
            raise FailedPrecondition("the audit log is not set up on this server")
        if request.account_id:
            require_id(request.account_id, "account_id")
        if request.actor:
            require_id(request.actor, "actor")
        if request.action and not request.action.isprintable():
            raise InvalidArgument("action", "is not an action")
        entries, token = await self.audit_log.list(
            AuditQuery(
                account_id=request.account_id or None,
                actor=request.actor or None,
                action=request.action or None,
                since=_time(request, "since", "since"),
                until=_time(request, "until", "until"),
            ),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListAuditEntriesResponse(
            entries=[audit_message(e) for e in entries], next_page_token=token
        )
