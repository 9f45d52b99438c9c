"""The HTTP shim for webhooks (Stripe's): verify, record once, answer."""

from __future__ import annotations

from adapters.webhooks.server import StripeWebhookConfig, WebhookServer, create_app
from adapters.webhooks.signature import BadSignature, verify_signature

__all__ = ["BadSignature", "StripeWebhookConfig", "WebhookServer", "create_app", "verify_signature"]
