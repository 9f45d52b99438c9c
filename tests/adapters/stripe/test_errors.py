"""Stripe's errors become domain errors (and so gRPC statuses) in one place."""

from __future__ import annotations

import pytest
import stripe

from adapters.stripe import translate_stripe_errors
from entitlements.errors import (
    EntitlementsError,
    FailedPrecondition,
    IdempotencyKeyReused,
    InvalidArgument,
    NotFound,
    Unavailable,
)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (stripe.APIConnectionError("refused"), Unavailable),
        (stripe.RateLimitError("slow down", http_status=429), Unavailable),
        (stripe.APIError("boom", http_status=500), Unavailable),
        (stripe.APIError("conflict", http_status=409), Unavailable),
        (stripe.AuthenticationError("bad key", http_status=401), Unavailable),
        (stripe.IdempotencyError("other params", http_status=400), IdempotencyKeyReused),
        (stripe.InvalidRequestError("no such price", "price", http_status=400), FailedPrecondition),
        (
            stripe.InvalidRequestError("missing", "id", code="resource_missing", http_status=404),
            NotFound,
        ),
        (
            stripe.CardError("declined", "card", "card_declined", http_status=402),
            FailedPrecondition,
        ),
    ],
)
def test_stripe_errors_map_to_domain_errors(
    error: stripe.StripeError, expected: type[EntitlementsError]
) -> None:
    with pytest.raises(expected), translate_stripe_errors():
        raise error


def test_a_refused_parameter_is_named_as_the_caller_knows_it() -> None:
    with (
        pytest.raises(InvalidArgument) as caught,
        translate_stripe_errors({"success_url": "success_url"}),
    ):
        raise stripe.InvalidRequestError("Not a valid URL", "success_url", http_status=400)
    assert caught.value.field == "success_url"
