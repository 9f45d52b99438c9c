"""Crypto settings from the environment: defaults from the reference table, overrides, errors."""

from __future__ import annotations

from decimal import Decimal

import pytest

from entitlements.config import ConfigError, Settings
from entitlements.crypto.config import DEFAULT_TOKENS, CryptoConfigError, CryptoSettings

WALLET = "0x" + "ab" * 20


def test_defaults_hold_the_mainnet_stablecoins_and_depths() -> None:
    settings = CryptoSettings.from_env({})
    assert settings.pay_to_address is None
    usdt_bsc = settings.token("bsc", "USDT")
    assert usdt_bsc is not None and usdt_bsc.decimals == 18
    assert settings.token("local", "USDC") is None  # a local chain deploys its own
    assert settings.depth("local") == 2 and settings.depth("ethereum") == 64
    assert settings.quote_ttl_seconds == 900


def test_environment_overrides_tokens_depths_price_and_wallet() -> None:
    settings = CryptoSettings.from_env(
        {
            "NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS": WALLET,
            "ENTITLEMENTS_TOKEN_LOCAL_USDC": "0x" + "11" * 20,
            "ENTITLEMENTS_TOKEN_ETHEREUM_USDC": DEFAULT_TOKENS[("ethereum", "USDC")].address,
            "ENTITLEMENTS_TOKEN_POLYGON_AMOY_USDT": "0x" + "22" * 20,
            "ENTITLEMENTS_CONFIRMATIONS_POLYGON": "300",
            "ENTITLEMENTS_ETH_USD_PRICE": "3012.55",
            "ENTITLEMENTS_CRYPTO_QUOTE_TTL_SECONDS": "600",
        }
    )
    assert settings.pay_to_address is not None
    assert settings.pay_to_address.lower() == WALLET
    local = settings.token("local", "USDC")
    assert local is not None and local.decimals is None  # read from the token
    ethereum = settings.token("ethereum", "USDC")
    assert ethereum is not None and ethereum.decimals == 6
    assert settings.token("polygon-amoy", "USDT") is not None
    assert settings.depth("polygon") == 300
    assert settings.eth_usd_price == Decimal("3012.55")
    assert settings.quote_ttl_seconds == 600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS", "0x1234"),
        ("ENTITLEMENTS_TOKEN_BSC_USDT", "usdt"),
        ("ENTITLEMENTS_CONFIRMATIONS_LOCAL", "0"),
        ("ENTITLEMENTS_CONFIRMATIONS_LOCAL", "2.5"),
        ("ENTITLEMENTS_ETH_USD_PRICE", "-1"),
        ("ENTITLEMENTS_ETH_USD_PRICE", "NaN"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(CryptoConfigError, match=name):
        CryptoSettings.from_env({name: value})
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1", name: value})


def test_settings_carry_the_crypto_settings() -> None:
    settings = Settings.from_env(
        {"ENTITLEMENTS_DEV_MODE": "1", "NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS": WALLET}
    )
    assert settings.crypto.pay_to_address is not None
