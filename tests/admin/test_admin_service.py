"""AdminService over gRPC on SQLite and PostgreSQL: metrics, listing, overrides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nchat.entitlements.v1 import admin_service_pb2 as pb
from nchat.entitlements.v1 import admin_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import subscription_pb2
from sqlalchemy import select

from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.models import OverrideAudit
from entitlements.store.repository import Store
from tests.admin import dataset as d
from tests.server.conftest import CHAT, OPS, subscription
from tests.server.helpers import details


def ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


def stub(channel: grpc.aio.Channel) -> pb_grpc.AdminServiceStub:
    return pb_grpc.AdminServiceStub(channel)


async def invalid_field(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    _, fields = details(caught.value)
    assert len(fields) == 1
    return fields[0]


async def test_revenue_metrics_over_grpc_match_the_hand_computed_figures(
    server: Running, channel: grpc.aio.Channel
) -> None:
    await d.load_into(server.deps.store)
    m = await stub(channel).GetRevenueMetrics(
        pb.GetRevenueMetricsRequest(as_of=ts(d.NOW)), metadata=OPS
    )
    assert m.as_of.ToDatetime(tzinfo=UTC) == d.NOW
    assert m.total_revenue_cents == d.EXPECTED_TOTAL
    assert m.mrr_cents == d.EXPECTED_MRR
    assert m.arr_cents == 12 * d.EXPECTED_MRR
    assert m.active_subscriptions == d.EXPECTED_ACTIVE
    assert m.churn_rate == pytest.approx(d.EXPECTED_CHURN)
    assert [(p.plan_id, p.count) for p in m.plan_distribution] == d.EXPECTED_PLANS
    assert [
        (b.payment_method, b.revenue_cents, b.payments, b.active_subscriptions)
        for b in m.payment_method_breakdown
    ] == [
        (subscription_pb2.PAYMENT_METHOD_CARD, d.EXPECTED_CARD_REVENUE, 16, 7),
        (subscription_pb2.PAYMENT_METHOD_CRYPTO, 0, 0, 1),
        (subscription_pb2.PAYMENT_METHOD_MANUAL, 1_200_000, 1, 1),
    ]
    assert (m.failed_payments.count, m.failed_payments.amount_cents) == (2, 8300)
    assert [
        (r.account_id, r.plan_id, r.renews_at.ToDatetime(tzinfo=UTC), r.amount_cents)
        for r in m.upcoming_renewals
    ] == d.EXPECTED_RENEWALS


async def test_revenue_metrics_on_an_empty_database_are_zero(
    lone_channel: grpc.aio.Channel,
) -> None:
    m = await stub(lone_channel).GetRevenueMetrics(pb.GetRevenueMetricsRequest(), metadata=OPS)
    assert (m.total_revenue_cents, m.mrr_cents, m.active_subscriptions, m.churn_rate) == (
        0,
        0,
        0,
        0.0,
    )
    assert abs(m.as_of.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)


async def test_admin_rpcs_need_the_admin_scope(lone_channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(lone_channel).GetRevenueMetrics(pb.GetRevenueMetricsRequest(), metadata=CHAT)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(lone_channel).ListSubscriptions(pb.ListSubscriptionsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_negative_churn_window_names_the_field(lone_channel: grpc.aio.Channel) -> None:
    call = stub(lone_channel).GetRevenueMetrics(
        pb.GetRevenueMetricsRequest(churn_window_days=-1), metadata=OPS
    )
    assert await invalid_field(call) == "churn_window_days"


async def _seed(store: Store, n: int) -> list[str]:
    """n subscriptions created one second apart; their ids newest first."""
    base = datetime.now(UTC) - timedelta(hours=1)
    ids = []
    for i in range(n):
        record = subscription(
            f"ws-{i}", "pro" if i % 2 else "starter", "active" if i % 3 else "canceled"
        )
        record = replace(record, created_at=base + timedelta(seconds=i))
        await store.save_subscription(record)
        ids.append(record.id)
    return ids[::-1]


async def test_list_subscriptions_pages_newest_first_and_is_stable_under_inserts(
    server: Running, channel: grpc.aio.Channel
) -> None:
    ids = await _seed(server.deps.store, 7)
    first = await stub(channel).ListSubscriptions(
        pb.ListSubscriptionsRequest(page_size=3), metadata=OPS
    )
    assert [s.id for s in first.subscriptions] == ids[:3]
    assert first.next_page_token
    # A subscription created now sorts first: it must not shift the pages already handed out.
    await server.deps.store.save_subscription(subscription("ws-new", "business"))
    second = await stub(channel).ListSubscriptions(
        pb.ListSubscriptionsRequest(page_size=3, page_token=first.next_page_token), metadata=OPS
    )
    third = await stub(channel).ListSubscriptions(
        pb.ListSubscriptionsRequest(page_size=3, page_token=second.next_page_token), metadata=OPS
    )
    assert [s.id for s in second.subscriptions] == ids[3:6]
    assert [s.id for s in third.subscriptions] == ids[6:]
    assert third.next_page_token == ""
    everything = await stub(channel).ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=OPS)
    assert [s.id for s in everything.subscriptions] == ["sub_ws-new", *ids]
    assert everything.next_page_token == ""


async def test_list_subscriptions_filters_by_status_and_plan(
    server: Running, channel: grpc.aio.Channel
) -> None:
    ids = await _seed(server.deps.store, 7)
    pro_active = await stub(channel).ListSubscriptions(
        pb.ListSubscriptionsRequest(
            plan_id="pro", status=subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE
        ),
        metadata=OPS,
    )
    expected = [f"sub_ws-{i}" for i in range(7) if i % 2 and i % 3]
    assert [s.id for s in pro_active.subscriptions] == [i for i in ids if i in expected]
    assert {(s.plan_id, s.status) for s in pro_active.subscriptions} == {
        ("pro", subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE)
    }


async def test_a_page_token_from_other_filters_is_invalid(
    lone_server: Running, lone_channel: grpc.aio.Channel
) -> None:
    await _seed(lone_server.deps.store, 4)
    page = await stub(lone_channel).ListSubscriptions(
        pb.ListSubscriptionsRequest(page_size=1), metadata=OPS
    )
    other = stub(lone_channel).ListSubscriptions(
        pb.ListSubscriptionsRequest(page_size=1, page_token=page.next_page_token, plan_id="pro"),
        metadata=OPS,
    )
    assert await invalid_field(other) == "page_token"
    garbage = stub(lone_channel).ListSubscriptions(
        pb.ListSubscriptionsRequest(page_token="not-a-token"), metadata=OPS
    )
    assert await invalid_field(garbage) == "page_token"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"plan_id": "platinum"}, "plan_id"),
        ({"status": subscription_pb2.SUBSCRIPTION_STATUS_NONE}, "status"),
    ],
)
async def test_list_subscriptions_names_a_bad_field(
    lone_channel: grpc.aio.Channel, request_fields: dict[str, object], field: str
) -> None:
    call = stub(lone_channel).ListSubscriptions(
        pb.ListSubscriptionsRequest(**request_fields),  # type: ignore[arg-type]
        metadata=OPS,
    )
    assert await invalid_field(call) == field


async def test_a_page_size_over_500_is_capped(lone_channel: grpc.aio.Channel) -> None:
    page = await stub(lone_channel).ListSubscriptions(
        pb.ListSubscriptionsRequest(page_size=100_000), metadata=OPS
    )
    assert page.next_page_token == ""


async def _audit(store: Store) -> list[OverrideAudit]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(select(OverrideAudit).order_by(OverrideAudit.id))
        return list(rows)  # type: ignore[arg-type]


async def test_set_account_overrides_applies_and_audits_who_what_and_when(
    server: Running, channel: grpc.aio.Channel
) -> None:
    expires = datetime.now(UTC) + timedelta(days=90)
    request = pb.SetAccountOverridesRequest(
        overrides=pb.AccountOverrides(
            account_id="ws-enterprise",
            limits=[
                pb.LimitOverride(key="maxUsers", value=5000),
                pb.LimitOverride(key="maxStorageGB", unlimited=True),
            ],
            granted_features=["ssoIntegration"],
            expires_at=ts(expires),
            reason="contract #42",
        )
    )
    answer = await stub(channel).SetAccountOverrides(request, metadata=OPS)
    assert answer.revision >= 1
    assert {(x.key, x.unlimited, x.value) for x in answer.overrides.limits} == {
        ("maxUsers", False, 5000),
        ("maxStorageGB", True, 0),
    }
    assert list(answer.overrides.granted_features) == ["ssoIntegration"]
    stored_expiry = answer.overrides.expires_at.ToDatetime(tzinfo=UTC)
    assert abs(stored_expiry - expires) < timedelta(milliseconds=1)
    decision = await ent_grpc.EntitlementsServiceStub(channel).CanUseFeature(
        ent_pb.CanUseFeatureRequest(account_id="ws-enterprise", feature="ssoIntegration"),
        metadata=OPS,
    )
    assert decision.allowed and decision.revision == answer.revision

    # Replaced: the audit row says who, when, and the old and the new set.
    request.overrides.ClearField("granted_features")
    await stub(channel).SetAccountOverrides(request, metadata=OPS)
    audit = await _audit(server.deps.store)
    assert [row.actor for row in audit] == ["ops", "ops"]
    assert audit[1].details["reason"] == "contract #42"
    assert {o["key"] for o in audit[1].details["old"]} == {
        "maxUsers",
        "maxStorageGB",
        "ssoIntegration",
    }
    assert {o["key"] for o in audit[1].details["new"]} == {"maxUsers", "maxStorageGB"}
    assert abs(audit[1].created_at - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"limits": [pb.LimitOverride(key="maxWidgets", value=1)]}, "overrides.limits[0].key"),
        (
            {
                "limits": [
                    pb.LimitOverride(key="maxUsers", value=1),
                    pb.LimitOverride(key="maxBots", value=-5),
                ]
            },
            "overrides.limits[1].value",
        ),
        ({"granted_features": ["teleportation"]}, "overrides.granted_features[0]"),
        (
            {"granted_features": ["apiAccess"], "revoked_features": ["webhooks", "apiAccess"]},
            "overrides.revoked_features[1]",
        ),
        ({"expires_at": Timestamp(seconds=1_600_000_000)}, "overrides.expires_at"),
        ({"account_id": ""}, "overrides.account_id"),
    ],
)
async def test_bad_overrides_name_the_field_and_write_nothing(
    lone_server: Running,
    lone_channel: grpc.aio.Channel,
    overrides: dict[str, object],
    field: str,
) -> None:
    fields: dict[str, object] = {"account_id": "ws-1", **overrides}
    call = stub(lone_channel).SetAccountOverrides(
        pb.SetAccountOverridesRequest(overrides=pb.AccountOverrides(**fields)),  # type: ignore[arg-type]
        metadata=OPS,
    )
    assert await invalid_field(call) == field
    assert await _audit(lone_server.deps.store) == []


async def test_in_dev_mode_overrides_are_audited_as_dev(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1"})
    running = await create_server(settings, build_deps(settings, sqlite_store), addr="127.0.0.1:0")
    await running.server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            await stub(ch).SetAccountOverrides(
                pb.SetAccountOverridesRequest(
                    overrides=pb.AccountOverrides(
                        account_id="ws-dev", granted_features=["webhooks"]
                    )
                )
            )
    finally:
        await running.stop(0)
    assert [row.actor for row in await _audit(sqlite_store)] == ["dev"]


@pytest.mark.parametrize(
    "as_of",
    [Timestamp(seconds=-62_135_596_800), Timestamp(seconds=1_795_000_000, nanos=-1)],
    ids=["year-1", "negative-nanos"],
)
async def test_an_as_of_out_of_range_names_the_field(
    lone_channel: grpc.aio.Channel, as_of: Timestamp
) -> None:
    call = stub(lone_channel).GetRevenueMetrics(
        pb.GetRevenueMetricsRequest(as_of=as_of), metadata=OPS
    )
    assert await invalid_field(call) == "as_of"
