"""A local Stripe-shaped server and signed webhook events, for tests that use the real SDK."""

from __future__ import annotations

from tests.stripe_double.server import StripeDouble
from tests.stripe_double.webhooks import WebhookSender, event, sign

__all__ = ["StripeDouble", "WebhookSender", "event", "sign"]
