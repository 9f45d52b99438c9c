"""The chain fixtures (anvil, compiled and deployed test contracts) for the adapter tests."""

from __future__ import annotations

from tests.chain_fixtures import anvil, chain, local_reader, tokens

__all__ = ["anvil", "chain", "local_reader", "tokens"]
