"""CryptoPaymentService over gRPC with a real store (SQLite and PostgreSQL) and anvil: bad input
names the field, a quote, a confirmed payment seen by EntitlementsService and WatchEntitlements."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from nchat.entitlements.v1 import admin_service_pb2 as admin_pb
from nchat.entitlements.v1 import admin_service_pb2_grpc as admin_grpc
from nchat.entitlements.v1 import crypto_payment_service_pb2 as pb
from nchat.entitlements.v1 import crypto_payment_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import plan_pb2, subscription_pb2

from entitlements.config import Settings
from entitlements.crypto.config import TokenConfig
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.repository import Store
from tests.chain_fixtures import AnvilNode, ChainKit, TestTokens, local_settings, new_wallet
from tests.crypto.conftest import DEPTH, crypto_settings
from tests.server.conftest import OPS, settings
from tests.server.helpers import details

__all__ = ["settings"]

pytestmark = pytest.mark.slow

MONTH = plan_pb2.BILLING_INTERVAL_MONTH


@pytest.fixture
async def running(
    settings: Settings, store: Store, anvil: AnvilNode, tokens: TestTokens
) -> AsyncIterator[Running]:
    configured = replace(
        settings,
        chains=local_settings(anvil),
        # USDT is left unconfigured on purpose: quoting in it is refused.
        crypto=crypto_settings(
            tokens,
            new_wallet().address,
            tokens={("local", "USDC"): TokenConfig(tokens.usdc6.address)},
        ),
    )
    server = await create_server(configured, build_deps(configured, store), addr="127.0.0.1:0")
    await server.server.start()
    await server.set_serving(True)
    try:
        yield server
    finally:
        await server.stop(0)


@pytest.fixture
async def channel(running: Running) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as opened:
        yield opened


def request(**fields: Any) -> pb.CreateCryptoPaymentRequest:
    values: dict[str, Any] = {
        "account_id": "acme",
        "plan_id": "pro",
        "interval": MONTH,
        "network": "local",
        "currency": "USDC",
    }
    values.update(fields)
    return pb.CreateCryptoPaymentRequest(**values)


BAD = [
    ({"account_id": ""}, "account_id", "ERROR_REASON_INVALID_ARGUMENT"),
    ({"plan_id": "platinum"}, "plan_id", "ERROR_REASON_UNKNOWN_PLAN"),
    ({"plan_id": "starter"}, "plan_id", "ERROR_REASON_INVALID_ARGUMENT"),
    ({"plan_id": "enterprise"}, "interval", "ERROR_REASON_INVALID_ARGUMENT"),
    (
        {"interval": plan_pb2.BILLING_INTERVAL_UNSPECIFIED},
        "interval",
        "ERROR_REASON_INVALID_ARGUMENT",
    ),
    ({"network": ""}, "network", "ERROR_REASON_UNKNOWN_NETWORK"),
    ({"network": "solana"}, "network", "ERROR_REASON_UNKNOWN_NETWORK"),
    ({"network": "ethereum"}, "network", "ERROR_REASON_UNKNOWN_NETWORK"),
    ({"currency": "BTC"}, "currency", "ERROR_REASON_UNSUPPORTED_CURRENCY"),
    ({"currency": "usdc"}, "currency", "ERROR_REASON_UNSUPPORTED_CURRENCY"),
    ({"currency": "USDT"}, "currency", "ERROR_REASON_UNSUPPORTED_CURRENCY"),
    ({"currency": ""}, "currency", "ERROR_REASON_INVALID_ARGUMENT"),
    ({"payer_address": "0x1234"}, "payer_address", "ERROR_REASON_INVALID_ARGUMENT"),
    ({"payer_address": "not an address"}, "payer_address", "ERROR_REASON_INVALID_ARGUMENT"),
]


@pytest.mark.parametrize(("fields", "field", "reason"), BAD, ids=[f"{b[1]}-{b[0]}" for b in BAD])
async def test_bad_quote_request_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel, fields: dict[str, Any], field: str, reason: str
) -> None:
    stub = pb_grpc.CryptoPaymentServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateCryptoPayment(request(**fields), metadata=OPS)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    info, named = details(caught.value)
    assert named == [field]
    assert info is not None and info.reason == reason


async def test_unknown_payment_is_not_found_and_a_malformed_hash_invalid(
    channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.CryptoPaymentServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetCryptoPayment(pb.GetCryptoPaymentRequest(payment_id="cp_nope"), metadata=OPS)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetTransactionStatus(
            pb.GetTransactionStatusRequest(network="local", tx_hash="0x1234"), metadata=OPS
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == ["tx_hash"]
    unknown = await stub.GetTransactionStatus(
        pb.GetTransactionStatusRequest(network="local", tx_hash="0x" + "12" * 32), metadata=OPS
    )
    assert unknown.status == pb.TRANSACTION_STATUS_NOT_FOUND


async def test_a_quote_over_grpc_is_paid_confirmed_and_seen_by_entitlement_watchers(
    running: Running, channel: grpc.aio.Channel, chain: ChainKit
) -> None:
    stub = pb_grpc.CryptoPaymentServiceStub(channel)
    ent = ent_grpc.EntitlementsServiceStub(channel)
    quote = (await stub.CreateCryptoPayment(request(), metadata=OPS)).payment
    assert quote.status == pb.CRYPTO_PAYMENT_STATUS_PENDING
    assert quote.chain_id == 31337 and quote.decimals == 6 and quote.price_cents == 2500
    assert quote.amount.startswith("25.00") and len(quote.amount) == len("25.000001")
    assert quote.amount_base_units == str(25_000_000 + int(quote.amount[-4:]))
    assert quote.expires_at.ToSeconds() - quote.created_at.ToSeconds() == 900
    assert quote.required_confirmations == DEPTH and quote.payer_address == ""
    payer = new_wallet().address
    bound = (
        await stub.CreateCryptoPayment(
            request(account_id="bound", payer_address=payer.lower()), metadata=OPS
        )
    ).payment
    assert bound.payer_address == payer and bound.amount != quote.amount
    deps = running.deps
    assert deps.crypto is not None
    (watcher,) = deps.crypto.watchers
    await watcher.catch_up()
    watch = ent.WatchEntitlements(
        ent_pb.WatchEntitlementsRequest(account_ids=["acme"], send_initial=True), metadata=OPS
    )
    first = await asyncio.wait_for(watch.read(), 5)  # the current state comes first
    assert first.entitlements.plan_id == "free"
    token = chain.w3.eth.contract(
        address=quote.token_contract, abi=chain.contracts["TestERC20"]["abi"]
    )
    await chain.transact(token.functions.mint(quote.pay_to_address, int(quote.amount_base_units)))
    await chain.w3.provider.make_request("anvil_mine", [hex(DEPTH - 1)])  # type: ignore[arg-type]
    await watcher.catch_up()
    paid = (
        await stub.GetCryptoPayment(
            pb.GetCryptoPaymentRequest(payment_id=quote.payment_id), metadata=OPS
        )
    ).payment
    assert paid.status == pb.CRYPTO_PAYMENT_STATUS_CONFIRMED
    assert paid.received_amount == quote.amount and paid.confirmations == DEPTH
    changed = await asyncio.wait_for(watch.read(), 5)
    assert changed.entitlements.plan_id == "pro"
    watch.cancel()
    allowed = await ent.CanUseFeature(
        ent_pb.CanUseFeatureRequest(account_id="acme", feature="tokenGating"), metadata=OPS
    )
    assert allowed.allowed
    status = await stub.GetTransactionStatus(
        pb.GetTransactionStatusRequest(network="local", tx_hash=paid.tx_hash), metadata=OPS
    )
    assert status.status == pb.TRANSACTION_STATUS_CONFIRMED
    assert status.payment_id == quote.payment_id and status.confirmations == DEPTH
    # The payment counts in revenue analytics, as crypto, at its quoted USD value.
    revenue = await admin_grpc.AdminServiceStub(channel).GetRevenueMetrics(
        admin_pb.GetRevenueMetricsRequest(), metadata=OPS
    )
    assert revenue.total_revenue_cents == 2500
    methods = {m.payment_method: m for m in revenue.payment_method_breakdown}
    crypto = methods[subscription_pb2.PAYMENT_METHOD_CRYPTO]
    assert (crypto.revenue_cents, crypto.payments, crypto.active_subscriptions) == (2500, 1, 1)
    assert revenue.mrr_cents == 2500


async def test_an_activated_payment_carries_the_revision_a_check_must_reach_to_see_it(
    running: Running, channel: grpc.aio.Channel, chain: ChainKit
) -> None:
    stub = pb_grpc.CryptoPaymentServiceStub(channel)
    ent = ent_grpc.EntitlementsServiceStub(channel)
    before = await ent.GetEntitlements(
        ent_pb.GetEntitlementsRequest(account_id="rev-acme"), metadata=OPS
    )
    quote = (await stub.CreateCryptoPayment(request(account_id="rev-acme"), metadata=OPS)).payment
    assert quote.revision == 0  # nothing activated yet
    deps = running.deps
    assert deps.crypto is not None
    (watcher,) = deps.crypto.watchers
    await watcher.catch_up()
    token = chain.w3.eth.contract(
        address=quote.token_contract, abi=chain.contracts["TestERC20"]["abi"]
    )
    await chain.transact(token.functions.mint(quote.pay_to_address, int(quote.amount_base_units)))
    await chain.w3.provider.make_request("anvil_mine", [hex(DEPTH - 1)])  # type: ignore[arg-type]
    await watcher.catch_up()
    paid = (
        await stub.GetCryptoPayment(
            pb.GetCryptoPaymentRequest(payment_id=quote.payment_id), metadata=OPS
        )
    ).payment
    assert paid.status == pb.CRYPTO_PAYMENT_STATUS_CONFIRMED
    assert paid.revision > before.entitlements.revision
    check = await ent.CanUseFeature(
        ent_pb.CanUseFeatureRequest(
            account_id="rev-acme", feature="tokenGating", min_revision=paid.revision
        ),
        metadata=OPS,
    )
    assert check.allowed and check.revision == paid.revision
    status = await stub.GetTransactionStatus(
        pb.GetTransactionStatusRequest(network="local", tx_hash=paid.tx_hash), metadata=OPS
    )
    assert status.payment_id == quote.payment_id and status.revision == paid.revision


async def test_without_a_receiving_address_quotes_are_refused_as_failed_precondition(
    settings: Settings, store: Store, anvil: AnvilNode, tokens: TestTokens
) -> None:
    configured = replace(
        settings,
        chains=local_settings(anvil),
        crypto=crypto_settings(tokens, "0x" + "00" * 20, pay_to_address=None),
    )
    server = await create_server(configured, build_deps(configured, store), addr="127.0.0.1:0")
    await server.server.start()
    try:
        assert server.deps.crypto is not None and server.deps.crypto.watchers == []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
            stub = pb_grpc.CryptoPaymentServiceStub(opened)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateCryptoPayment(request(), metadata=OPS)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS" in (caught.value.details() or "")
    finally:
        await server.stop(0)


async def test_the_runtime_starts_a_watcher_per_network_and_closing_stops_it(
    running: Running,
) -> None:
    crypto = running.deps.crypto
    assert crypto is not None
    await crypto.start()
    (watcher,) = crypto.watchers
    assert watcher.network == "local" and watcher.running
    await crypto.close()  # what Deps.close() calls at shutdown
    assert not watcher.running


async def test_the_watchers_position_is_exported_for_metrics(
    running: Running, chain: ChainKit
) -> None:
    from entitlements.observability.metrics import REGISTRY

    def gauge(name: str) -> float | None:
        for family in REGISTRY.collect():
            for sample in family.samples:
                if sample.name == name and sample.labels.get("network") == "local":
                    return float(sample.value)
        return None

    assert running.deps.crypto is not None
    (watcher,) = running.deps.crypto.watchers
    await chain.w3.provider.make_request("anvil_mine", ["0x3"])  # type: ignore[arg-type]
    result = await watcher.catch_up()
    assert gauge("entitlements_chain_head_block") == result.head
    assert gauge("entitlements_chain_watcher_lag_blocks") == 0


async def test_admin_lists_and_refunds_unsettled_funds_over_grpc(
    running: Running, channel: grpc.aio.Channel, chain: ChainKit, tokens: TestTokens
) -> None:
    from tests.server.conftest import CHAT

    admin = admin_grpc.AdminServiceStub(channel)
    stub = pb_grpc.CryptoPaymentServiceStub(channel)
    quote = (await stub.CreateCryptoPayment(request(), metadata=OPS)).payment
    assert running.deps.crypto is not None
    (watcher,) = running.deps.crypto.watchers
    await watcher.catch_up()
    # A round amount carries no quote's digits: unmatched.
    await chain.transact(tokens.usdc6.functions.mint(quote.pay_to_address, 7 * 10**6))
    await chain.w3.provider.make_request("anvil_mine", [hex(DEPTH - 1)])  # type: ignore[arg-type]
    await watcher.catch_up()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ListUnsettledFunds(admin_pb.ListUnsettledFundsRequest(), metadata=CHAT)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await admin.ListUnsettledFunds(admin_pb.ListUnsettledFundsRequest(), metadata=OPS)
    (item,) = listed.funds
    assert item.kind == admin_pb.UNSETTLED_FUNDS_KIND_UNMATCHED
    assert (item.currency, item.received_amount, item.network) == ("USDC", "7", "local")
    assert item.id.startswith("ut_") and not item.HasField("resolution")
    bad = [
        (admin_pb.ResolveUnsettledFundsRequest(id=item.id), "action"),
        (
            admin_pb.ResolveUnsettledFundsRequest(
                id=item.id, refund=admin_pb.RefundFunds(tx_hash="0x12")
            ),
            "refund.tx_hash",
        ),
        (
            admin_pb.ResolveUnsettledFundsRequest(
                id=item.id,
                credit=admin_pb.CreditFunds(account_id="acme", plan_id="gold", interval=MONTH),
            ),
            "credit.plan_id",
        ),
    ]
    for message, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.ResolveUnsettledFunds(message, metadata=OPS)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert details(caught.value)[1] == [field]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ListUnsettledFunds(admin_pb.ListUnsettledFundsRequest(kind=99), metadata=OPS)
    assert details(caught.value)[1] == ["kind"]
    refund = "0x" + "ab" * 32
    resolved = await admin.ResolveUnsettledFunds(
        admin_pb.ResolveUnsettledFundsRequest(
            id=item.id, refund=admin_pb.RefundFunds(tx_hash=refund), reason="sent back"
        ),
        metadata=OPS,
    )
    r = resolved.funds.resolution
    assert r.action == admin_pb.FUNDS_RESOLUTION_ACTION_REFUNDED
    assert (r.refund_tx_hash, r.actor, r.reason) == (refund, "ops", "sent back")
    assert not (
        await admin.ListUnsettledFunds(admin_pb.ListUnsettledFundsRequest(), metadata=OPS)
    ).funds
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ResolveUnsettledFunds(
            admin_pb.ResolveUnsettledFundsRequest(
                id=item.id, refund=admin_pb.RefundFunds(tx_hash=refund)
            ),
            metadata=OPS,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
