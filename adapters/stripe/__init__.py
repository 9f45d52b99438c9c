"""The Stripe adapter: settings, the price book and the gateway over the official SDK."""

from __future__ import annotations

from adapters.stripe.config import StripeConfigError, StripeSettings
from adapters.stripe.gateway import StripeGateway, translate_stripe_errors
from adapters.stripe.objects import CheckoutSession, StripeInvoice, StripeSubscription, from_unix
from adapters.stripe.prices import INTERVALS, PAID_PLANS, Interval, PriceBook

__all__ = [
    "INTERVALS",
    "PAID_PLANS",
    "CheckoutSession",
    "Interval",
    "PriceBook",
    "StripeConfigError",
    "StripeGateway",
    "StripeInvoice",
    "StripeSettings",
    "StripeSubscription",
    "from_unix",
    "translate_stripe_errors",
]
