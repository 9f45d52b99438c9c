"""Crypto payments end to end on anvil (SQLite): quotes, the watcher following blocks,
confirmations, activation through EntitlementService, and what an admin sees for the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from entitlements.crypto.config import TokenConfig
from entitlements.crypto.payments import ChainEvent, block_time
from entitlements.errors import FailedPrecondition, Unavailable
from entitlements.store.repository import Store
from tests.chain_fixtures import AnvilNode, ChainKit, TestTokens, new_wallet
from tests.crypto.conftest import DEPTH, Rig, make_rig

pytestmark = pytest.mark.slow


async def confirm(rig: Rig) -> None:
    """Mine until a transfer in the latest block has DEPTH confirmations, then poll."""
    await rig.mine(DEPTH - 1)
    await rig.poll()


async def test_eth_payment_goes_pending_processing_confirmed_and_activates_the_plan(
    rig: Rig,
) -> None:
    payment = await rig.quote("ETH")
    assert payment.status == "pending" and payment.decimals == 18
    assert payment.eth_usd_rate == "2500" and payment.token_contract == ""
    # $25 at $2500 is 0.01 ETH; the slot adds a few gwei.
    assert 10**16 < int(payment.amount_base_units) < 10**16 + 10**13
    assert await rig.plan_of("acme") == "free"
    await rig.poll()
    tx = await rig.pay(payment)
    await rig.poll()
    seen = await rig.get(payment)
    assert (seen.status, seen.confirmations, seen.tx_hash) == ("processing", 1, tx)
    await rig.mine(1)
    await rig.poll()
    assert (await rig.get(payment)).status == "processing"
    await rig.mine(1)
    await rig.poll()
    done = await rig.get(payment)
    assert done.status == "confirmed" and done.confirmations == DEPTH
    assert done.received_base_units == payment.amount_base_units
    assert done.confirmed_at is not None and done.open_slot is None
    assert await rig.plan_of("acme") == "pro"
    revenue = await rig.repo.revenue()
    assert [(r.payment_id, r.amount_cents, r.currency, r.tx_hash) for r in revenue] == [
        (payment.id, 2500, "ETH", tx)
    ]


@pytest.mark.parametrize(("currency", "decimals"), [("USDC", 6), ("USDT", 18)])
async def test_erc20_payment_with_the_tokens_decimals_confirms_and_activates(
    rig: Rig, currency: str, decimals: int
) -> None:
    payment = await rig.quote(currency, plan="business", interval="year")
    assert payment.decimals == decimals
    assert payment.token_contract == rig.token(currency).address
    # $750.00 plus the slot in millionths of a dollar.
    assert int(payment.amount_base_units) == 750 * 10**decimals + payment.slot * 10 ** (
        decimals - 6
    )
    await rig.poll()
    await rig.pay(payment)
    await rig.poll()
    assert (await rig.get(payment)).status == "processing"
    await confirm(rig)
    done = await rig.get(payment)
    assert done.status == "confirmed"
    assert await rig.plan_of("acme") == "business"
    snapshot = await rig.store.get_account_snapshot("acme")
    assert snapshot is not None and snapshot.subscription is not None
    sub = snapshot.subscription
    assert (sub.payment_method, sub.interval, sub.status) == ("crypto", "year", "active")
    assert sub.current_period_start == done.confirmed_at
    assert sub.current_period_end is not None and sub.current_period_start is not None
    assert sub.current_period_end.year == sub.current_period_start.year + 1


async def test_a_second_payment_for_the_same_plan_extends_from_the_period_end(rig: Rig) -> None:
    first = await rig.quote("USDC")
    await rig.poll()
    await rig.pay(first)
    await confirm(rig)
    before = await rig.store.get_account_snapshot("acme")
    assert before is not None and before.subscription is not None
    second = await rig.quote("USDC")
    await rig.pay(second)
    await confirm(rig)
    after = await rig.store.get_account_snapshot("acme")
    assert after is not None and after.subscription is not None
    assert after.subscription.id == before.subscription.id
    assert before.subscription.current_period_end is not None
    assert after.subscription.current_period_end is not None
    assert after.subscription.current_period_end > before.subscription.current_period_end + (
        timedelta(days=27)
    )
    assert len(await rig.repo.revenue()) == 2


async def test_open_payments_get_distinct_amounts(rig: Rig) -> None:
    quotes = [await rig.quote("USDC") for _ in range(5)]
    amounts = {q.amount_base_units for q in quotes}
    assert len(amounts) == 5
    assert sorted(q.slot for q in quotes) == [1, 2, 3, 4, 5]


async def test_underpayment_is_underpaid_until_a_top_up_completes_it(rig: Rig) -> None:
    payment = await rig.quote("USDC")
    await rig.poll()
    short = int(payment.amount_base_units) - 5 * 10**6
    await rig.pay(payment, short)
    await confirm(rig)
    under = await rig.get(payment)
    assert under.status == "underpaid" and under.received_base_units == str(short)
    assert "underpaid" in under.admin_note
    assert await rig.plan_of("acme") == "free"
    await rig.pay(payment, 5 * 10**6)  # $5: carries no slot by itself...
    await confirm(rig)
    # ...so it is unmatched, kept for an admin, and the payment is still underpaid.
    assert (await rig.get(payment)).status == "underpaid"
    unmatched = await rig.repo.unmatched("local")
    assert [u.value_base_units for u in unmatched] == [str(5 * 10**6)]
    # A top-up that carries the payment's digits completes it.
    await rig.pay(payment, 5 * 10**6 + payment.slot)
    await confirm(rig)
    done = await rig.get(payment)
    assert done.status == "overpaid"  # 25.00 + slot + slot: one slot too many
    assert await rig.plan_of("acme") == "pro"


async def test_overpayment_activates_and_records_the_excess(rig: Rig) -> None:
    payment = await rig.quote("USDC")
    await rig.poll()
    await rig.pay(payment, int(payment.amount_base_units) + 10 * 10**6)
    await confirm(rig)
    done = await rig.get(payment)
    assert done.status == "overpaid"
    assert "overpaid" in done.admin_note and "35.00" in done.admin_note
    assert await rig.plan_of("acme") == "pro"
    assert len(await rig.repo.revenue()) == 1


async def test_a_payment_after_expiry_is_paid_late_and_does_not_activate(rig: Rig) -> None:
    rig.clock_offset = -timedelta(hours=1)  # the quote was made an hour ago
    payment = await rig.quote("USDC")
    rig.clock_offset = timedelta(0)
    await rig.poll()
    assert (await rig.get(payment)).status == "expired"
    await rig.pay(payment)
    await rig.poll()
    assert (await rig.get(payment)).status == "processing"
    await confirm(rig)
    late = await rig.get(payment)
    assert late.status == "paid_late" and "paid_late" in late.admin_note
    assert await rig.plan_of("acme") == "free"
    assert await rig.repo.revenue() == []


async def test_an_expired_payment_past_the_late_window_no_longer_matches(rig: Rig) -> None:
    rig.clock_offset = -timedelta(days=2)
    payment = await rig.quote("USDC")
    rig.clock_offset = timedelta(0)
    await rig.poll()
    expired = await rig.get(payment)
    assert expired.status == "expired" and expired.open_slot is None
    await rig.pay(payment)
    await confirm(rig)
    assert (await rig.get(payment)).status == "expired"
    assert [u.value_base_units for u in await rig.repo.unmatched()] == [payment.amount_base_units]


async def test_one_transfer_pays_only_the_payment_whose_amount_it_carries(rig: Rig) -> None:
    first = await rig.quote("USDC", account="one")
    second = await rig.quote("USDC", account="two")
    await rig.poll()
    await rig.pay(second)
    await confirm(rig)
    assert (await rig.get(first)).status == "pending"
    assert (await rig.get(second)).status == "confirmed"
    assert (await rig.plan_of("one"), await rig.plan_of("two")) == ("free", "pro")


async def test_a_transaction_with_two_matching_transfers_pays_each_payment(rig: Rig) -> None:
    # A batch payout: each Transfer log of one transaction pays the quote its digits name.
    first = await rig.quote("USDC", account="one")
    second = await rig.quote("USDC", account="two")
    head = await rig.payments.reads["local"].block_number()
    token = rig.tokens.usdc6.address
    events = [
        ChainEvent(
            tx_hash="0x" + "ab" * 32,
            log_position=index,
            log_index=index + 3,
            block_number=head,
            block_hash="0x" + "cd" * 32,
            block_time=block_time(0) + timedelta(days=365 * 60),
            token_contract=token,
            from_address=rig.kit.deployer,
            to_address=rig.pay_to,
            value=int(p.amount_base_units),
        )
        for index, p in enumerate((first, second))
    ]
    assert await rig.payments.record("local", events[0]) == first.id
    assert await rig.payments.record("local", events[1]) == second.id
    assert await rig.payments.record("local", events[0]) == first.id  # recorded once
    assert len(await rig.repo.transfers_of(first.id)) == 1
    assert len(await rig.repo.transfers_of(second.id)) == 1
    assert await rig.repo.unmatched() == []


async def test_a_fake_tokens_transfer_is_ignored(rig: Rig) -> None:
    fake = await rig.kit.deploy("TestERC20", "Fake USD", "USDC", 6)
    payment = await rig.quote("USDC")
    await rig.poll()
    await rig.send_token(fake, int(payment.amount_base_units))
    await confirm(rig)
    assert (await rig.get(payment)).status == "pending"
    assert await rig.repo.unmatched() == []
    assert await rig.plan_of("acme") == "free"


async def test_a_reorg_before_confirmation_puts_the_payment_back_to_pending(rig: Rig) -> None:
    payment = await rig.quote("USDC")
    await rig.poll()
    snapshot = await rig.snapshot()
    await rig.pay(payment)
    await rig.poll()
    assert (await rig.get(payment)).status == "processing"
    await rig.revert(snapshot)
    await rig.mine(DEPTH + 1)
    await rig.poll()
    back = await rig.get(payment)
    assert back.status == "pending" and back.tx_hash is None and back.received_base_units == "0"
    assert back.open_slot == payment.slot
    assert await rig.plan_of("acme") == "free"
    # Paid again on the new chain, it confirms normally.
    await rig.pay(payment)
    await confirm(rig)
    assert (await rig.get(payment)).status == "confirmed"


async def test_a_reorg_after_confirmation_revokes_the_activation_and_the_revenue(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    payment = await rig.quote("ETH")
    await rig.poll()
    snapshot = await rig.snapshot()
    await rig.pay(payment)
    await confirm(rig)
    assert (await rig.get(payment)).status == "confirmed"
    assert await rig.plan_of("acme") == "pro"
    await rig.revert(snapshot)
    await rig.mine(DEPTH + 2)
    await rig.poll()
    back = await rig.get(payment)
    assert back.status == "pending" and back.activation == "revoked"
    assert "reorg after confirmation" in back.admin_note
    assert await rig.plan_of("acme") == "free"
    assert await rig.repo.revenue() == []
    assert any("REORG" in r.getMessage() for r in caplog.records)


async def test_a_restarted_watcher_resumes_from_its_stored_cursor(rig: Rig) -> None:
    first = await rig.quote("USDC", account="one")
    second = await rig.quote("USDT", account="two")
    await rig.poll()
    await rig.pay(first)
    await rig.poll()
    assert (await rig.get(first)).status == "processing"
    await rig.watcher.stop()
    # While no watcher runs: blocks are mined and the second payment is made.
    await rig.mine(DEPTH)
    await rig.pay(second)
    await rig.mine(DEPTH)
    restarted = rig.new_watcher()
    result = await restarted.catch_up()
    assert result.cursor == result.head
    assert (await rig.get(first)).status == "confirmed"
    assert (await rig.get(second)).status == "confirmed"
    assert len(await rig.repo.transfers_of(first.id)) == 1
    assert len(await rig.repo.revenue()) == 2
    # Polling again changes nothing: nothing is counted twice.
    await restarted.catch_up()
    assert len(await rig.repo.revenue()) == 2


async def test_the_background_watcher_confirms_a_payment_as_blocks_are_mined(rig: Rig) -> None:
    payment = await rig.quote("ETH")
    rig.watcher.start()
    try:
        await rig.pay(payment)
        await rig.mine(DEPTH)
        async with asyncio.timeout(10):
            while True:
                if (await rig.get(payment)).status == "confirmed":
                    break
                await asyncio.sleep(0.05)  # the watcher polls every 0.05 s
    finally:
        await rig.watcher.stop()
    assert not rig.watcher.running
    assert await rig.plan_of("acme") == "pro"


async def test_a_stalled_node_keeps_the_payment_processing(rig: Rig) -> None:
    payment = await rig.quote("USDC")
    await rig.poll()
    await rig.pay(payment)
    for _ in range(3):
        await rig.poll()  # no new blocks: confirmations do not grow
    stalled = await rig.get(payment)
    assert stalled.status == "processing" and stalled.confirmations == 1


def fake_feed_code(answer: int, updated_at: int) -> str:
    """Runtime code answering every call with (roundId 8, answer, updatedAt, updatedAt, 8): a
    Chainlink `latestRoundData()`, and `decimals()` reads the first word, 8."""
    words = [8, answer, updated_at, updated_at, 8]
    code = "".join(
        "7f" + w.to_bytes(32, "big").hex() + "60" + (i * 32).to_bytes(1, "big").hex() + "52"
        for i, w in enumerate(words)
    )
    return "0x" + code + "60a0" + "6000" + "f3"


@pytest.fixture
async def feed_rig(
    anvil: AnvilNode, chain: ChainKit, tokens: TestTokens, sqlite_store: Store
) -> AsyncIterator[tuple[Rig, str]]:
    feed = new_wallet().address
    made, close = await make_rig(
        anvil, chain, tokens, sqlite_store, eth_usd_price=None, eth_usd_feeds={"local": feed}
    )
    try:
        yield made, feed
    finally:
        await close()


async def test_an_eth_quote_locks_the_chainlink_price(feed_rig: tuple[Rig, str]) -> None:
    rig, feed = feed_rig
    now = int(time.time())
    await rig.kit.w3.provider.make_request(
        "anvil_setCode",  # type: ignore[arg-type]
        [feed, fake_feed_code(3000 * 10**8, now - 60)],
    )
    payment = await rig.quote("ETH")
    assert payment.eth_usd_rate == "3000"
    # $25 / $3000 = 0.0083333.. ETH, rounded up to 0.00001 ETH, plus the slot.
    assert int(payment.amount_base_units) == 834 * 10**13 + payment.slot * 10**9


async def test_a_stale_chainlink_price_refuses_the_quote(feed_rig: tuple[Rig, str]) -> None:
    rig, feed = feed_rig
    stale = int(time.time()) - 3 * 3600
    await rig.kit.w3.provider.make_request(
        "anvil_setCode",  # type: ignore[arg-type]
        [feed, fake_feed_code(3000 * 10**8, stale)],
    )
    with pytest.raises(Unavailable, match="stale"):
        await rig.quote("ETH")


async def test_token_decimals_that_differ_from_the_configuration_refuse_the_quote(
    anvil: AnvilNode, chain: ChainKit, tokens: TestTokens, sqlite_store: Store
) -> None:
    rig, close = await make_rig(
        anvil,
        chain,
        tokens,
        sqlite_store,
        tokens={("local", "USDC"): TokenConfig(tokens.usdc6.address, 18)},
    )
    try:
        with pytest.raises(FailedPrecondition, match="reports 6 decimals"):
            await rig.quote("USDC")
    finally:
        await close()


async def test_confirmed_payments_are_revenue_facts_for_admin_analytics(rig: Rig) -> None:
    from entitlements.store.admin_repository import AdminStore
    from entitlements.store.crypto_repository import crypto_revenue

    payment = await rig.quote("USDT", plan="business")
    await rig.poll()
    await rig.pay(payment)
    await confirm(rig)
    done = await rig.get(payment)
    facts = await AdminStore(rig.store, revenue_sources=[crypto_revenue]).revenue_facts(rig.now())
    assert [(f.account_id, f.amount_cents, f.currency, f.payment_method) for f in facts] == [
        ("acme", 7500, "usd", "crypto")
    ]
    assert facts[0].paid_at == done.confirmed_at
    assert facts[0].subscription_id == f"crypto_{payment.id}"


async def test_concurrent_quotes_get_distinct_amounts_on_each_backend(
    anvil: AnvilNode, chain: ChainKit, tokens: TestTokens, store: Store
) -> None:
    rig, close = await make_rig(anvil, chain, tokens, store)
    try:
        quotes = await asyncio.gather(*(rig.quote("USDC", account=f"a{i}") for i in range(12)))
    finally:
        await close()
    assert len({q.amount_base_units for q in quotes}) == 12
    assert sorted(q.slot for q in quotes) == list(range(1, 13))


async def test_an_unmatched_transfer_undone_by_a_reorg_is_marked_reorged(rig: Rig) -> None:
    await rig.quote("USDC")
    await rig.poll()
    snapshot = await rig.snapshot()
    await rig.send_token(rig.tokens.usdc6, 7 * 10**6)  # a round amount: no payment's digits
    await rig.poll()
    (seen,) = await rig.repo.unmatched()
    assert not seen.reorged and "unique digits" in seen.reason
    await rig.revert(snapshot)
    await rig.mine(DEPTH + 1)
    await rig.poll()
    (gone,) = await rig.repo.unmatched()
    assert gone.reorged
