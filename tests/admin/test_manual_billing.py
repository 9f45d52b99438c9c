"""Sales-led plans over gRPC on SQLite and PostgreSQL: manual subscriptions created, changed and
ended by an admin drive entitlements and MRR; manual invoices count once as revenue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from nchat.entitlements.v1 import admin_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import plan_pb2, subscription_pb2
from sqlalchemy import func, select

from entitlements.server.app import Running
from entitlements.store.models import ManualInvoice, OverrideAudit, Subscription
from tests.admin.test_admin_service import invalid_field, stub, ts
from tests.server.conftest import CHAT, OPS, subscription
from tests.server.helpers import details

#: One term end for the whole module: a retry sends the same request, byte for byte.
TERM_END = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)
MONTH = plan_pb2.BILLING_INTERVAL_MONTH
YEAR = plan_pb2.BILLING_INTERVAL_YEAR


def terms(**kw: Any) -> pb.ManualSubscriptionTerms:
    values: dict[str, Any] = {
        "plan_id": "enterprise",
        "price_cents": 500_000,
        "currency": "usd",
        "interval": MONTH,
        "term_end": ts(TERM_END),
    }
    values.update(kw)
    return pb.ManualSubscriptionTerms(**values)


async def create(channel: grpc.aio.Channel, account: str, key: str = "", **kw: Any) -> Any:
    return await stub(channel).CreateManualSubscription(
        pb.CreateManualSubscriptionRequest(
            request_id=key or f"contract-{account}",
            account_id=account,
            terms=terms(**kw),
            reason="signed order form",
        ),
        metadata=OPS,
    )


async def mrr(channel: grpc.aio.Channel) -> pb.GetRevenueMetricsResponse:
    return await stub(channel).GetRevenueMetrics(pb.GetRevenueMetricsRequest(), metadata=OPS)


def manual_breakdown(m: pb.GetRevenueMetricsResponse) -> tuple[int, int, int]:
    for b in m.payment_method_breakdown:
        if b.payment_method == subscription_pb2.PAYMENT_METHOD_MANUAL:
            return b.revenue_cents, b.payments, b.active_subscriptions
    return 0, 0, 0


async def count(server: Running, model: Any) -> int:
    async with server.deps.store.engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(model))).scalar_one())


async def test_an_enterprise_contract_grants_the_plan_is_watched_and_appears_in_mrr(
    server: Running, channel: grpc.aio.Channel
) -> None:
    ent = ent_grpc.EntitlementsServiceStub(channel)
    stream = ent.WatchEntitlements(
        ent_pb.WatchEntitlementsRequest(account_ids=["acme"], send_initial=True), metadata=CHAT
    )
    first = await asyncio.wait_for(stream.read(), 5)
    assert first.entitlements.plan_id == "free"

    created = await create(channel, "acme", price_cents=1_200_000, interval=YEAR)

    sub = created.subscription
    assert (sub.price_cents, sub.currency) == (1_200_000, "usd")
    assert sub.subscription.payment_method == subscription_pb2.PAYMENT_METHOD_MANUAL
    assert sub.subscription.plan_id == "enterprise"
    assert sub.subscription.status == subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE
    assert created.revision > first.entitlements.revision
    heard = await asyncio.wait_for(stream.read(), 2)
    assert heard.entitlements.plan_id == "enterprise"
    assert heard.entitlements.revision == created.revision
    stream.cancel()
    answer = await ent.CanUseFeature(
        ent_pb.CanUseFeatureRequest(
            account_id="acme", feature="onPremise", min_revision=created.revision
        ),
        metadata=CHAT,
    )
    assert answer.allowed and answer.plan_id == "enterprise"

    m = await mrr(channel)
    assert m.mrr_cents == 100_000  # 1,200,000 a year / 12: the contract's price, not an invoice
    assert m.arr_cents == 1_200_000
    assert manual_breakdown(m) == (0, 0, 1)
    assert [(p.plan_id, p.count) for p in m.plan_distribution if p.count] == [("enterprise", 1)]


async def test_a_retried_create_answers_the_first_call_and_writes_once(
    server: Running, channel: grpc.aio.Channel
) -> None:
    first = await create(channel, "acme", key="order-77")
    again = await create(channel, "acme", key="order-77")

    assert again.subscription.subscription.id == first.subscription.subscription.id
    assert again.revision == first.revision
    assert await count(server, Subscription) == 1
    assert await count(server, OverrideAudit) == 1

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(channel, "acme", key="order-77", price_cents=1)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info, _ = details(caught.value)
    assert info is not None and info.reason == "ERROR_REASON_IDEMPOTENCY_KEY_REUSED"
    assert await count(server, Subscription) == 1


async def test_concurrent_retries_of_a_create_write_one_subscription(
    server: Running, channel: grpc.aio.Channel
) -> None:
    answers = await asyncio.gather(*(create(channel, "acme", key="same") for _ in range(8)))

    assert len({a.subscription.subscription.id for a in answers}) == 1
    assert await count(server, OverrideAudit) == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"request_id": ""}, "request_id"),
        ({"account_id": ""}, "account_id"),
        ({"terms": {"plan_id": ""}}, "terms.plan_id"),
        ({"terms": {"plan_id": "platinum"}}, "terms.plan_id"),
        ({"terms": {"plan_id": "free"}}, "terms.plan_id"),
        ({"terms": {"price_cents": 0}}, "terms.price_cents"),
        ({"terms": {"price_cents": -5}}, "terms.price_cents"),
        ({"terms": {"currency": "dollars"}}, "terms.currency"),
        ({"terms": {"interval": plan_pb2.BILLING_INTERVAL_UNSPECIFIED}}, "terms.interval"),
        ({"terms": {"interval": 9}}, "terms.interval"),
        ({"terms": {"term_start": ts(datetime.now(UTC) + timedelta(days=3))}}, "terms.term_start"),
        ({"terms": {"term_end": ts(datetime.now(UTC) - timedelta(days=1))}}, "terms.term_end"),
        (
            {
                "terms": {
                    "term_start": ts(datetime.now(UTC) - timedelta(days=1)),
                    "term_end": ts(datetime.now(UTC) - timedelta(days=2)),
                }
            },
            "terms.term_end",
        ),
        ({"reason": "x" * 2001}, "reason"),
    ],
)
async def test_bad_create_requests_name_the_field_and_change_nothing(
    lone_server: Running, lone_channel: grpc.aio.Channel, fields: dict[str, Any], field: str
) -> None:
    values: dict[str, Any] = {"request_id": "k1", "account_id": "acme", "reason": ""}
    term_fields = fields.pop("terms", {})
    values.update(fields)
    request = pb.CreateManualSubscriptionRequest(terms=terms(**term_fields), **values)

    assert (
        await invalid_field(stub(lone_channel).CreateManualSubscription(request, metadata=OPS))
        == field
    )
    assert await count(lone_server, Subscription) == 0
    assert await count(lone_server, OverrideAudit) == 0


async def test_manual_rpcs_need_the_admin_scope(lone_channel: grpc.aio.Channel) -> None:
    calls = [
        stub(lone_channel).CreateManualSubscription(
            pb.CreateManualSubscriptionRequest(), metadata=CHAT
        ),
        stub(lone_channel).RecordManualInvoice(pb.RecordManualInvoiceRequest(), metadata=CHAT),
        stub(lone_channel).ListAuditEntries(pb.ListAuditEntriesRequest(), metadata=CHAT),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_changing_and_ending_a_contract_moves_the_plan_and_mrr(
    server: Running, channel: grpc.aio.Channel
) -> None:
    created = await create(channel, "acme", plan_id="business", price_cents=60_000)
    sub_id = created.subscription.subscription.id
    assert (await mrr(channel)).mrr_cents == 60_000

    changed = await stub(channel).UpdateManualSubscription(
        pb.UpdateManualSubscriptionRequest(
            subscription_id=sub_id,
            terms=pb.ManualSubscriptionTerms(plan_id="enterprise", price_cents=90_000),
            reason="upsell",
        ),
        metadata=OPS,
    )
    assert changed.revision > created.revision
    assert changed.subscription.subscription.plan_id == "enterprise"
    assert changed.subscription.price_cents == 90_000
    assert changed.subscription.currency == "usd"  # kept
    assert (await mrr(channel)).mrr_cents == 90_000
    got = await ent_grpc.EntitlementsServiceStub(channel).GetEntitlements(
        ent_pb.GetEntitlementsRequest(account_id="acme", min_revision=changed.revision),
        metadata=CHAT,
    )
    assert got.entitlements.plan_id == "enterprise"

    ended = await stub(channel).EndManualSubscription(
        pb.EndManualSubscriptionRequest(subscription_id=sub_id, reason="contract lapsed"),
        metadata=OPS,
    )
    assert ended.revision > changed.revision
    assert ended.subscription.subscription.status == subscription_pb2.SUBSCRIPTION_STATUS_CANCELED
    got = await ent_grpc.EntitlementsServiceStub(channel).GetEntitlements(
        ent_pb.GetEntitlementsRequest(account_id="acme", min_revision=ended.revision),
        metadata=CHAT,
    )
    assert got.entitlements.plan_id == "free"
    m = await mrr(channel)
    assert (m.mrr_cents, m.active_subscriptions) == (0, 0)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).EndManualSubscription(
            pb.EndManualSubscriptionRequest(subscription_id=sub_id), metadata=OPS
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_only_manual_subscriptions_are_changed_here(
    server: Running, channel: grpc.aio.Channel
) -> None:
    await server.deps.service.save_subscription(subscription("ws-card", "pro"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).UpdateManualSubscription(
            pb.UpdateManualSubscriptionRequest(
                subscription_id="sub_ws-card", terms=pb.ManualSubscriptionTerms(price_cents=1)
            ),
            metadata=OPS,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).EndManualSubscription(
            pb.EndManualSubscriptionRequest(subscription_id="ms_nope"), metadata=OPS
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert await count(server, OverrideAudit) == 0


async def test_a_second_live_contract_for_an_account_is_refused(
    lone_channel: grpc.aio.Channel,
) -> None:
    await create(lone_channel, "acme", key="first")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(lone_channel, "acme", key="second")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def invoice(
    channel: grpc.aio.Channel, sub_id: str, **kw: Any
) -> pb.RecordManualInvoiceResponse:
    values: dict[str, Any] = {
        "subscription_id": sub_id,
        "amount_cents": 500_000,
        "currency": "USD",
        "reference": "INV-2026-001",
    }
    values.update(kw)
    return await stub(channel).RecordManualInvoice(
        pb.RecordManualInvoiceRequest(**values), metadata=OPS
    )


async def test_a_manual_invoice_counts_once_as_manual_revenue(
    server: Running, channel: grpc.aio.Channel
) -> None:
    sub_id = (await create(channel, "acme")).subscription.subscription.id

    first = await invoice(channel, sub_id)
    again = await invoice(channel, sub_id)

    assert not first.already_recorded and again.already_recorded
    assert again.invoice.id == first.invoice.id
    assert (first.invoice.currency, first.invoice.account_id) == ("usd", "acme")
    assert first.invoice.recorded_by == "ops"
    m = await mrr(channel)
    assert m.total_revenue_cents == 500_000
    assert manual_breakdown(m) == (500_000, 1, 1)
    assert await count(server, ManualInvoice) == 1

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await invoice(channel, sub_id, amount_cents=400_000)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (await mrr(channel)).total_revenue_cents == 500_000


async def test_concurrent_records_of_one_invoice_count_it_once(
    server: Running, channel: grpc.aio.Channel
) -> None:
    sub_id = (await create(channel, "acme")).subscription.subscription.id
    answers = await asyncio.gather(*(invoice(channel, sub_id) for _ in range(4)))

    assert sum(not a.already_recorded for a in answers) == 1
    assert (await mrr(channel)).total_revenue_cents == 500_000
    assert await count(server, OverrideAudit) == 2  # the create and one invoice


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"subscription_id": ""}, "subscription_id"),
        ({"amount_cents": 0}, "amount_cents"),
        ({"currency": "eu"}, "currency"),
        ({"reference": ""}, "reference"),
        ({"reference": " padded"}, "reference"),
        ({"paid_at": ts(datetime.now(UTC) + timedelta(days=2))}, "paid_at"),
    ],
)
async def test_bad_invoices_name_the_field_and_count_nothing(
    lone_server: Running, lone_channel: grpc.aio.Channel, fields: dict[str, Any], field: str
) -> None:
    sub_id = (await create(lone_channel, "acme")).subscription.subscription.id
    values: dict[str, Any] = {
        "subscription_id": sub_id,
        "amount_cents": 100,
        "currency": "usd",
        "reference": "INV-1",
    }
    values.update(fields)
    call = stub(lone_channel).RecordManualInvoice(
        pb.RecordManualInvoiceRequest(**values), metadata=OPS
    )
    assert await invalid_field(call) == field
    assert await count(lone_server, ManualInvoice) == 0


async def test_a_contract_in_euros_is_counted_apart_from_the_usd_figures(
    server: Running, channel: grpc.aio.Channel
) -> None:
    euro = await create(channel, "acme-eu", currency="EUR", price_cents=300_000)
    await create(channel, "acme-us", price_cents=200_000)
    await invoice(channel, euro.subscription.subscription.id, currency="eur", amount_cents=300_000)

    m = await mrr(channel)
    assert m.mrr_cents == 200_000
    assert m.total_revenue_cents == 0
    assert manual_breakdown(m) == (0, 0, 2)
    metrics = await server.deps.admin.revenue_metrics()
    assert [(c.currency, c.payments, c.amount_minor) for c in metrics.mrr_other_currencies] == [
        ("eur", 1, 300_000)
    ]
    assert [(c.currency, c.amount_minor) for c in metrics.other_currencies] == [("eur", 300_000)]


def test_a_manual_term_lapses_at_its_end_and_an_open_ended_one_never() -> None:
    from entitlements.policies import default_catalog
    from entitlements.state import derive
    from entitlements.store.records import AccountSnapshot, SubscriptionRecord

    catalog = default_catalog()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2027, 1, 1, tzinfo=UTC)
    record = SubscriptionRecord(
        id="ms_1",
        account_id="acme",
        plan_id="enterprise",
        status="active",
        interval="year",
        payment_method="manual",
        current_period_start=start,
        current_period_end=end,
        price_cents=1_200_000,
        currency="usd",
        created_at=start,
        updated_at=start,
    )

    def plan(sub: SubscriptionRecord, at: datetime) -> str:
        snapshot = AccountSnapshot(account_id="acme", revision=1, subscription=sub)
        return derive(catalog, "acme", snapshot, now=at, past_due_grace=timedelta(days=7)).plan_id

    assert plan(record, end - timedelta(seconds=1)) == "enterprise"
    assert plan(record, end) == "free"
    open_ended = SubscriptionRecord(
        **{
            **{f: getattr(record, f) for f in record.__dataclass_fields__},
            "current_period_end": None,
        }
    )
    assert plan(open_ended, end + timedelta(days=900)) == "enterprise"


async def test_a_retried_end_with_its_request_id_answers_the_first_call(
    server: Running, channel: grpc.aio.Channel
) -> None:
    sub_id = (await create(channel, "acme")).subscription.subscription.id
    request = pb.EndManualSubscriptionRequest(
        subscription_id=sub_id, reason="churned", request_id="end-acme"
    )

    first = await stub(channel).EndManualSubscription(request, metadata=OPS)
    again = await stub(channel).EndManualSubscription(request, metadata=OPS)

    assert again.revision == first.revision
    assert again.subscription.subscription.status == subscription_pb2.SUBSCRIPTION_STATUS_CANCELED
    assert await count(server, OverrideAudit) == 2  # the create and one end
