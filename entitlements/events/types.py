"""The event catalogue (docs/events.md) and the building of events and their JSON bodies; pure."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from entitlements.policies.thresholds import UPGRADE_PROMPT_PERCENT, WARNING_PERCENT, UsageLevel

__all__ = [
    "EVENT_TYPES",
    "THRESHOLD_LEVELS",
    "Event",
    "iso",
    "new_event",
    "renewal_upcoming",
    "threshold_crossed",
]

#: Every event type of the catalogue; the names are a published API.
EVENT_TYPES = (
    "usage.threshold_crossed",
    "subscription.activated",
    "subscription.changed",
    "subscription.canceled",
    "subscription.past_due",
    "subscription.renewal_upcoming",
    "payment.failed",
    "crypto_payment.confirmed",
    "crypto_payment.underpaid",
    "crypto_payment.reversed",
    "token_access.granted",
    "token_access.revoked",
)

THRESHOLD_LEVELS = (75, 90, 100)

#: The usage levels that are thresholds, as the percentage an event reports.
_PERCENT = {
    UsageLevel.WARNING: WARNING_PERCENT,
    UsageLevel.UPGRADE_PROMPT: UPGRADE_PROMPT_PERCENT,
    UsageLevel.EXCEEDED: 100,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One event: `body` is the JSON sent (and signed) as is."""

    id: str
    type: str
    account_id: str
    occurred_at_ms: int
    data: dict[str, Any]
    #: Makes the event unique among all events (None: no such key); a second append is a no-op.
    dedup_key: str | None = None

    @property
    def body(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "type": self.type,
                "account_id": self.account_id,
                "timestamp": _iso(self.occurred_at_ms),
                "data": self.data,
            },
            separators=(",", ":"),
            sort_keys=True,
        )


def new_event(
    type: str,
    account_id: str,
    data: dict[str, Any],
    *,
    now: datetime,
    dedup_key: str | None = None,
) -> Event:
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    return Event(
        id=f"evt_{uuid.uuid4().hex}",
        type=type,
        account_id=account_id,
        occurred_at_ms=int(now.timestamp() * 1000),
        data=data,
        dedup_key=dedup_key,
    )


def threshold_crossed(
    account_id: str, metric: str, period: str, level: int, total: int, limit: int, *, now: datetime
) -> Event:
    """`usage.threshold_crossed`: once per account, metric, period and level (a `UsageLevel`,
    reported as its percentage: 75, 90 or 100)."""
    level = _PERCENT[UsageLevel(level)]
    return new_event(
        "usage.threshold_crossed",
        account_id,
        {"metric": metric, "period": period, "level": level, "total": total, "limit": limit},
        now=now,
        dedup_key=f"usage.threshold_crossed:{account_id}:{metric}:{period}:{level}",
    )


def renewal_upcoming(
    account_id: str,
    subscription_id: str,
    plan_id: str,
    interval: str,
    period_end: datetime,
    days_before: float,
    *,
    now: datetime,
) -> Event:
    """`subscription.renewal_upcoming`: once per subscription and period."""
    end_ms = int(period_end.timestamp() * 1000)
    return new_event(
        "subscription.renewal_upcoming",
        account_id,
        {
            "subscription_id": subscription_id,
            "plan_id": plan_id,
            "interval": interval,
            "current_period_end": _iso(end_ms),
            "days_before": days_before,
        },
        now=now,
        dedup_key=f"subscription.renewal_upcoming:{subscription_id}:{end_ms}",
    )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def iso(value: datetime) -> str:
    """A time as the events write it: ISO 8601 in UTC, milliseconds."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds")
