"""Two replicas on one database: what happens through one reaches the other's watchers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import plan_pb2
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.server.conftest import OPS, subscription


@pytest.fixture
async def replicas(database_url: str, settings: Settings) -> AsyncIterator[tuple[Running, Running]]:
    await upgrade(database_url)
    running = []
    for _ in range(2):
        store = Store.open(database_url)
        server = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
        server.deps.closers.insert(0, store.close)
        await server.server.start()
        running.append(server)
    try:
        yield running[0], running[1]
    finally:
        for server in running:
            await server.stop(0)


async def test_changes_and_thresholds_made_through_one_replica_reach_the_others_watchers(
    replicas: tuple[Running, Running],
) -> None:
    a, b = replicas
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as to_a,
        grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as to_b,
    ):
        watch = ent_grpc.EntitlementsServiceStub(to_b).WatchEntitlements(
            ent_pb.WatchEntitlementsRequest(account_ids=["ws"], send_initial=True), metadata=OPS
        )
        assert (await asyncio.wait_for(watch.read(), 5)).entitlements.plan_id == "free"

        await a.deps.service.save_subscription(subscription("ws", "pro"))
        changed = await asyncio.wait_for(watch.read(), 1.5)
        assert (changed.entitlements.plan_id, changed.entitlements.revision) == ("pro", 1)

        await usage_grpc.UsageServiceStub(to_a).SetUsage(
            usage_pb.SetUsageRequest(account_id="ws", metric="users", value=160), metadata=OPS
        )  # 160 of pro's 200 users: 80 %
        crossed = (await asyncio.wait_for(watch.read(), 1.5)).threshold_crossed
        assert (crossed.account_id, crossed.metric, crossed.limit_key) == (
            "ws",
            "users",
            "maxUsers",
        )
        assert (crossed.level, crossed.current, crossed.limit) == (
            plan_pb2.USAGE_LEVEL_WARNING,
            160,
            200,
        )
        with pytest.raises(asyncio.TimeoutError):  # reported once, however often it is polled
            await asyncio.wait_for(watch.read(), 0.8)
        watch.cancel()
