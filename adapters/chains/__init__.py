"""The only code that talks to EVM chains: configuration, errors and the async readers."""

from __future__ import annotations

from adapters.chains.config import NETWORKS, ChainConfigError, ChainSettings, NetworkInfo
from adapters.chains.errors import (
    ChainError,
    ChainMismatch,
    ChainUnavailable,
    ContractMismatch,
    NetworkNotConfigured,
    UnexpectedAnswer,
)
from adapters.chains.reader import ChainReader, Erc20Balance
from adapters.chains.readers import ChainReaders

__all__ = [
    "NETWORKS",
    "ChainConfigError",
    "ChainError",
    "ChainMismatch",
    "ChainReader",
    "ChainReaders",
    "ChainSettings",
    "ChainUnavailable",
    "ContractMismatch",
    "Erc20Balance",
    "NetworkInfo",
    "NetworkNotConfigured",
    "UnexpectedAnswer",
]
