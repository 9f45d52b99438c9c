"""Crypto payment settings: receiving address, token contracts, confirmation depths, ETH price
source and timings, read once from the environment (see docs/crypto-payments.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from eth_utils.address import is_address, to_checksum_address

from adapters.chains.config import NETWORKS, env_number

__all__ = [
    "CURRENCIES",
    "DEFAULT_CONFIRMATIONS",
    "DEFAULT_ETH_USD_FEEDS",
    "DEFAULT_TOKENS",
    "ETH_NETWORKS",
    "CryptoConfigError",
    "CryptoSettings",
    "TokenConfig",
]

CURRENCIES = ("ETH", "USDC", "USDT")

#: Networks whose native coin is ETH: the only ones where "ETH" can be paid.
ETH_NETWORKS = frozenset({"ethereum", "arbitrum", "sepolia", "arbitrum-sepolia", "local"})


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """A stablecoin contract on a network; `decimals` is the expected value (checked against
    the token's own `decimals()`), None when unknown (a configured test token)."""

    address: str
    decimals: int | None = None


#: Mainnet stablecoins (shared reference chains.md): (network, currency) -> contract.
DEFAULT_TOKENS: Mapping[tuple[str, str], TokenConfig] = {
    ("ethereum", "USDC"): TokenConfig("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", 6),
    ("ethereum", "USDT"): TokenConfig("0xdAC17F958D2ee523a2206206994597C13D831ec7", 6),
    ("polygon", "USDC"): TokenConfig("0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359", 6),
    ("polygon", "USDT"): TokenConfig("0xc2132D05D31c914a87C6611C10748AEb04B58e8F", 6),
    ("bsc", "USDC"): TokenConfig("0x8AC76a51cc950d9822D68b83fE1Ad97B32Cd580d", 18),
    ("bsc", "USDT"): TokenConfig("0x55d398326f99059fF775485246999027B3197955", 18),
    ("arbitrum", "USDC"): TokenConfig("0xaf88d065e77c8cC2239327C5EDb3A432268e5831", 6),
    ("arbitrum", "USDT"): TokenConfig("0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9", 6),
}

#: Chainlink ETH/USD aggregators (8 decimals).
DEFAULT_ETH_USD_FEEDS: Mapping[str, str] = {
    "ethereum": "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419",
    "arbitrum": "0x639Fe6ab55C921f74e7fac1ee960C0B6293ba612",
}

#: Blocks (including the transaction's) before a payment is credited, per network. Chosen to
#: cover each chain's finality (docs/crypto-payments.md): Ethereum ~2 epochs (finalized),
#: Polygon PoS beyond its 157-block reorgs, BSC fast finality with margin, Arbitrum ~L1
#: finality at 0.25 s blocks.
DEFAULT_CONFIRMATIONS: Mapping[str, int] = {
    "ethereum": 64,
    "sepolia": 64,
    "polygon": 256,
    "polygon-amoy": 256,
    "bsc": 15,
    "bsc-testnet": 15,
    "arbitrum": 3600,
    "arbitrum-sepolia": 3600,
    "local": 2,
}


class CryptoConfigError(ValueError):
    """A crypto payment setting is invalid; the message names the variable."""


def network_suffix(network: str) -> str:
    """``polygon-amoy`` -> ``POLYGON_AMOY`` (for variable names)."""
    return network.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class CryptoSettings:
    #: NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS, checksummed; None = crypto payments refused.
    pay_to_address: str | None = None
    #: (network, currency) -> token contract, for USDC and USDT.
    tokens: Mapping[tuple[str, str], TokenConfig] = field(
        default_factory=lambda: dict(DEFAULT_TOKENS)
    )
    #: network -> confirmation depth.
    confirmations: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_CONFIRMATIONS))
    #: ENTITLEMENTS_ETH_USD_PRICE: a fixed rate (dev and tests only); else Chainlink.
    eth_usd_price: Decimal | None = None
    #: network -> Chainlink ETH/USD feed.
    eth_usd_feeds: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ETH_USD_FEEDS))
    #: A Chainlink answer older than this is refused (the feed's heartbeat is one hour).
    max_price_age_seconds: float = 3600.0
    #: How long a quote holds.
    quote_ttl_seconds: float = 900.0
    #: After expiry the payment is still watched this long: a transfer then is PAID_LATE.
    late_window_seconds: float = 86400.0
    #: How often each network's watcher polls its node.
    poll_interval_seconds: float = 5.0
    #: At most this many blocks are scanned per poll (one batch).
    max_blocks_per_poll: int = 100
    #: An overpayment worth more than this (US cents, at the quote's rate) is listed for an
    #: admin (ListUnsettledFunds) to refund or credit; a smaller one is kept silently.
    overpay_tolerance_cents: int = 100

    def token(self, network: str, currency: str) -> TokenConfig | None:
        return self.tokens.get((network, currency))

    def depth(self, network: str) -> int:
        return self.confirmations.get(network, 64)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CryptoSettings:
        raw_address = env.get("NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS", "").strip()
        pay_to = None
        if raw_address:
            pay_to = _address(raw_address, "NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS")
        tokens = dict(DEFAULT_TOKENS)
        confirmations = dict(DEFAULT_CONFIRMATIONS)
        feeds = dict(DEFAULT_ETH_USD_FEEDS)
        for network in NETWORKS:
            suffix = network_suffix(network)
            for currency in ("USDC", "USDT"):
                name = f"ENTITLEMENTS_TOKEN_{suffix}_{currency}"
                value = env.get(name, "").strip()
                if value:
                    known = DEFAULT_TOKENS.get((network, currency))
                    address = _address(value, name)
                    same = known is not None and known.address.lower() == address.lower()
                    tokens[(network, currency)] = TokenConfig(
                        address, known.decimals if same and known else None
                    )
            depth = env.get(f"ENTITLEMENTS_CONFIRMATIONS_{suffix}", "").strip()
            if depth:
                confirmations[network] = int(
                    _number(env, f"ENTITLEMENTS_CONFIRMATIONS_{suffix}", 0, 1, whole=True)
                )
            feed = env.get(f"ENTITLEMENTS_ETH_USD_FEED_{suffix}", "").strip()
            if feed:
                feeds[network] = _address(feed, f"ENTITLEMENTS_ETH_USD_FEED_{suffix}")
        price = None
        raw_price = env.get("ENTITLEMENTS_ETH_USD_PRICE", "").strip()
        if raw_price:
            try:
                price = Decimal(raw_price)
            except InvalidOperation:
                price = None
            if price is None or not price.is_finite() or price <= 0:
                raise CryptoConfigError(
                    f"ENTITLEMENTS_ETH_USD_PRICE: expected a positive decimal, got {raw_price!r}"
                )
        return cls(
            pay_to_address=pay_to,
            tokens=tokens,
            confirmations=confirmations,
            eth_usd_price=price,
            eth_usd_feeds=feeds,
            max_price_age_seconds=_number(env, "ENTITLEMENTS_ETH_USD_MAX_AGE_SECONDS", 3600.0, 1),
            quote_ttl_seconds=_number(env, "ENTITLEMENTS_CRYPTO_QUOTE_TTL_SECONDS", 900.0, 1),
            late_window_seconds=_number(env, "ENTITLEMENTS_CRYPTO_LATE_WINDOW_SECONDS", 86400.0, 0),
            poll_interval_seconds=_number(env, "ENTITLEMENTS_CRYPTO_POLL_SECONDS", 5.0, 0.05),
            max_blocks_per_poll=int(
                _number(env, "ENTITLEMENTS_CRYPTO_MAX_BLOCKS_PER_POLL", 100, 1, whole=True)
            ),
            overpay_tolerance_cents=int(
                _number(env, "ENTITLEMENTS_CRYPTO_OVERPAY_TOLERANCE_CENTS", 100, 0, whole=True)
            ),
        )


def _address(value: str, name: str) -> str:
    if not is_address(value):
        raise CryptoConfigError(f"{name}: not a 0x-prefixed 20-byte address: {value!r}")
    return to_checksum_address(value)


def _number(
    env: Mapping[str, str], name: str, default: float, minimum: float, *, whole: bool = False
) -> float:
    return env_number(env, name, default, minimum, whole=whole, error=CryptoConfigError)
