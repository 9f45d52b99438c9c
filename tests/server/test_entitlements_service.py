"""EntitlementsService over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import subscription_pb2

from entitlements.policies import Overrides
from entitlements.server.app import Running
from tests.server.conftest import CHAT, subscription
from tests.server.helpers import details, status_details


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.EntitlementsServiceStub:
    return pb_grpc.EntitlementsServiceStub(channel)


async def can_use(
    stub: pb_grpc.EntitlementsServiceStub, account: str, feature: str
) -> pb.CanUseFeatureResponse:
    return await stub.CanUseFeature(
        pb.CanUseFeatureRequest(account_id=account, feature=feature), metadata=CHAT
    )


async def test_unknown_account_is_free_and_denied_api_access_with_starter_upgrade(stub) -> None:
    answer = await can_use(stub, "ws-never-seen", "apiAccess")
    assert not answer.allowed
    assert answer.plan_id == "free"
    assert answer.upgrade_plan_id == "starter"
    assert answer.reason == pb.FEATURE_DECISION_REASON_FEATURE_NOT_IN_PLAN
    assert answer.revision == 0
    assert "free" in answer.message and "apiAccess" in answer.message


async def test_free_account_may_use_basic_features(stub) -> None:
    answer = await can_use(stub, "ws-free", "messaging")
    assert answer.allowed
    assert answer.reason == pb.FEATURE_DECISION_REASON_INCLUDED_IN_PLAN
    assert answer.upgrade_plan_id == ""


async def test_starter_subscription_allows_api_access_at_once(stub, server: Running) -> None:
    assert not (await can_use(stub, "ws-1", "apiAccess")).allowed  # now cached as free
    await server.deps.service.save_subscription(subscription("ws-1", "starter"))
    answer = await can_use(stub, "ws-1", "apiAccess")
    assert answer.allowed
    assert answer.plan_id == "starter"
    assert answer.revision == 1


async def test_get_upgrade_path_from_free_for_custom_branding_is_starter(stub) -> None:
    answer = await stub.GetUpgradePath(
        pb.GetUpgradePathRequest(plan_id="free", feature="customBranding"), metadata=CHAT
    )
    assert answer.plan_id == "starter"
    assert not answer.already_included


async def test_get_upgrade_path_for_an_included_feature_says_so(stub) -> None:
    answer = await stub.GetUpgradePath(
        pb.GetUpgradePathRequest(plan_id="business", feature="tokenGating"), metadata=CHAT
    )
    assert answer.already_included
    assert answer.plan_id == ""


async def test_upgrade_path_to_an_enterprise_only_feature(stub) -> None:
    answer = await stub.GetUpgradePath(
        pb.GetUpgradePathRequest(plan_id="pro", feature="onPremise"), metadata=CHAT
    )
    assert answer.plan_id == "enterprise"


async def test_check_minimum_plan_compares_tiers(stub, server: Running) -> None:
    await server.deps.service.save_subscription(subscription("ws-pro", "pro"))
    for minimum, allowed in (("free", True), ("starter", True), ("pro", True), ("business", False)):
        answer = await stub.CheckMinimumPlan(
            pb.CheckMinimumPlanRequest(account_id="ws-pro", minimum_plan_id=minimum),
            metadata=CHAT,
        )
        assert (answer.allowed, answer.plan_id) == (allowed, "pro"), minimum


async def test_get_entitlements_reports_plan_status_features_limits_and_period(
    stub, server: Running
) -> None:
    end = datetime(2031, 1, 1, tzinfo=UTC)
    await server.deps.service.save_subscription(
        subscription("ws-biz", "business", period_end=end, cancel_at_period_end=True)
    )
    ent = (
        await stub.GetEntitlements(pb.GetEntitlementsRequest(account_id="ws-biz"), metadata=CHAT)
    ).entitlements
    assert ent.account_id == "ws-biz"
    assert ent.plan_id == "business"
    assert ent.subscription_status == subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE
    assert ent.payment_method == subscription_pb2.PAYMENT_METHOD_CARD
    assert "slaGuarantee" in ent.features and "tokenGating" in ent.features
    assert "onPremise" not in ent.features
    limits = {limit.key: limit for limit in ent.limits}
    assert limits["maxUsers"].value == 1000 and not limits["maxUsers"].unlimited
    assert limits["maxMessages"].monthly and limits["maxMessages"].metric == "messages"
    assert limits["maxCallParticipants"].value == 100
    assert ent.current_period_end.ToDatetime(tzinfo=UTC) == end
    assert ent.cancel_at_period_end
    assert ent.revision == 1


async def test_enterprise_limits_are_unlimited(stub, server: Running) -> None:
    await server.deps.service.save_subscription(subscription("ws-ent", "enterprise"))
    ent = (
        await stub.GetEntitlements(pb.GetEntitlementsRequest(account_id="ws-ent"), metadata=CHAT)
    ).entitlements
    assert all(limit.unlimited for limit in ent.limits)
    assert {"dedicatedSupport", "customIntegrations", "onPremise"} <= set(ent.features)


async def test_unknown_account_entitlements_are_free_with_no_subscription(stub) -> None:
    ent = (
        await stub.GetEntitlements(pb.GetEntitlementsRequest(account_id="nobody"), metadata=CHAT)
    ).entitlements
    assert ent.plan_id == "free"
    assert ent.subscription_status == subscription_pb2.SUBSCRIPTION_STATUS_NONE
    assert {limit.key: limit.value for limit in ent.limits}["maxUsers"] == 10


async def test_canceled_subscription_falls_back_to_free(stub, server: Running) -> None:
    await server.deps.service.save_subscription(subscription("ws-c", "pro"))
    assert (await can_use(stub, "ws-c", "tokenGating")).allowed
    await server.deps.service.save_subscription(subscription("ws-c", "pro", "canceled"))
    answer = await can_use(stub, "ws-c", "tokenGating")
    assert not answer.allowed
    assert answer.plan_id == "free"
    assert answer.revision == 2


async def test_override_grant_and_custom_limit_show_in_answers(stub, server: Running) -> None:
    await server.deps.service.set_overrides(
        "ws-o",
        Overrides(limits={"maxUsers": 5000}, granted_features=frozenset({"ssoIntegration"})),
        expires_at=None,
        actor="ops",
        reason="pilot",
    )
    answer = await can_use(stub, "ws-o", "ssoIntegration")
    assert answer.allowed
    assert answer.reason == pb.FEATURE_DECISION_REASON_GRANTED_BY_OVERRIDE
    ent = (
        await stub.GetEntitlements(pb.GetEntitlementsRequest(account_id="ws-o"), metadata=CHAT)
    ).entitlements
    assert {limit.key: limit.value for limit in ent.limits}["maxUsers"] == 5000
    assert list(ent.granted_features) == ["ssoIntegration"]


async def test_check_features_answers_in_order_with_per_item_errors(stub, server: Running) -> None:
    await server.deps.service.save_subscription(subscription("ws-s", "starter"))
    checks = [
        pb.CanUseFeatureRequest(account_id="ws-s", feature="apiAccess"),
        pb.CanUseFeatureRequest(account_id="ws-free", feature="apiAccess"),
        pb.CanUseFeatureRequest(account_id="ws-s", feature="noSuchFeature"),
        pb.CanUseFeatureRequest(account_id="", feature="apiAccess"),
        pb.CanUseFeatureRequest(account_id="ws-s", feature="tokenGating"),
    ]
    results = (
        await stub.CheckFeatures(pb.CheckFeaturesRequest(checks=checks), metadata=CHAT)
    ).results
    assert len(results) == 5
    assert results[0].item.allowed and results[0].item.plan_id == "starter"
    assert not results[1].item.allowed and results[1].item.plan_id == "free"
    assert results[2].WhichOneof("response") == "error"
    assert results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info, fields = status_details(results[2].error)
    assert fields == ["checks[2].feature"]
    assert info is not None and info.reason == "ERROR_REASON_UNKNOWN_FEATURE"
    _, fields = status_details(results[3].error)
    assert fields == ["checks[3].account_id"]
    assert not results[4].item.allowed and results[4].item.upgrade_plan_id == "pro"


async def test_check_features_with_too_many_checks_is_invalid(stub) -> None:
    checks = [pb.CanUseFeatureRequest(account_id="a", feature="apiAccess")] * 1001
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CheckFeatures(pb.CheckFeaturesRequest(checks=checks), metadata=CHAT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == ["checks"]


async def test_list_plans_returns_the_catalog_with_prices(stub) -> None:
    answer = await stub.ListPlans(pb.ListPlansRequest(), metadata=CHAT)
    assert [p.id for p in answer.plans] == ["free", "starter", "pro", "business", "enterprise"]
    pro = answer.plans[2]
    assert {(p.interval, p.amount_cents) for p in pro.prices} == {(1, 2500), (2, 25000)}
    assert pro.inherits_plan_id == "starter"
    assert set(pro.added_features) == {
        "advancedAnalytics",
        "prioritySupport",
        "ssoIntegration",
        "tokenGating",
        "cryptoPayments",
    }
    assert answer.plans[4].custom_pricing and not answer.plans[4].prices
    features = {f.key: f.minimum_plan_id for f in answer.features}
    assert features["customBranding"] == "starter"
    assert features["slaGuarantee"] == "business"


@pytest.mark.parametrize(
    ("rpc", "request_", "field", "reason"),
    [
        (
            "CanUseFeature",
            pb.CanUseFeatureRequest(account_id="ws", feature="teleport"),
            "feature",
            "ERROR_REASON_UNKNOWN_FEATURE",
        ),
        (
            "CanUseFeature",
            pb.CanUseFeatureRequest(account_id="", feature="apiAccess"),
            "account_id",
            "ERROR_REASON_INVALID_ARGUMENT",
        ),
        (
            "CanUseFeature",
            pb.CanUseFeatureRequest(account_id="x" * 257, feature="apiAccess"),
            "account_id",
            "ERROR_REASON_INVALID_ARGUMENT",
        ),
        (
            "CanUseFeature",
            pb.CanUseFeatureRequest(account_id="ws\n1", feature="apiAccess"),
            "account_id",
            "ERROR_REASON_INVALID_ARGUMENT",
        ),
        (
            "CheckMinimumPlan",
            pb.CheckMinimumPlanRequest(account_id="ws", minimum_plan_id="platinum"),
            "minimum_plan_id",
            "ERROR_REASON_UNKNOWN_PLAN",
        ),
        (
            "GetUpgradePath",
            pb.GetUpgradePathRequest(plan_id="gold", feature="apiAccess"),
            "plan_id",
            "ERROR_REASON_UNKNOWN_PLAN",
        ),
        (
            "GetUpgradePath",
            pb.GetUpgradePathRequest(plan_id="free", feature=""),
            "feature",
            "ERROR_REASON_UNKNOWN_FEATURE",
        ),
        (
            "GetEntitlements",
            pb.GetEntitlementsRequest(account_id=""),
            "account_id",
            "ERROR_REASON_INVALID_ARGUMENT",
        ),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    lone_channel: grpc.aio.Channel, rpc: str, request_: object, field: str, reason: str
) -> None:
    stub = pb_grpc.EntitlementsServiceStub(lone_channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, rpc)(request_, metadata=CHAT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()
    info, fields = details(caught.value)
    assert fields == [field]
    assert info is not None and info.reason == reason and info.domain == "entitlements.nchat.v1"


async def test_bad_request_writes_nothing(
    lone_channel: grpc.aio.Channel, lone_server: Running
) -> None:
    stub = pb_grpc.EntitlementsServiceStub(lone_channel)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CanUseFeature(
            pb.CanUseFeatureRequest(account_id="ws-bad", feature="nope"), metadata=CHAT
        )
    assert await lone_server.deps.store.get_account_snapshot("ws-bad") is None
    assert lone_server.deps.service.cache.peek("ws-bad") is None


async def test_watch_sends_initial_state_then_each_change(stub, server: Running) -> None:
    stream = stub.WatchEntitlements(
        pb.WatchEntitlementsRequest(account_ids=["ws-w", "ws-other"], send_initial=True),
        metadata=CHAT,
    )
    first = await asyncio.wait_for(stream.read(), 5)
    second = await asyncio.wait_for(stream.read(), 5)
    assert {first.entitlements.account_id, second.entitlements.account_id} == {"ws-w", "ws-other"}
    assert first.entitlements.plan_id == "free"

    await server.deps.service.save_subscription(subscription("ws-w", "pro"))
    await server.deps.service.save_subscription(subscription("ws-unwatched", "pro"))
    changed = await asyncio.wait_for(stream.read(), 1.0)
    assert changed.entitlements.account_id == "ws-w"
    assert changed.entitlements.plan_id == "pro"
    assert changed.entitlements.revision == 1

    await server.deps.service.save_subscription(subscription("ws-w", "pro", "canceled"))
    changed = await asyncio.wait_for(stream.read(), 1.0)
    assert (changed.entitlements.plan_id, changed.entitlements.revision) == ("free", 2)
    stream.cancel()


async def test_watch_all_accounts_sees_any_change(stub, server: Running) -> None:
    stream = stub.WatchEntitlements(pb.WatchEntitlementsRequest(all_accounts=True), metadata=CHAT)
    await asyncio.sleep(0.1)  # let the subscription register
    await server.deps.service.save_subscription(subscription("ws-any", "starter"))
    changed = await asyncio.wait_for(stream.read(), 1.0)
    assert (changed.entitlements.account_id, changed.entitlements.plan_id) == ("ws-any", "starter")
    stream.cancel()


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.WatchEntitlementsRequest(), "account_ids"),
        (pb.WatchEntitlementsRequest(account_ids=["a"], all_accounts=True), "account_ids"),
        (pb.WatchEntitlementsRequest(account_ids=["ok", ""]), "account_ids[1]"),
    ],
)
async def test_watch_with_bad_request_is_invalid_argument(
    lone_channel: grpc.aio.Channel, request_: pb.WatchEntitlementsRequest, field: str
) -> None:
    stream = pb_grpc.EntitlementsServiceStub(lone_channel).WatchEntitlements(
        request_, metadata=CHAT
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == [field]


async def test_shutdown_ends_watch_streams_with_unavailable(
    lone_channel: grpc.aio.Channel, lone_server: Running
) -> None:
    stream = pb_grpc.EntitlementsServiceStub(lone_channel).WatchEntitlements(
        pb.WatchEntitlementsRequest(account_ids=["ws"], send_initial=True), metadata=CHAT
    )
    await stream.read()
    started = asyncio.get_running_loop().time()
    stop = asyncio.create_task(lone_server.stop(5))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    await stop
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert asyncio.get_running_loop().time() - started < 2, "stream should end before the grace"


async def test_revision_grows_on_every_change(stub, server: Running) -> None:
    revisions = []
    for plan in ("starter", "pro", "business"):
        await server.deps.service.save_subscription(subscription("ws-r", plan))
        revisions.append((await can_use(stub, "ws-r", "apiAccess")).revision)
    assert revisions == [1, 2, 3]


async def test_past_due_keeps_plan_within_grace_and_drops_after(stub, server: Running) -> None:
    recent = datetime.now(UTC) - timedelta(days=1)
    await server.deps.service.save_subscription(
        subscription("ws-pd", "pro", "past_due", past_due_since=recent)
    )
    assert (await can_use(stub, "ws-pd", "tokenGating")).allowed
    long_ago = datetime.now(UTC) - timedelta(days=30)
    await server.deps.service.save_subscription(
        subscription("ws-pd", "pro", "past_due", past_due_since=long_ago)
    )
    answer = await can_use(stub, "ws-pd", "tokenGating")
    assert not answer.allowed and answer.plan_id == "free"
