"""Receiving the service's outbound events: verify the Standard Webhooks signature and parse
the body into a typed `Event` (catalogue: docs/events.md).

    event = verify_event(body, request.headers, secret="whsec_...")
    if event.type == "usage.threshold_crossed":
        crossed = ThresholdCrossed.of(event)

Receivers may use the `standardwebhooks` package instead; this needs nothing but the stdlib.
An event can arrive more than once: drop a duplicate by `event.id` (the `webhook-id` header).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Event", "EventVerificationError", "RenewalUpcoming", "ThresholdCrossed", "verify_event"]

#: A timestamp further than this from now is refused (replays of old captured requests).
DEFAULT_TOLERANCE_SECONDS = 300


class EventVerificationError(ValueError):
    """The request is not a valid event signed with the given secret (missing or bad headers,
    a signature that does not match, a timestamp outside the tolerance, a malformed body)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event: `id` is also the `webhook-id` header, the same on every delivery of it."""

    id: str
    type: str
    account_id: str
    timestamp: datetime
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ThresholdCrossed:
    """`usage.threshold_crossed`: a metric reached `level` % (75, 90 or 100) of its limit."""

    account_id: str
    metric: str
    period: str
    level: int
    total: int
    limit: int

    @classmethod
    def of(cls, event: Event) -> ThresholdCrossed:
        d = _expect(event, "usage.threshold_crossed")
        return cls(event.account_id, d["metric"], d["period"], d["level"], d["total"], d["limit"])


@dataclass(frozen=True, slots=True)
class RenewalUpcoming:
    """`subscription.renewal_upcoming`: the subscription renews at `current_period_end`."""

    account_id: str
    subscription_id: str
    plan_id: str
    interval: str
    current_period_end: datetime

    @classmethod
    def of(cls, event: Event) -> RenewalUpcoming:
        d = _expect(event, "subscription.renewal_upcoming")
        return cls(
            event.account_id,
            d["subscription_id"],
            d["plan_id"],
            d["interval"],
            datetime.fromisoformat(d["current_period_end"]),
        )


def _expect(event: Event, type_: str) -> Mapping[str, Any]:
    if event.type != type_:
        raise ValueError(f"not a {type_} event: {event.type}")
    return event.data


def verify_event(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Event:
    """The event in `body` if `headers` carry a valid signature of it by `secret`
    (``whsec_<base64>``); EventVerificationError otherwise."""
    text = body.decode() if isinstance(body, bytes) else body
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise EventVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent_at = int(stamp)
    except ValueError:
        raise EventVerificationError("webhook-timestamp is not a number") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        raise EventVerificationError("webhook-timestamp is outside the tolerance")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise EventVerificationError("the secret is not whsec_<base64>") from None
    expected = hmac.new(key, f"{msg_id}.{stamp}.{text}".encode(), hashlib.sha256).digest()
    for versioned in signatures.split():
        version, _, signature = versioned.partition(",")
        try:
            given = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        if version == "v1" and hmac.compare_digest(expected, given):
            break
    else:
        raise EventVerificationError("no matching signature")
    try:
        parsed = json.loads(text)
        event = Event(
            id=parsed["id"],
            type=parsed["type"],
            account_id=parsed["account_id"],
            timestamp=datetime.fromisoformat(parsed["timestamp"]),
            data=parsed["data"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise EventVerificationError(f"the body is not an event: {exc}") from None
    if event.id != msg_id:
        raise EventVerificationError("webhook-id does not match the event's id")
    return event
