"""A confirming head settles the payments awaiting confirmations before the watcher reads the new
blocks: a node slow to answer for the new block's contents does not hold up an activation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from adapters.chains.payments import Block, PaymentReads, TokenTransfer
from entitlements.crypto import PaymentWatcher
from tests.crypto.conftest import DEPTH, Rig

pytestmark = pytest.mark.slow


class SlowLogs(PaymentReads):
    """The node's answers, except that reading new blocks' contents (their transactions and
    logs) hangs while `held`: a slow or stalled node."""

    def __init__(self, inner: PaymentReads) -> None:
        super().__init__(inner.reader)
        self.held = False
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def scan(
        self, numbers: Sequence[int], tokens: Sequence[str], recipient: str
    ) -> tuple[list[Block], list[TokenTransfer]]:
        if self.held:
            self.waiting.set()
            await self.release.wait()
        return await super().scan(numbers, tokens, recipient)


async def _watcher(rig: Rig) -> tuple[PaymentWatcher, SlowLogs]:
    slow = SlowLogs(rig.payments.reads["local"])
    rig.payments.reads["local"] = slow
    return PaymentWatcher(rig.payments, "local", interval_seconds=3600), slow


async def test_a_confirming_head_activates_while_the_new_blocks_are_still_being_read(
    rig: Rig,
) -> None:
    payment = await rig.quote("ETH")
    watcher, slow = await _watcher(rig)
    await rig.pay(payment)
    await rig.mine(DEPTH - 2)
    await watcher.catch_up()
    assert (await rig.get(payment)).status == "processing"
    assert (await rig.get(payment)).confirmations == DEPTH - 1

    slow.held = True
    await rig.mine(1)  # the confirming block
    poll = asyncio.create_task(watcher.poll_once())
    try:
        async with asyncio.timeout(10):
            while await rig.plan_of("acme") != "pro":
                assert not poll.done(), "the poll ended without activating the payment"
                await asyncio.sleep(0.02)
        assert (await rig.get(payment)).status == "confirmed"
        # The activation did not wait for the new block's logs: that read is still held.
        assert not poll.done()
    finally:
        slow.release.set()
        result = await poll
    assert result.cursor == result.head
    assert (await rig.get(payment)).confirmations == DEPTH


async def test_a_head_with_no_new_transfer_settles_nothing_twice_and_still_reads_the_blocks(
    rig: Rig,
) -> None:
    """Settling first changes no outcome: a payment made in the confirming block itself is still
    found by the scan that follows, and one already confirmed stays confirmed."""
    first = await rig.quote("ETH")
    watcher, _slow = await _watcher(rig)
    await rig.pay(first)
    await rig.mine(DEPTH - 2)
    await watcher.catch_up()
    second = await rig.quote("USDC", account="globex")
    await rig.pay(second)  # mined in the block that confirms the first payment
    await watcher.catch_up()
    assert (await rig.get(first)).status == "confirmed"
    found = await rig.get(second)
    assert found.status == "processing"
    assert found.confirmations == 1
    await rig.mine(DEPTH - 1)
    await watcher.catch_up()
    assert (await rig.get(second)).status == "confirmed"
    assert await rig.plan_of("globex") == "pro"


async def test_a_head_on_a_chain_without_the_payments_block_does_not_activate_it(
    rig: Rig,
) -> None:
    """Settling first checks the transfer's block against the chain before counting the new
    head's confirmations: a reorg that drops the payment's block and grows past the depth
    leaves the payment pending, even while the node is slow to answer for the new blocks."""
    payment = await rig.quote("ETH")
    watcher, slow = await _watcher(rig)
    before = await rig.snapshot()
    await rig.pay(payment)
    await rig.mine(DEPTH - 2)
    await watcher.catch_up()
    assert (await rig.get(payment)).status == "processing"

    await rig.revert(before)
    await rig.mine(DEPTH + 1)  # a longer chain without the payment
    slow.held = True
    poll = asyncio.create_task(watcher.poll_once())
    try:
        async with asyncio.timeout(10):
            await slow.waiting.wait()  # settled first, now reading the new blocks
        assert await rig.plan_of("acme") == "free"
        assert (await rig.get(payment)).status == "pending"
    finally:
        slow.release.set()
        await poll
    await watcher.catch_up()
    assert await rig.plan_of("acme") == "free"
    after = await rig.get(payment)
    assert after.status == "pending"
    assert after.activation == "none"  # never activated, not activated and revoked
