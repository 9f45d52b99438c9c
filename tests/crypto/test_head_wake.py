"""A new head wakes the payment watcher: its poll interval is only the backstop."""

from __future__ import annotations

import asyncio

import pytest

from adapters.chains import ChainReader
from adapters.chains.heads import HeadFollower
from entitlements.crypto import PaymentWatcher
from tests.crypto.conftest import DEPTH, Rig

pytestmark = pytest.mark.slow


async def test_a_new_head_wakes_the_watcher_long_before_its_interval(rig: Rig) -> None:
    payment = await rig.quote("ETH")
    watcher = PaymentWatcher(rig.payments, "local", interval_seconds=3600)
    node = rig.reader
    follower = HeadFollower(
        ChainReader("local", node.chain_id, node.url, timeout_seconds=5), poll_seconds=0.05
    )
    follower.subscribe(lambda _update: watcher.wake())
    watcher.start()
    follower.start()
    try:
        await rig.pay(payment)
        await rig.mine(DEPTH)
        async with asyncio.timeout(10):
            while True:
                if (await rig.get(payment)).status == "confirmed":
                    break
                await asyncio.sleep(0.05)
    finally:
        await follower.stop()
        await follower.reader.close()
        await watcher.stop()
    assert await rig.plan_of("acme") == "pro"
