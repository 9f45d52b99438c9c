"""Outbound events from the chain: a crypto payment's confirmation, underpayment and reversal
by a reorg, and the subscription it activates or ends, written with the settlement's change,
once however often the same confirmation is settled, and delivered to a real receiver."""

from __future__ import annotations

import asyncio

import pytest

from entitlements.crypto import CryptoPayments, PaymentWatcher
from entitlements.service import EntitlementService
from entitlements.store.crypto_repository import CryptoStore
from entitlements.store.repository import Store
from entitlements.watch import WatchHub
from tests.chain_fixtures import AnvilNode, ChainKit, TestTokens
from tests.crypto.conftest import DEPTH, Rig, make_rig
from tests.events.outbox import check_documented, deliver, outbox
from tests.events.receiver import Receiver

pytestmark = pytest.mark.slow


async def confirm(rig: Rig) -> None:
    await rig.mine(DEPTH - 1)
    await rig.poll()


async def test_a_confirmed_payment_and_its_activation_reach_the_receiver_once(
    rig: Rig, receiver: Receiver
) -> None:
    payment = await rig.quote("USDC")
    await rig.poll()
    tx = await rig.pay(payment)
    await confirm(rig)
    # The same confirmation settled again, by this watcher and by a restarted one: no news.
    await rig.poll()
    await rig.new_watcher().catch_up()
    head = await rig.kit.w3.eth.block_number
    await rig.payments.settlement.settle(await rig.get(payment), head)
    # A second payment for the same plan extends the subscription: only its confirmation.
    second = await rig.quote("USDC")
    await rig.pay(second)
    await confirm(rig)

    got = await deliver(rig.store.engine, receiver)

    assert [e["type"] for e in got] == [
        "crypto_payment.confirmed",
        "subscription.activated",
        "crypto_payment.confirmed",
    ]
    for body in got:
        check_documented(body)
        assert body["account_id"] == "acme"
    confirmed, activated, extended = (e["data"] for e in got)
    amount = f"{int(payment.amount_base_units) / 10**6:.6f}"
    assert confirmed == {
        "payment_id": payment.id,
        "plan_id": "pro",
        "interval": "month",
        "network": "local",
        "currency": "USDC",
        "amount": amount,
        "received": amount,
        "status": "confirmed",
        "tx_hash": tx,
    }
    assert activated["subscription_id"] == f"crypto_{payment.id}"
    assert (activated["plan_id"], activated["payment_method"]) == ("pro", "crypto")
    assert extended["payment_id"] == second.id


async def test_an_underpaid_payment_is_told_and_its_completion_confirms_it(rig: Rig) -> None:
    payment = await rig.quote("USDC")
    await rig.poll()
    short = int(payment.amount_base_units) - 5 * 10**6
    await rig.pay(payment, short)
    await confirm(rig)
    await rig.poll()
    await rig.pay(payment, 5 * 10**6 + payment.slot)  # a top-up carrying the payment's digits
    await confirm(rig)

    written = await outbox(rig.store.engine)

    assert [e["type"] for e in written] == [
        "crypto_payment.underpaid",
        "crypto_payment.confirmed",
        "subscription.activated",
    ]
    underpaid = written[0]["data"]
    check_documented(written[0])
    assert (underpaid["amount"], underpaid["received"]) == (
        f"{int(payment.amount_base_units) / 10**6:.6f}",
        f"{short / 10**6:.6f}",
    )
    assert written[1]["data"]["status"] == "overpaid"


async def test_a_reorg_after_confirmation_reverses_the_payment_and_ends_its_subscription(
    rig: Rig, receiver: Receiver
) -> None:
    payment = await rig.quote("ETH")
    await rig.poll()
    snapshot = await rig.snapshot()
    tx = await rig.pay(payment)
    await confirm(rig)
    await rig.revert(snapshot)
    await rig.mine(DEPTH + 2)
    await rig.poll()
    await rig.poll()

    got = await deliver(rig.store.engine, receiver)

    assert [e["type"] for e in got] == [
        "crypto_payment.confirmed",
        "subscription.activated",
        "subscription.canceled",  # the revocation is written first, then the payment
        "crypto_payment.reversed",
    ]
    for body in got:
        check_documented(body)
    reversed_ = got[3]["data"]
    assert reversed_ == {
        "payment_id": payment.id,
        "network": "local",
        "tx_hash": tx,
        "subscription_id": f"crypto_{payment.id}",
        "status": "pending",
    }
    canceled = got[2]["data"]
    assert (canceled["subscription_id"], canceled["status"]) == (f"crypto_{payment.id}", "canceled")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_replicas_settling_the_same_confirmation_write_one_event(
    anvil: AnvilNode, chain: ChainKit, tokens: TestTokens, store: Store, database_url: str
) -> None:
    rig, close = await make_rig(anvil, chain, tokens, store)
    other = Store.open(database_url)
    mine = rig.payments
    replica = CryptoPayments(
        CryptoStore(other.engine),
        EntitlementService(other, mine.catalog, WatchHub(), clock=rig.now),
        mine.catalog,
        mine.chains,
        mine.settings,
        mine.reads,
        clock=rig.now,
    )
    try:
        payments = [await rig.quote("USDC", account=f"acct-{i}") for i in range(3)]
        await rig.poll()
        for payment in payments:
            await rig.pay(payment)
        await rig.mine(DEPTH - 1)
        await asyncio.gather(
            *(w.catch_up() for w in (rig.watcher, PaymentWatcher(replica, "local")))
        )
    finally:
        await close()
        await other.close()

    written = await outbox(store.engine)
    confirmed = sorted(e["data"]["payment_id"] for e in written if e["type"].startswith("crypto"))
    assert confirmed == sorted(p.id for p in payments)
    activated = sorted(e["account_id"] for e in written if e["type"] == "subscription.activated")
    assert activated == ["acct-0", "acct-1", "acct-2"]
