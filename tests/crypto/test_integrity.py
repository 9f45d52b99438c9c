"""Money and access never disagree (issue 12): a transfer settles only the quote it was made for,
is counted once whatever a reorg does to its position, and a batch pays each of its quotes.
All on anvil with real ERC-20 contracts and a real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import AsyncContract

from entitlements.crypto import QuoteRequest
from entitlements.errors import InvalidArgument
from entitlements.store.crypto_repository import PaymentRecord
from entitlements.store.repository import Store
from tests.chain_fixtures import AnvilNode, ChainKit, TestTokens, new_wallet
from tests.crypto.conftest import DEPTH, Rig, make_rig

pytestmark = pytest.mark.slow


async def confirm(rig: Rig) -> None:
    await rig.mine(DEPTH - 1)
    await rig.poll()


async def funded_wallet(rig: Rig, token: AsyncContract, value: int) -> LocalAccount:
    """A fresh key with ETH for gas and `value` of `token`."""
    wallet = new_wallet()
    await rig.kit.fund(wallet.address)
    await rig.kit.transact(token.functions.mint(wallet.address, value))
    return wallet


async def signed_transfer(
    rig: Rig, wallet: LocalAccount, token: AsyncContract, to: str, value: int
) -> bytes:
    """A signed `transfer(to, value)` from `wallet`, ready to be sent (and sent again after a
    reorg: the same transaction, the same hash)."""
    nonce = await rig.kit.w3.eth.get_transaction_count(wallet.address)  # type: ignore[arg-type]
    tx: Any = await token.functions.transfer(to, value).build_transaction(
        {
            "from": wallet.address,
            "nonce": nonce,
            "gas": 100_000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
            "chainId": rig.kit.node.chain_id,
        }
    )
    signed = wallet.sign_transaction(tx)
    return bytes(signed.raw_transaction)


async def rpc(rig: Rig, method: str, *params: Any) -> Any:
    response = await rig.kit.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response["result"]


# -- instance 3: the wrong stablecoin --


async def test_quote_amounts_are_unique_across_every_currency(rig: Rig) -> None:
    quotes = [await rig.quote(c) for c in ("USDC", "USDT", "ETH", "USDC")]
    assert sorted(q.slot for q in quotes) == [1, 2, 3, 4]


async def test_a_transfer_in_the_wrong_stablecoin_never_settles_another_currencys_quote(
    rig: Rig,
) -> None:
    w2 = await rig.quote("USDC", account="w2")
    v = await rig.quote("USDT", account="v")
    await rig.poll()
    # W2 sends its USDC amount's digits, but in USDT (18 decimals: scale the same dollars).
    wrong = int(w2.amount_base_units) * 10**12
    await rig.send_token(rig.tokens.token18, wrong)
    await confirm(rig)
    assert (await rig.get(v)).status == "pending"
    assert (await rig.get(w2)).status == "pending"
    assert (await rig.plan_of("v"), await rig.plan_of("w2")) == ("free", "free")
    (unmatched,) = await rig.repo.unmatched()
    assert unmatched.value_base_units == str(wrong)
    assert unmatched.kind == "wrong_currency"
    assert w2.id in unmatched.reason and "USDC" in unmatched.reason


async def test_a_quote_with_a_payer_address_only_matches_transfers_from_it(rig: Rig) -> None:
    payer = await funded_wallet(rig, rig.tokens.usdc6, 100 * 10**6)
    payment = await rig.payments.create(
        QuoteRequest("acme", "pro", "month", "local", "USDC", payer_address=payer.address)
    )
    assert payment.payer_address == payer.address
    await rig.poll()
    # The right amount from another wallet does not pay it...
    await rig.pay(payment)
    await confirm(rig)
    assert (await rig.get(payment)).status == "pending"
    (stranger,) = await rig.repo.unmatched()
    assert stranger.kind == "wrong_payer" and payer.address in stranger.reason
    # ...the payer's own transfer does.
    raw = await signed_transfer(
        rig, payer, rig.tokens.usdc6, rig.pay_to, int(payment.amount_base_units)
    )
    await rig.kit.w3.eth.send_raw_transaction(raw)
    await confirm(rig)
    assert (await rig.get(payment)).status == "confirmed"
    assert await rig.plan_of("acme") == "pro"


async def test_a_malformed_payer_address_is_refused_naming_the_field(rig: Rig) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await rig.payments.create(
            QuoteRequest("acme", "pro", "month", "local", "USDC", payer_address="0x1234")
        )
    assert raised.value.field == "payer_address"
    assert await rig.repo.payments("local") == []


# -- instance 4: a reorg re-includes a transaction at another position --


async def reinclude_at_another_position(rig: Rig, payment: PaymentRecord, value: int) -> str:
    """Pay `value` in one block, reorg it away, re-mine the SAME transaction in a block where
    another transaction's log comes first (so its log index changes), and confirm."""
    wallet = await funded_wallet(rig, rig.tokens.usdc6, value)
    await rig.poll()
    snapshot = await rig.snapshot()
    raw = await signed_transfer(rig, wallet, rig.tokens.usdc6, rig.pay_to, value)
    tx = await rig.kit.w3.eth.send_raw_transaction(raw)
    first = await rig.kit.w3.eth.wait_for_transaction_receipt(tx)
    await rig.poll()
    assert (await rig.get(payment)).status == "processing"
    await rig.revert(snapshot)
    await rpc(rig, "evm_setAutomine", False)
    try:
        # Another transaction with a log first in the block (it tips more, so anvil orders it
        # first), then the same payment again.
        await rig.tokens.usdc6.functions.mint(new_wallet().address, 1).transact(
            {
                "from": rig.kit.deployer,
                "maxPriorityFeePerGas": 5 * 10**9,
                "maxFeePerGas": 2 * 10**10,
            }
        )
        again = await rig.kit.w3.eth.send_raw_transaction(raw)
        await rig.mine(1)
    finally:
        await rpc(rig, "evm_setAutomine", True)
    second = await rig.kit.w3.eth.get_transaction_receipt(again)
    assert again == tx
    assert second["logs"][0]["logIndex"] != first["logs"][0]["logIndex"]
    await rig.mine(DEPTH + 1)
    await rig.poll()
    return "0x" + bytes(tx).hex().removeprefix("0x")


