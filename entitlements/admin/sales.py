"""Sales-led plans: manual subscriptions (a plan at a contract price and currency for a term)
created, changed and ended by an admin, and their invoices recorded as paid.

Each change is audited in the same transaction as the write (`override_audit`), and a retry
with the same `request_id` (the invoice's `reference` for invoices) answers the first call
instead of writing again. Subscriptions go through `Store.save_subscription`, the path every
subscription write takes, so the account's revision, caches, watchers and outbound events follow.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from entitlements.admin.sales_rules import (
    CLOCK_SKEW,
    CREATE,
    END,
    INVOICE,
    MANUAL_ACTIONS,
    UPDATE,
    InvoiceRequest,
    TermsRequest,
    check_currency,
    check_key,
    check_reason,
    fingerprint,
    terms_json,
)
from entitlements.errors import (
    AlreadyExists,
    FailedPrecondition,
    IdempotencyKeyReused,
    InvalidArgument,
    NotFound,
)
from entitlements.policies import Catalog
from entitlements.service import EntitlementService
from entitlements.store.audit_repository import AuditStore
from entitlements.store.manual_repository import ManualInvoiceRecord, ManualStore
from entitlements.store.records import ENDED_STATUSES, AuditRecord, SubscriptionRecord

__all__ = [
    "MANUAL_ACTIONS",
    "InvoiceRequest",
    "ManualBilling",
    "ManualChange",
    "TermsRequest",
]


@dataclass(frozen=True, slots=True)
class ManualChange:
    """A manual subscription as the change left it, and the account's revision after it."""

    subscription: SubscriptionRecord
    revision: int


