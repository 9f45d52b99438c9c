"""Stripe settings read from the environment once, at start (the seed's variable names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from adapters.stripe.prices import INTERVALS, PAID_PLANS, PriceBook

__all__ = ["StripeConfigError", "StripeSettings"]


class StripeConfigError(ValueError):
    """The Stripe configuration is invalid; the message names the variable."""


@dataclass(frozen=True)
class StripeSettings:
    """How to reach Stripe and what its prices and webhook secrets are.

    Not configured (the default) when STRIPE_SECRET_KEY is unset: BillingService then answers
    UNIMPLEMENTED and the webhook endpoint 503.
    """

    secret_key: str = ""
    #: Endpoint secrets (whsec_...); several during a rotation, any one may sign.
    webhook_secrets: tuple[str, ...] = ()
    prices: PriceBook = field(default_factory=PriceBook)
    #: A Stripe-compatible server (e.g. a test double); None means api.stripe.com.
    api_base: str | None = None
    #: Seconds a webhook's timestamp may be away from now, in the past or the future.
    webhook_tolerance_seconds: int = 300
    #: Retries of a failed request by the SDK (connection errors, 409, 5xx), with backoff.
    max_network_retries: int = 2
    #: Seconds before a request to Stripe is given up.
    timeout_seconds: float = 30.0
    #: Stripe's reachability (/readyz?verbose, metrics) comes from the billing calls; when none
    #: was made for this many seconds, one probe (GET /v1/balance) asks. 0: never probe.
    probe_interval_seconds: int = 60

    @property
    def configured(self) -> bool:
        return bool(self.secret_key)

    def __repr__(self) -> str:  # never print the secrets
        return (
            f"StripeSettings(configured={self.configured}, api_base={self.api_base!r}, "
            f"webhook_secrets={len(self.webhook_secrets)}, prices={len(self.prices)})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StripeSettings:
        secret_key = (env.get("STRIPE_SECRET_KEY") or "").strip()
        secrets = tuple(
            s.strip() for s in (env.get("STRIPE_WEBHOOK_SECRET") or "").split(",") if s.strip()
        )
        prices: dict[tuple[str, str], str] = {}
        for plan in PAID_PLANS:
            for interval, word in INTERVALS.items():
                name = f"STRIPE_{plan.upper()}_{word}_PRICE_ID"
                value = (env.get(name) or "").strip()
                if value:
                    prices[(plan, interval)] = value
        try:
            book = PriceBook(prices)
        except ValueError as exc:
            raise StripeConfigError(str(exc)) from exc
        api_base = (env.get("STRIPE_API_BASE") or "").strip().rstrip("/") or None
        if api_base is not None:
            parsed = urlparse(api_base)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise StripeConfigError(
                    f"STRIPE_API_BASE: expected an http(s) URL, got {api_base!r}"
                )
        retries = _int(env, "STRIPE_MAX_NETWORK_RETRIES", cls.max_network_retries)
        probe = _int(env, "STRIPE_PROBE_INTERVAL_SECONDS", cls.probe_interval_seconds)
        if secret_key and not book:
            raise StripeConfigError(
                "STRIPE_SECRET_KEY is set but no STRIPE_<PLAN>_<INTERVAL>_PRICE_ID is: "
                "checkout needs at least one price"
            )
        return cls(
            secret_key=secret_key,
            webhook_secrets=secrets,
            prices=book,
            api_base=api_base,
            max_network_retries=retries,
            probe_interval_seconds=probe,
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StripeConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < 0:
        raise StripeConfigError(f"{name}: must not be negative, got {raw!r}")
    return value
