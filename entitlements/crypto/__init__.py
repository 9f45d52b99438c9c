"""Crypto payments: quotes, the chain watchers and the activations they lead to."""

from __future__ import annotations

from entitlements.crypto.config import CryptoConfigError, CryptoSettings
from entitlements.crypto.payments import CryptoPayments, QuoteRequest, TransactionInfo
from entitlements.crypto.watcher import PaymentWatcher, PollResult

__all__ = [
    "CryptoConfigError",
    "CryptoPayments",
    "CryptoSettings",
    "PaymentWatcher",
    "PollResult",
    "QuoteRequest",
    "TransactionInfo",
]