async def test_a_transaction_reincluded_at_another_position_is_counted_once(rig: Rig) -> None:
    payment = await rig.quote("USDC")
    tx = await reinclude_at_another_position(rig, payment, int(payment.amount_base_units))
    done = await rig.get(payment)
    assert done.status == "confirmed" and done.received_base_units == payment.amount_base_units
    live = [t for t in await rig.repo.transfers_of(payment.id) if t.status != "reorged"]
    assert [t.tx_hash for t in live] == [tx]
    assert len(await rig.repo.revenue()) == 1


async def test_a_half_payment_reincluded_at_another_position_stays_underpaid(rig: Rig) -> None:
    payment = await rig.quote("USDC")
    half = 12_500_000 + payment.slot  # $12.50 carrying the payment's digits
    await reinclude_at_another_position(rig, payment, half)
    done = await rig.get(payment)
    assert done.status == "underpaid" and done.received_base_units == str(half)
    assert await rig.plan_of("acme") == "free"
    assert await rig.repo.revenue() == []


# -- instance 5: one transaction paying two quotes --


@pytest.fixture(scope="session")
async def batch_payer(chain: ChainKit) -> AsyncContract:
    return await chain.deploy("TestBatchPayer")


async def test_one_transaction_paying_two_quotes_settles_both(
    rig: Rig, batch_payer: AsyncContract
) -> None:
    one = await rig.quote("USDC", account="one")
    two = await rig.quote("USDC", account="two", plan="business")
    await rig.poll()
    amounts = [int(one.amount_base_units), int(two.amount_base_units)]
    token = rig.tokens.usdc6
    await rig.kit.transact(token.functions.mint(rig.kit.deployer, sum(amounts)))
    await rig.kit.transact(token.functions.approve(batch_payer.address, sum(amounts)))
    await rig.kit.transact(
        batch_payer.functions.pay(token.address, [rig.pay_to, rig.pay_to], amounts)
    )
    await confirm(rig)
    assert (await rig.get(one)).status == "confirmed"
    assert (await rig.get(two)).status == "confirmed"
    assert (await rig.plan_of("one"), await rig.plan_of("two")) == ("pro", "business")
    assert sorted(r.amount_cents for r in await rig.repo.revenue()) == [2500, 7500]
    assert await rig.repo.unmatched() == []


@pytest.fixture
async def pg_rig(
    anvil: AnvilNode, chain: ChainKit, tokens: TestTokens, store: Store
) -> AsyncIterator[Rig]:
    made, close = await make_rig(anvil, chain, tokens, store)
    try:
        yield made
    finally:
        await close()


