"""StripeGateway: the only code that calls Stripe, through the official SDK's async client.

Every write carries an idempotency key; Stripe's errors become domain errors:
connection errors, rate limits and 5xx -> Unavailable; an idempotency key reused with other
parameters -> IdempotencyKeyReused; a rejected parameter -> InvalidArgument (naming the
request field it came from) or FailedPrecondition.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import stripe

from adapters.stripe.config import StripeSettings
from adapters.stripe.objects import CheckoutSession, StripeSubscription
from adapters.stripe.reachability import ObservedHTTPClient, Reachability, StripeState
from entitlements.errors import (
    FailedPrecondition,
    IdempotencyKeyReused,
    InvalidArgument,
    NotFound,
    Unavailable,
)

__all__ = ["StripeGateway"]

log = logging.getLogger(__name__)


def _plain(obj: Any) -> dict[str, Any]:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        result = to_dict(recursive=True)
        if isinstance(result, dict):
            return result
    return dict(obj)


@contextmanager
def translate_stripe_errors(fields: Mapping[str, str] | None = None) -> Iterator[None]:
    """Re-raise the SDK's errors as domain errors; `fields` maps Stripe params to request
    fields, so a parameter Stripe refuses is named as the caller knows it."""
    try:
        yield
    except stripe.IdempotencyError as exc:
        raise IdempotencyKeyReused(
            f"Stripe refused the idempotency key: it was used with other parameters "
            f"({exc.user_message or exc})"
        ) from exc
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise Unavailable(f"Stripe unavailable: {type(exc).__name__}: {exc}") from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        log.error("Stripe refused the configured API key: %s", exc)
        raise Unavailable("Stripe refused this service's API key; see the server log") from exc
    except stripe.InvalidRequestError as exc:
        message = exc.user_message or str(exc)
        if exc.code == "resource_missing" and exc.http_status == 404:
            raise NotFound(f"Stripe: {message}") from exc
        field = (fields or {}).get(exc.param or "")
        if field is not None:
            raise InvalidArgument(field, f"Stripe refused it: {message}") from exc
        raise FailedPrecondition(f"Stripe refused the request: {message}") from exc
    except stripe.CardError as exc:
        raise FailedPrecondition(f"Stripe: {exc.user_message or exc}") from exc
    except stripe.StripeError as exc:
        if exc.http_status is None or exc.http_status >= 500 or exc.http_status == 409:
            raise Unavailable(f"Stripe unavailable: {type(exc).__name__}: {exc}") from exc
        raise FailedPrecondition(f"Stripe refused the request: {exc}") from exc


class StripeGateway:
    """Stripe's API as this service uses it; values out, domain errors on failure."""

    def __init__(self, settings: StripeSettings) -> None:
        if not settings.configured:
            raise ValueError("Stripe is not configured (STRIPE_SECRET_KEY)")
        #: Whether Stripe answered this replica's last exchanges (readiness reports it apart).
        self.reachability = Reachability(settings.probe_interval_seconds)
        self._http = ObservedHTTPClient(self.reachability, timeout=settings.timeout_seconds)
        base: dict[str, str] = {}
        if settings.api_base:
            base["api"] = settings.api_base
        self._client = stripe.StripeClient(
            settings.secret_key,
            base_addresses=base,  # type: ignore[arg-type]
            http_client=self._http,
            max_network_retries=settings.max_network_retries,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def probe_reachability(self) -> StripeState:
        """Stripe's reachability; asks Stripe (one GET /v1/balance) only when no exchange was
        heard for the probe interval."""
        return await self.reachability.probe(self._client.v1.balance.retrieve_async)

    async def create_checkout_session(
        self,
        *,
        account_id: str,
        price_id: str,
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
        customer_id: str | None = None,
        customer_email: str | None = None,
        user_id: str | None = None,
    ) -> CheckoutSession:
        """A Checkout session in subscription mode that links back to `account_id`."""
        metadata = {"account_id": account_id}
        if user_id:
            metadata["user_id"] = user_id
        params: dict[str, Any] = {
            "mode": "subscription",
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": account_id,
            "metadata": metadata,
            # So subscription events can be linked to the account even before checkout's own.
            "subscription_data": {"metadata": metadata},
        }
        if customer_id:
            params["customer"] = customer_id
        elif customer_email:
            params["customer_email"] = customer_email
        with translate_stripe_errors(
            {
                "success_url": "success_url",
                "cancel_url": "cancel_url",
                "customer_email": "user_email",
                "line_items[0][price]": "plan_id",
            }
        ):
            session = await self._client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        return CheckoutSession.parse(_plain(session))

    async def create_portal_session(
        self, *, customer_id: str, return_url: str, idempotency_key: str
    ) -> str:
        """The URL of a customer portal session."""
        with translate_stripe_errors({"return_url": "return_url"}):
            session = await self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer_id, "return_url": return_url},
                {"idempotency_key": idempotency_key},
            )
        return str(session.url)

    async def retrieve_subscription(self, subscription_id: str) -> StripeSubscription:
        """What Stripe says about the subscription now."""
        with translate_stripe_errors():
            sub = await self._client.v1.subscriptions.retrieve_async(subscription_id)
        return StripeSubscription.parse(_plain(sub))

    async def retrieve_checkout_session(self, session_id: str) -> CheckoutSession:
        with translate_stripe_errors():
            session = await self._client.v1.checkout.sessions.retrieve_async(session_id)
        return CheckoutSession.parse(_plain(session))

    async def change_price(
        self, subscription_id: str, *, item_id: str, price_id: str, idempotency_key: str
    ) -> StripeSubscription:
        """Move the subscription's item to `price_id`, prorating the difference."""
        with translate_stripe_errors({"items[0][price]": "plan_id"}):
            sub = await self._client.v1.subscriptions.update_async(
                subscription_id,
                {
                    "items": [{"id": item_id, "price": price_id}],
                    "proration_behavior": "create_prorations",
                },
                {"idempotency_key": idempotency_key},
            )
        return StripeSubscription.parse(_plain(sub))

    async def set_cancel_at_period_end(
        self, subscription_id: str, cancel: bool, *, idempotency_key: str
    ) -> StripeSubscription:
        with translate_stripe_errors():
            sub = await self._client.v1.subscriptions.update_async(
                subscription_id,
                {"cancel_at_period_end": cancel},
                {"idempotency_key": idempotency_key},
            )
        return StripeSubscription.parse(_plain(sub))

    async def cancel_now(self, subscription_id: str, *, idempotency_key: str) -> StripeSubscription:
        with translate_stripe_errors():
            sub = await self._client.v1.subscriptions.cancel_async(
                subscription_id, None, {"idempotency_key": idempotency_key}
            )
        return StripeSubscription.parse(_plain(sub))

    async def list_subscriptions(
        self, *, page_size: int = 100
    ) -> AsyncIterator[StripeSubscription]:
        """Every subscription of the account, whatever its status, page by page."""
        with translate_stripe_errors():
            page = await self._client.v1.subscriptions.list_async(
                {"status": "all", "limit": page_size}
            )
            async for sub in page.auto_paging_iter():
                yield StripeSubscription.parse(_plain(sub))
