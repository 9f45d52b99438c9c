"""Token gating on a real anvil node and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.chains import ChainReaders
from entitlements.store.repository import Store
from entitlements.store.tokengate_repository import TokenGateStore
from entitlements.tokengate import TokenGate
from tests.chain_fixtures import AnvilNode, anvil, chain, local_settings, tokens

__all__ = ["anvil", "chain", "gate", "tokens"]


@pytest.fixture
async def gate(store: Store, anvil: AnvilNode) -> AsyncIterator[TokenGate]:
    """A TokenGate on the local chain with a fresh cache, on each database backend."""
    settings = local_settings(anvil)
    service = TokenGate(
        TokenGateStore(store.engine), ChainReaders.from_settings(settings), settings
    )
    await service.start()
    try:
        yield service
    finally:
        await service.close()
