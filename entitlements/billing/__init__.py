"""Card billing through Stripe: commands, the webhook events and reconciliation of the mirror."""

from __future__ import annotations

from adapters.stripe.prices import PAID_PLANS, Interval
from entitlements.billing.billing import Billing, CheckoutRequest
from entitlements.billing.events import HANDLED_EVENTS, InvalidEvent, StripeEvents, WebhookOutcome
from entitlements.billing.reconcile import ReconcileSummary, reconcile

__all__ = [
    "HANDLED_EVENTS",
    "PAID_PLANS",
    "Billing",
    "CheckoutRequest",
    "Interval",
    "InvalidEvent",
    "ReconcileSummary",
    "StripeEvents",
    "WebhookOutcome",
    "reconcile",
]
