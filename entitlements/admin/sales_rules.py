"""The rules of sales-led billing requests, pure: the request values, field checks that name
the offending field, the audit actions and the fingerprint that tells a retry from another
request reusing its idempotency key."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from entitlements.errors import InvalidArgument
from entitlements.store.records import SubscriptionInterval, SubscriptionRecord

__all__ = [
    "CLOCK_SKEW",
    "CREATE",
    "END",
    "INVOICE",
    "MANUAL_ACTIONS",
    "UPDATE",
    "InvoiceRequest",
    "TermsRequest",
    "check_currency",
    "check_key",
    "check_reason",
    "fingerprint",
    "terms_json",
]

MAX_REASON_LENGTH = 2000
MAX_KEY_LENGTH = 200
#: How far ahead of the server's clock a term start or payment time may be (clock skew).
CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_CURRENCY = "usd"
_CURRENCY = re.compile(r"[a-z]{3}")

CREATE = "create_manual_subscription"
UPDATE = "update_manual_subscription"
END = "end_manual_subscription"
INVOICE = "record_manual_invoice"
MANUAL_ACTIONS = (CREATE, UPDATE, END, INVOICE)


@dataclass(frozen=True, slots=True)
class TermsRequest:
    """A contract's terms as the caller sent them; empty values mean "not given"."""

    plan_id: str = ""
    price_cents: int = 0
    currency: str = ""
    interval: SubscriptionInterval | None = None
    term_start: datetime | None = None
    term_end: datetime | None = None


@dataclass(frozen=True, slots=True)
class InvoiceRequest:
    subscription_id: str
    amount_cents: int
    currency: str = ""
    reference: str = ""
    paid_at: datetime | None = None
    reason: str = ""


def terms_json(sub: SubscriptionRecord) -> dict[str, Any]:
    return {
        "plan_id": sub.plan_id,
        "price_cents": sub.price_cents,
        "currency": sub.currency,
        "interval": sub.interval,
        "term_start": _iso(sub.current_period_start),
        "term_end": _iso(sub.current_period_end),
        "status": sub.status,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def fingerprint(action: str, *values: object) -> str:
    """What a request asked, to tell a retry from another request reusing its key."""
    text = json.dumps([action, *values], default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def check_reason(reason: str) -> str:
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidArgument("reason", f"must be at most {MAX_REASON_LENGTH} characters")
    return reason


def check_currency(value: str, field: str) -> str:
    currency = (value or DEFAULT_CURRENCY).lower()
    if not _CURRENCY.fullmatch(currency):
        raise InvalidArgument(field, f"must be an ISO 4217 code such as 'usd', got {value!r}")
    return currency


def check_key(value: str, field: str, *, required: bool) -> str | None:
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return None
    if len(value) > MAX_KEY_LENGTH or not value.isprintable() or value.strip() != value:
        raise InvalidArgument(
            field, f"must be at most {MAX_KEY_LENGTH} printable characters, no outer spaces"
        )
    return value
