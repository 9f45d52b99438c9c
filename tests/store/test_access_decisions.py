"""Stored token access decisions: a change found by two checks at once (the transfer listener
and the sweep, or two replicas) is reported as a change by one of them only, so watchers hear
it once."""

from __future__ import annotations

import asyncio

from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from entitlements.store.tokengate_repository import TokenGateStore


async def test_concurrent_checks_finding_the_same_revocation_report_it_once(
    database_url: str,
) -> None:
    await upgrade(database_url)
    store = Store.open(database_url)
    try:
        gate = TokenGateStore(store.engine)
        wallets = ["0x00000000000000000000000000000000000000aa"]
        assert await gate.record_access("club", "", wallets, True) is None
        for _ in range(5):
            previous = await asyncio.gather(
                *(gate.record_access("club", "", wallets, False) for _ in range(4))
            )
            assert sorted(previous, key=str) == [False, False, False, True]
            assert await gate.record_access("club", "", wallets, True) is False
    finally:
        await store.close()
