"""Stripe settings from the environment, and the one price map."""

from __future__ import annotations

import pytest

from adapters.stripe import PriceBook, StripeConfigError, StripeSettings
from entitlements.config import ConfigError, Settings
from entitlements.errors import InvalidArgument, UnknownPrice

BASE = {
    "STRIPE_SECRET_KEY": "sk_test_1",
    "STRIPE_STARTER_MONTHLY_PRICE_ID": "price_s_m",
    "STRIPE_PRO_YEARLY_PRICE_ID": "price_p_y",
}


def test_settings_read_the_seeds_names_and_several_webhook_secrets() -> None:
    settings = StripeSettings.from_env(
        {
            **BASE,
            "STRIPE_WEBHOOK_SECRET": "whsec_a, whsec_b,",
            "STRIPE_API_BASE": "http://127.0.0.1:12111/",
        }
    )

    assert settings.configured
    assert settings.webhook_secrets == ("whsec_a", "whsec_b")
    assert settings.api_base == "http://127.0.0.1:12111"
    assert settings.prices.plan_for("price_p_y") == ("pro", "year")
    assert settings.prices.price_for("starter", "month") == "price_s_m"
    assert "sk_test_1" not in repr(settings)


def test_stripe_is_off_by_default() -> None:
    assert not Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1"}).stripe.configured


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STRIPE_SECRET_KEY": "sk_test_1"}, "PRICE_ID"),
        ({**BASE, "STRIPE_API_BASE": "localhost:12111"}, "STRIPE_API_BASE"),
        ({**BASE, "STRIPE_PRO_MONTHLY_PRICE_ID": "price_s_m"}, "both"),
        ({**BASE, "STRIPE_MAX_NETWORK_RETRIES": "-1"}, "STRIPE_MAX_NETWORK_RETRIES"),
    ],
)
def test_bad_stripe_settings_are_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(StripeConfigError, match=message):
        StripeSettings.from_env(env)
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1", **env})


def test_an_unknown_price_is_an_error_never_a_guess() -> None:
    book = PriceBook({("starter", "month"): "price_s_m"})

    with pytest.raises(UnknownPrice) as caught:
        book.plan_for("price_other")

    assert caught.value.price_id == "price_other"


@pytest.mark.parametrize(("plan", "interval"), [("enterprise", "month"), ("pro", "month")])
def test_a_plan_without_a_configured_price_cannot_be_bought(plan: str, interval: str) -> None:
    book = PriceBook({("starter", "month"): "price_s_m"})

    with pytest.raises(InvalidArgument) as caught:
        book.price_for(plan, interval)  # type: ignore[arg-type]

    assert caught.value.field == "plan_id"
