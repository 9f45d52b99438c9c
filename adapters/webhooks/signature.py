"""Checking a `Stripe-Signature` header over the raw body, with the official SDK.

The SDK checks the HMAC of "{t}.{raw body}" against every v1 signature in the header (several
during a secret rotation) and refuses timestamps older than the tolerance; it does not refuse
timestamps in the future, so that is checked here too. Several endpoint secrets may be
configured (a rotation on our side): any one of them may have signed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import stripe

__all__ = ["BadSignature", "verify_signature"]


class BadSignature(ValueError):
    """The request is not signed by Stripe with a configured secret, or not recently."""


def verify_signature(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> None:
    """Return if `payload` carries a valid, recent signature; raise BadSignature if not."""
    if not header:
        raise BadSignature("no Stripe-Signature header")
    if not secrets:
        raise BadSignature("no webhook secret is configured")
    timestamp = _timestamp(header)
    current = time.time() if now is None else now
    if timestamp > current + tolerance_seconds:
        raise BadSignature(f"timestamp {timestamp} is in the future")
    reasons: list[str] = []
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance_seconds)
        except stripe.SignatureVerificationError as exc:
            reasons.append(str(exc.user_message or exc))
        except UnicodeDecodeError as exc:
            raise BadSignature("the body is not UTF-8") from exc
        else:
            return
    raise BadSignature(reasons[-1] if reasons else "no valid signature")


def _timestamp(header: str) -> int:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise BadSignature("the Stripe-Signature header has no timestamp")