class ManualBilling:
    def __init__(
        self,
        entitlements: EntitlementService,
        manual: ManualStore,
        audit: AuditStore,
        catalog: Catalog,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._entitlements = entitlements
        self._store = entitlements.store
        self._manual = manual
        self._audit = audit
        self._catalog = catalog
        self._clock = clock

    # --- validation -------------------------------------------------------------------------

    def _plan(self, plan_id: str) -> str:
        if not plan_id:
            raise InvalidArgument("terms.plan_id", "is required")
        self._catalog.plan(plan_id, field="terms.plan_id")
        if plan_id == self._catalog.default_plan_id:
            raise InvalidArgument("terms.plan_id", f"the {plan_id!r} plan needs no subscription")
        return plan_id

    def _check_term(self, start: datetime | None, end: datetime | None, now: datetime) -> None:
        if start is not None and start > now + CLOCK_SKEW:
            raise InvalidArgument("terms.term_start", "must not be in the future")
        if end is not None:
            if start is not None and end <= start:
                raise InvalidArgument("terms.term_end", "must be after terms.term_start")
            if end <= now:
                raise InvalidArgument("terms.term_end", "must be in the future")

    # --- idempotency ------------------------------------------------------------------------

    async def _replay(self, request_id: str | None, digest: str) -> ManualChange | None:
        """The first answer of a retried request; IdempotencyKeyReused if the key was used for
        another request."""
        if request_id is None:
            return None
        entry = await self._audit.by_request(request_id)
        if entry is None:
            return None
        if entry.details.get("request_digest") != digest:
            raise IdempotencyKeyReused(
                f"request_id {request_id!r} was used for another request ({entry.action})"
            )
        sub = await self._manual.subscription(str(entry.details["subscription_id"]))
        if sub is None:  # pragma: no cover - subscriptions are never deleted
            raise NotFound(f"subscription {entry.details['subscription_id']!r} is gone")
        return ManualChange(subscription=sub, revision=int(entry.details.get("revision", 0)))

    async def _save(
        self,
        record: SubscriptionRecord,
        *,
        action: str,
        actor: str,
        reason: str,
        request_id: str | None,
        digest: str,
        old: SubscriptionRecord | None,
    ) -> ManualChange:
        audit = AuditRecord(
            account_id=record.account_id,
            actor=actor,
            action=action,
            request_id=request_id,
            created_at=self._clock(),
            details={
                "reason": reason,
                "subscription_id": record.id,
                "old": terms_json(old) if old is not None else None,
                "new": terms_json(record),
                "request_digest": digest,
            },
        )
        try:
            revision = await self._store.save_subscription(record, audit=audit)
        except AlreadyExists:
            # The same request_id committed meanwhile (a concurrent retry): answer as it did.
            replayed = await self._replay(request_id, digest)
            if replayed is None:
                raise
            return replayed
        ent = await self._entitlements.changed(record.account_id)
        stored = await self._manual.subscription(record.id)
        return ManualChange(subscription=stored or record, revision=max(revision, ent.revision))

    async def _manual_subscription(self, subscription_id: str) -> SubscriptionRecord:
        sub = await self._manual.subscription(subscription_id)
        if sub is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        if sub.payment_method != "manual":
            raise FailedPrecondition(
                f"subscription {subscription_id!r} is paid by {sub.payment_method}: only manual "
                "subscriptions are changed here"
            )
        return sub

    # --- the RPCs ---------------------------------------------------------------------------

    async def create(
        self, account_id: str, terms: TermsRequest, *, request_id: str, reason: str, actor: str
    ) -> ManualChange:
        """Start a manual subscription; the account's plan follows at once."""
        key = check_key(request_id, "request_id", required=True)
        plan_id = self._plan(terms.plan_id)
        if terms.price_cents <= 0:
            raise InvalidArgument("terms.price_cents", "must be more than zero")
        currency = check_currency(terms.currency, "terms.currency")
        if terms.interval is None:
            raise InvalidArgument("terms.interval", "is required (month or year)")
        now = self._clock()
        self._check_term(terms.term_start, terms.term_end, now)
        check_reason(reason)
        digest = fingerprint(CREATE, account_id, terms, reason)
        replayed = await self._replay(key, digest)
        if replayed is not None:
            return replayed
        # Derived from the account and the key: a concurrent retry writes the same row, never
        # a second subscription.
        sub_id = "ms_" + hashlib.sha256(f"{account_id}\0{key}".encode()).hexdigest()[:24]
        snapshot = await self._store.get_account_snapshot(account_id, now=now)
        current = snapshot.subscription if snapshot is not None else None
        if (
            current is not None
            and current.payment_method == "manual"
            and current.status not in ENDED_STATUSES
            and (current.current_period_end is None or current.current_period_end > now)
        ):
            if current.id == sub_id:
                # A concurrent retry of this very request committed since the look-up above
                # (its row and its audit entry are one transaction): answer as it did.
                replayed = await self._replay(key, digest)
                if replayed is not None:
                    return replayed
            raise FailedPrecondition(
                f"account {account_id!r} already has the manual subscription {current.id!r}: "
                "change it with UpdateManualSubscription or end it first"
            )
        record = SubscriptionRecord(
            id=sub_id,
            account_id=account_id,
            plan_id=plan_id,
            status="active",
            interval=terms.interval,
            payment_method="manual",
            current_period_start=terms.term_start or now,
            current_period_end=terms.term_end,
            price_cents=terms.price_cents,
            currency=currency,
            created_at=now,
        )
        return await self._save(
            record,
            action=CREATE,
            actor=actor,
            reason=reason,
            request_id=key,
            digest=digest,
            old=None,
        )

    async def update(
        self,
        subscription_id: str,
        terms: TermsRequest,
        *,
        request_id: str = "",
        reason: str,
        actor: str,
    ) -> ManualChange:
        """Change a live manual subscription's terms; fields not given keep their value."""
        key = check_key(request_id, "request_id", required=False)
        if terms.plan_id:
            self._plan(terms.plan_id)
        if terms.price_cents < 0:
            raise InvalidArgument("terms.price_cents", "must be more than zero")
        currency = check_currency(terms.currency, "terms.currency") if terms.currency else None
        check_reason(reason)
        digest = fingerprint(UPDATE, subscription_id, terms, reason)
        replayed = await self._replay(key, digest)
        if replayed is not None:
            return replayed
        old = await self._manual_subscription(subscription_id)
        if old.status in ENDED_STATUSES:
            raise FailedPrecondition(f"subscription {subscription_id!r} has ended")
        now = self._clock()
        new = replace(
            old,
            plan_id=terms.plan_id or old.plan_id,
            price_cents=terms.price_cents or old.price_cents,
            currency=currency or old.currency,
            interval=terms.interval or old.interval,
            current_period_start=terms.term_start or old.current_period_start,
            current_period_end=terms.term_end or old.current_period_end,
        )
        self._check_term(
            new.current_period_start if terms.term_start else None,
            new.current_period_end if terms.term_end else None,
            now,
        )
        if (
            new.current_period_start is not None
            and new.current_period_end is not None
            and new.current_period_end <= new.current_period_start
        ):
            raise InvalidArgument("terms.term_end", "must be after terms.term_start")
        return await self._save(
            new, action=UPDATE, actor=actor, reason=reason, request_id=key, digest=digest, old=old
        )

    async def end(
        self, subscription_id: str, *, request_id: str = "", reason: str, actor: str
    ) -> ManualChange:
        """End a manual subscription now."""
        key = check_key(request_id, "request_id", required=False)
        check_reason(reason)
        digest = fingerprint(END, subscription_id, reason)
        replayed = await self._replay(key, digest)
        if replayed is not None:
            return replayed
        old = await self._manual_subscription(subscription_id)
        if old.status in ENDED_STATUSES:
            replayed = await self._replay(key, digest)
            if replayed is not None:  # a concurrent retry of this request ended it meanwhile
                return replayed
            raise FailedPrecondition(f"subscription {subscription_id!r} has ended already")
        now = self._clock()
        new = replace(old, status="canceled", canceled_at=now, ended_at=now)
        return await self._save(
            new, action=END, actor=actor, reason=reason, request_id=key, digest=digest, old=old
        )

    async def record_invoice(
        self, request: InvoiceRequest, *, actor: str
    ) -> tuple[ManualInvoiceRecord, bool]:
        """Record a manual subscription's invoice as paid, once per reference: (the invoice,
        True) when recorded now, (the first record, False) for a retry."""
        if request.amount_cents <= 0:
            raise InvalidArgument("amount_cents", "must be more than zero")
        currency = check_currency(request.currency, "currency")
        reference = check_key(request.reference, "reference", required=True)
        assert reference is not None
        now = self._clock()
        if request.paid_at is not None and request.paid_at > now + CLOCK_SKEW:
            raise InvalidArgument("paid_at", "must not be in the future")
        check_reason(request.reason)
        sub = await self._manual_subscription(request.subscription_id)
        invoice = ManualInvoiceRecord(
            id="mi_" + secrets.token_hex(10),
            reference=reference,
            account_id=sub.account_id,
            subscription_id=sub.id,
            amount_cents=request.amount_cents,
            currency=currency,
            paid_at=request.paid_at or now,
            recorded_by=actor,
            reason=request.reason,
            created_at=now,
        )
        audit = AuditRecord(
            account_id=sub.account_id,
            actor=actor,
            action=INVOICE,
            created_at=now,
            details={
                "reason": request.reason,
                "invoice_id": invoice.id,
                "subscription_id": sub.id,
                "reference": reference,
                "amount_cents": invoice.amount_cents,
                "currency": currency,
                "paid_at": invoice.paid_at.isoformat(),
            },
        )
        stored, created = await self._manual.record_invoice(invoice, audit)
        if not created and not _same_invoice(stored, invoice, paid_at_given=request.paid_at):
            raise IdempotencyKeyReused(
                f"reference {reference!r} was recorded with other details (invoice {stored.id})"
            )
        return stored, created


def _same_invoice(
    stored: ManualInvoiceRecord, asked: ManualInvoiceRecord, *, paid_at_given: datetime | None
) -> bool:
    if paid_at_given is None:  # "now" on each call: any stored time matches a retry
        asked = replace(asked, paid_at=stored.paid_at)
    return stored.same_terms(replace(asked, paid_at=asked.paid_at.astimezone(UTC)))
