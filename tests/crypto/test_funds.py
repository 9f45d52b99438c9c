"""Money received without access, listed for an admin and resolved (credited or refunded), on
anvil with a real store: the domain behind AdminService.ListUnsettledFunds and
ResolveUnsettledFunds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from entitlements.crypto.funds import Credit, FundsFilter, Refund, UnsettledFunds
from entitlements.errors import FailedPrecondition, InvalidArgument, NotFound
from entitlements.store.crypto_funds_repository import FundsStore
from entitlements.store.models import OverrideAudit
from entitlements.store.repository import Store
from tests.chain_fixtures import AnvilNode, ChainKit, TestTokens
from tests.crypto.conftest import DEPTH, Rig, make_rig

pytestmark = pytest.mark.slow

REFUND = "0x" + "ef" * 32


async def confirm(rig: Rig) -> None:
    await rig.mine(DEPTH - 1)
    await rig.poll()


def funds_of(rig: Rig) -> UnsettledFunds:
    return UnsettledFunds(rig.payments, FundsStore(rig.store.engine))


@pytest.fixture
async def any_rig(
    anvil: AnvilNode, chain: ChainKit, tokens: TestTokens, store: Store
) -> AsyncIterator[Rig]:
    """A rig on each backend (SQLite and PostgreSQL)."""
    made, close = await make_rig(anvil, chain, tokens, store)
    try:
        yield made
    finally:
        await close()


async def seven_kinds(rig: Rig) -> dict[str, str]:
    """Make money arrive in every way that gives no (full) access; {kind: item id or ""}."""
    rig.clock_offset = -timedelta(hours=1)
    late = await rig.quote("USDC", account="late")
    rig.clock_offset = timedelta(0)
    under = await rig.quote("USDC", account="under")
    over = await rig.quote("USDC", account="over")
    slightly = await rig.quote("USDC", account="slightly")
    usdt = await rig.quote("USDT", account="usdt")
    await rig.poll()
    await rig.pay(late)
    await rig.pay(under, int(under.amount_base_units) - 5 * 10**6)
    await rig.pay(over, int(over.amount_base_units) + 10 * 10**6)
    await rig.pay(slightly, int(slightly.amount_base_units) + 10_000)  # one cent: tolerated
    await rig.send_token(rig.tokens.usdc6, int(usdt.amount_base_units) // 10**12)  # wrong coin
    await rig.send_token(rig.tokens.usdc6, 7 * 10**6)  # no quote's digits
    await confirm(rig)
    return {"paid_late": late.id, "underpaid": under.id, "overpaid": over.id}


async def test_money_without_access_is_listed_by_kind_with_filters_and_pages(
    any_rig: Rig,
) -> None:
    rig = any_rig
    ids = await seven_kinds(rig)
    funds = funds_of(rig)
    listed, token = await funds.list()
    assert token == ""
    by_kind = {r.kind: r for r in listed}
    assert sorted(by_kind) == ["overpaid", "paid_late", "underpaid", "unmatched", "wrong_currency"]
    for kind, item_id in ids.items():
        assert by_kind[kind].item_id == item_id
    assert by_kind["overpaid"].payment is not None
    assert by_kind["overpaid"].payment.excess_cents == 1000
    assert by_kind["underpaid"].from_address == rig.kit.deployer
    wrong = by_kind["wrong_currency"].transfer
    assert wrong is not None and wrong.named_payment_id is not None
    # Filters.
    (only,) = (await funds.list(filters=FundsFilter(kind="underpaid")))[0]
    assert only.item_id == ids["underpaid"]
    (mine,) = (await funds.list(filters=FundsFilter(account_id="late")))[0]
    assert mine.item_id == ids["paid_late"]
    assert (await funds.list(filters=FundsFilter(network="local")))[0] == listed
    # Pages of two walk every item once, newest first.
    seen: list[str] = []
    token = ""
    while True:
        page, token = await funds.list(page_size=2, page_token=token)
        seen += [r.item_id for r in page]
        if not token:
            break
    assert seen == [r.item_id for r in listed]
    assert len(set(seen)) == 5
    _, first_token = await funds.list(page_size=2)
    with pytest.raises(InvalidArgument) as raised:
        await funds.list(page_size=2, page_token=first_token, filters=FundsFilter(kind="overpaid"))
    assert raised.value.field == "page_token"
    with pytest.raises(InvalidArgument) as raised:
        await funds.list(filters=FundsFilter(kind="stolen"))
    assert raised.value.field == "kind"


async def test_crediting_a_wrong_currency_transfer_activates_the_plan_once_and_is_audited(
    rig: Rig,
) -> None:
    usdc = await rig.quote("USDC", account="w2")
    await rig.poll()
    await rig.send_token(rig.tokens.token18, int(usdc.amount_base_units) * 10**12)
    await confirm(rig)
    funds = funds_of(rig)
    (item,) = (await funds.list())[0]
    assert item.kind == "wrong_currency"
    resolved, revision = await funds.resolve(
        item.item_id,
        credit=Credit("w2", "pro", "month"),
        reason="paid USDT for a USDC quote",
        actor="ops",
    )
    assert revision > 0
    assert resolved.resolution is not None and resolved.resolution.action == "credited"
    assert await rig.plan_of("w2") == "pro"
    assert [r.amount_cents for r in await rig.repo.revenue()] == [2500]
    assert (await funds.list())[0] == []
    (kept,) = (await funds.list(filters=FundsFilter(include_resolved=True)))[0]
    assert kept.resolution is not None and kept.resolution.actor == "ops"
    # The watcher never undoes an admin's credit, and a second decision is refused.
    await rig.mine(2)
    await rig.poll()
    assert await rig.plan_of("w2") == "pro"
    with pytest.raises(FailedPrecondition, match="already credited"):
        await funds.resolve(item.item_id, refund=Refund(REFUND), actor="ops")
    async with rig.store.engine.connect() as connection:
        audits = (
            await connection.execute(
                select(OverrideAudit.actor, OverrideAudit.action, OverrideAudit.details)
            )
        ).all()
    assert [(a, b, c["item_id"], c["plan_id"]) for a, b, c in audits] == [
        ("ops", "resolve_crypto_funds", item.item_id, "pro")
    ]


async def test_refunding_an_underpaid_payment_records_the_hash_and_grants_nothing(
    rig: Rig,
) -> None:
    payment = await rig.quote("USDC")
    await rig.poll()
    await rig.pay(payment, int(payment.amount_base_units) - 5 * 10**6)
    await confirm(rig)
    funds = funds_of(rig)
    with pytest.raises(InvalidArgument) as raised:
        await funds.resolve(payment.id, refund=Refund("0x12"), actor="ops")
    assert raised.value.field == "refund.tx_hash"
    assert (await funds.list())[0][0].resolution is None  # a refused call changed nothing
    resolved, revision = await funds.resolve(payment.id, refund=Refund(REFUND), actor="ops")
    assert revision == 0
    assert resolved.resolution is not None
    assert (resolved.resolution.action, resolved.resolution.refund_tx_hash) == ("refunded", REFUND)
    assert await rig.plan_of("acme") == "free" and await rig.repo.revenue() == []
    # Its digits are released: a later transfer carrying them pays nothing.
    assert (await rig.get(payment)).open_slot is None


async def test_crediting_an_underpaid_payment_defaults_to_its_own_account_and_plan(
    rig: Rig,
) -> None:
    payment = await rig.quote("USDC", plan="business", interval="year")
    await rig.poll()
    await rig.pay(payment, int(payment.amount_base_units) - 10**6)
    await confirm(rig)
    resolved, _ = await funds_of(rig).resolve(payment.id, credit=Credit(), actor="ops")
    assert resolved.resolution is not None
    assert (resolved.resolution.plan_id, resolved.resolution.interval) == ("business", "year")
    assert await rig.plan_of("acme") == "business"
    assert [r.amount_cents for r in await rig.repo.revenue()] == [75000]


async def test_resolving_needs_a_final_item_a_known_id_and_a_priced_plan(rig: Rig) -> None:
    funds = funds_of(rig)
    with pytest.raises(NotFound):
        await funds.resolve("ut_000000000042", refund=Refund(REFUND), actor="ops")
    with pytest.raises(InvalidArgument) as raised:
        await funds.resolve("ut_1", actor="ops")
    assert raised.value.field == "action"
    await rig.quote("USDC")
    await rig.poll()
    await rig.send_token(rig.tokens.usdc6, 7 * 10**6)
    await rig.poll()  # one confirmation of DEPTH
    (item,) = (await funds.list())[0]
    with pytest.raises(FailedPrecondition, match="confirmation depth"):
        await funds.resolve(item.item_id, refund=Refund(REFUND), actor="ops")
    await confirm(rig)
    with pytest.raises(InvalidArgument) as raised:
        await funds.resolve(item.item_id, credit=Credit("a", "enterprise", "month"), actor="ops")
    assert raised.value.field == "credit.plan_id"
    with pytest.raises(InvalidArgument) as raised:
        await funds.resolve(item.item_id, credit=Credit("a", "pro"), actor="ops")
    assert raised.value.field == "credit.interval"
    assert (await funds.list())[0][0].resolution is None
