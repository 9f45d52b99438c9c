"""Consistency tokens: a check with `min_revision` answers at least that fresh, on any replica."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

from entitlements.config import Settings
from entitlements.observability.metrics import render
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML, OPS, subscription
from tests.server.helpers import details


@dataclass
class Replica:
    running: Running
    channel: grpc.aio.Channel

    @property
    def ent(self) -> ent_grpc.EntitlementsServiceStub:
        return ent_grpc.EntitlementsServiceStub(self.channel)

    @property
    def usage(self) -> usage_grpc.UsageServiceStub:
        return usage_grpc.UsageServiceStub(self.channel)


def replica_settings(tmp_path: Path, **env: str) -> Settings:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    return Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers), **env})


@pytest.fixture
async def replicas(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Replica, Replica]]:
    """Two replicas on one database whose change feeds do not deliver during a test (a minute's
    poll, no LISTEN): B's cache stays behind A's writes unless a check reads through."""
    await upgrade(database_url)
    settings = replica_settings(
        tmp_path,
        ENTITLEMENTS_CHANGE_FEED_INTERVAL_SECONDS="60",
        ENTITLEMENTS_CHANGE_FEED_LISTEN="0",
        ENTITLEMENTS_MIN_REVISION_WAIT_SECONDS="0.1",
    )
    started: list[Replica] = []
    for _ in range(2):
        store = Store.open(database_url)
        running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
        running.deps.closers.insert(0, store.close)
        await running.server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        started.append(Replica(running, channel))
    try:
        yield started[0], started[1]
    finally:
        for replica in started:
            await replica.channel.close()
            await replica.running.stop(0)


Check = Callable[[Replica, int], Awaitable[tuple[str, int, Any]]]


async def can_use(r: Replica, min_revision: int) -> tuple[str, int, Any]:
    got = await r.ent.CanUseFeature(
        ent_pb.CanUseFeatureRequest(
            account_id="ws", feature="advancedAnalytics", min_revision=min_revision
        ),
        metadata=OPS,
    )
    return got.plan_id, got.revision, got.as_of


async def check_features(r: Replica, min_revision: int) -> tuple[str, int, Any]:
    got = await r.ent.CheckFeatures(
        ent_pb.CheckFeaturesRequest(
            checks=[
                ent_pb.CanUseFeatureRequest(
                    account_id="ws", feature="apiAccess", min_revision=min_revision
                )
            ]
        ),
        metadata=OPS,
    )
    result = got.results[0]
    if result.HasField("error"):
        raise StaleItem(result.error)
    return result.item.plan_id, result.item.revision, result.item.as_of


async def minimum_plan(r: Replica, min_revision: int) -> tuple[str, int, Any]:
    got = await r.ent.CheckMinimumPlan(
        ent_pb.CheckMinimumPlanRequest(
            account_id="ws", minimum_plan_id="pro", min_revision=min_revision
        ),
        metadata=OPS,
    )
    return got.plan_id, got.revision, got.as_of


async def entitlements(r: Replica, min_revision: int) -> tuple[str, int, Any]:
    got = await r.ent.GetEntitlements(
        ent_pb.GetEntitlementsRequest(account_id="ws", min_revision=min_revision), metadata=OPS
    )
    return got.entitlements.plan_id, got.entitlements.revision, got.as_of


async def check_limit(r: Replica, min_revision: int) -> tuple[str, int, Any]:
    got = await r.usage.CheckLimit(
        usage_pb.CheckLimitRequest(
            account_id="ws", limit="maxUsers", current=3, min_revision=min_revision
        ),
        metadata=OPS,
    )
    return got.plan_id, got.revision, got.as_of


class StaleItem(Exception):
    def __init__(self, status: Any) -> None:
        super().__init__(status.message)
        self.status = status


CHECKS = [can_use, check_features, minimum_plan, entitlements, check_limit]
PLANS = ["starter", "pro", "business", "enterprise", "starter"]


async def test_a_fresh_replica_answers_min_revision_from_its_cache(
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    service = a.running.deps.service
    ent = await service.save_subscription(subscription("ws", "pro"))
    for check in CHECKS:
        plan, revision, as_of = await check(a, ent.revision)
        assert (plan, revision) == ("pro", ent.revision)
        assert as_of.seconds > 0  # says when its state was read
    assert service.read_throughs == 0  # the writer's own cache was fresh enough


async def test_a_stale_replica_reads_through_for_a_revision_made_on_another(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    assert (await can_use(b, 0))[:2] == ("free", 0)  # B caches the account
    for check, plan in zip(CHECKS, PLANS, strict=True):
        ent = await a.running.deps.service.save_subscription(subscription("ws", plan))
        stale = await check(b, 0)
        assert stale[1] < ent.revision  # B's cache is behind: its feed has not delivered
        fresh = await check(b, ent.revision)
        assert fresh[:2] == (plan, ent.revision), check.__name__
        assert fresh[2].ToDatetime() >= stale[2].ToDatetime()
        assert (await check(b, 0))[:2] == (plan, ent.revision)  # and B's cache moved on
    assert b.running.deps.service.read_throughs == len(CHECKS)
    assert "entitlements_min_revision_read_throughs_total" in render().decode()


async def test_a_revision_the_database_does_not_have_is_stale_revision(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    ent = await a.running.deps.service.save_subscription(subscription("ws", "pro"))
    for replica in (a, b):
        for check in CHECKS:
            with pytest.raises((grpc.aio.AioRpcError, StaleItem)) as caught:
                await check(replica, ent.revision + 5)
            if isinstance(caught.value, StaleItem):
                status = caught.value.status
                assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
                continue
            error = caught.value
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, check.__name__
            info, _ = details(error)
            assert info is not None and info.reason == "ERROR_REASON_STALE_REVISION"
            assert info.metadata["revision"] == str(ent.revision)


async def test_a_negative_min_revision_is_invalid(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await can_use(a, -1)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == ["min_revision"]
    got = await a.ent.CheckFeatures(
        ent_pb.CheckFeaturesRequest(
            checks=[
                ent_pb.CanUseFeatureRequest(account_id="ws", feature="apiAccess", min_revision=-1)
            ]
        ),
        metadata=OPS,
    )
    assert got.results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