async def test_the_wrong_currency_is_refused_on_each_backend(pg_rig: Rig) -> None:
    rig = pg_rig
    usdc = await rig.quote("USDC", account="w2")
    usdt = await rig.quote("USDT", account="v")
    assert usdc.slot != usdt.slot
    await rig.poll()
    await rig.send_token(rig.tokens.token18, int(usdc.amount_base_units) * 10**12)
    await confirm(rig)
    assert (await rig.get(usdt)).status == "pending"
    assert await rig.plan_of("v") == "free"


# -- the rest of the class --


async def test_a_reorg_of_the_first_payment_keeps_the_plan_a_later_payment_pays_for(
    rig: Rig,
) -> None:
    first = await rig.quote("USDC")
    second = await rig.quote("USDC")
    wallet = await funded_wallet(rig, rig.tokens.usdc6, int(second.amount_base_units))
    await rig.poll()
    snapshot = await rig.snapshot()
    await rig.pay(first)
    await confirm(rig)
    raw = await signed_transfer(
        rig, wallet, rig.tokens.usdc6, rig.pay_to, int(second.amount_base_units)
    )
    await rig.kit.w3.eth.send_raw_transaction(raw)
    await confirm(rig)
    assert (await rig.get(second)).status == "confirmed"
    # A reorg drops the first payment; the second is re-mined on the new chain.
    await rig.revert(snapshot)
    await rig.kit.w3.eth.send_raw_transaction(raw)
    await rig.mine(DEPTH + 1)
    await rig.poll()
    assert (await rig.get(first)).status == "pending"
    assert (await rig.get(second)).status == "confirmed"
    assert await rig.plan_of("acme") == "pro"
    snapshot_after = await rig.store.get_account_snapshot("acme")
    assert snapshot_after is not None and snapshot_after.subscription is not None
    assert snapshot_after.subscription.status == "active"
    assert [r.payment_id for r in await rig.repo.revenue()] == [second.id]


async def test_a_watcher_back_after_the_late_window_still_credits_a_transfer_made_in_time(
    anvil: AnvilNode, chain: ChainKit, tokens: TestTokens, sqlite_store: Store
) -> None:
    rig, close = await make_rig(anvil, chain, tokens, sqlite_store, max_blocks_per_poll=2)
    try:
        payment = await rig.quote("USDC")
        await rig.poll()
        await rig.mine(4)
        await rig.pay(payment)  # in time: a few seconds after the quote
        await rig.mine(DEPTH)
        # The watcher was down for two days: it catches up two blocks per poll.
        rig.clock_offset = timedelta(days=2)
        await rig.new_watcher().catch_up()
        done = await rig.get(payment)
        assert done.status == "confirmed"
        assert await rig.plan_of("acme") == "pro"
        assert await rig.repo.unmatched() == []
    finally:
        await close()


async def test_a_payment_orphaned_while_the_watcher_was_away_is_revoked(rig: Rig) -> None:
    payment = await rig.quote("USDC")
    await rig.poll()
    snapshot = await rig.snapshot()
    await rig.pay(payment)
    await confirm(rig)
    assert await rig.plan_of("acme") == "pro"
    # A reorg drops the payment, and the new chain grows well past the reorg window before
    # the watcher polls again.
    await rig.revert(snapshot)
    await rig.mine(3 * DEPTH)
    await rig.poll()
    back = await rig.get(payment)
    assert back.status == "pending" and back.activation == "revoked"
    assert await rig.plan_of("acme") == "free"
    assert await rig.repo.revenue() == []


async def test_a_payment_remined_below_the_rewound_cursor_after_a_deep_reorg_is_seen(
    rig: Rig,
) -> None:
    payment = await rig.quote("USDC")
    wallet = await funded_wallet(rig, rig.tokens.usdc6, int(payment.amount_base_units))
    await rig.poll()
    snapshot = await rig.snapshot()
    await rig.mine(DEPTH + 1)
    await rig.poll()  # the watcher has read DEPTH + 1 blocks past the fork point
    raw = await signed_transfer(
        rig, wallet, rig.tokens.usdc6, rig.pay_to, int(payment.amount_base_units)
    )
    await rig.kit.w3.eth.send_raw_transaction(raw)  # mined, not yet seen by the watcher
    # A reorg one block deeper than the confirmation depth re-mines the payment in the first
    # block after the fork.
    await rig.revert(snapshot)
    await rig.kit.w3.eth.send_raw_transaction(raw)
    await rig.mine(DEPTH + 2)
    await rig.poll()
    assert (await rig.get(payment)).status == "confirmed"
    assert await rig.plan_of("acme") == "pro"
