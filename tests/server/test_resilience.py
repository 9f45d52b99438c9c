"""Faults survived: the database going away and coming back, overload, restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc
from sqlalchemy.engine import make_url

from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.conftest import PostgresServer
from tests.faults import FaultyLink
from tests.server.conftest import CALLERS_TOML, OPS, subscription
from tests.server.helpers import details

pytestmark = pytest.mark.postgres


@pytest.fixture
async def link_url(postgres_server: PostgresServer) -> AsyncIterator[tuple[str, FaultyLink]]:
    """A fresh migrated PostgreSQL database reached through a link the test can cut."""
    url = await postgres_server.create_database()
    await upgrade(url)
    parsed = make_url(url)
    link = await FaultyLink(parsed.host or "127.0.0.1", parsed.port or 5432).start()
    proxied = parsed.set(host="127.0.0.1", port=link.port).render_as_string(hide_password=False)
    try:
        yield proxied, link
    finally:
        await link.close()
        await postgres_server.drop_database(url)


async def start(tmp_path: Path, url: str, **env: str) -> Running:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    settings = Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers), **env})
    store = Store.open(url)
    running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
    running.deps.closers.insert(0, store.close)
    await running.server.start()
    return running


def events(*keys: str) -> usage_pb.ReportUsageRequest:
    return usage_pb.ReportUsageRequest(
        events=[
            usage_pb.UsageEvent(account_id="ws", metric="messages", delta=2, idempotency_key=k)
            for k in keys
        ]
    )


async def test_database_outage_keeps_cached_checks_refuses_writes_and_recovers(
    tmp_path: Path, link_url: tuple[str, FaultyLink]
) -> None:
    url, link = link_url
    running = await start(tmp_path, url, ENTITLEMENTS_CACHE_TTL_SECONDS="0.2")
    try:
        await running.deps.service.save_subscription(subscription("ws-paid", "pro"))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            checks = ent_grpc.EntitlementsServiceStub(channel)
            usage = usage_grpc.UsageServiceStub(channel)
            paid = ent_pb.CanUseFeatureRequest(account_id="ws-paid", feature="tokenGating")
            assert (await checks.CanUseFeature(paid, metadata=OPS)).allowed
            await usage.ReportUsage(events("before"), metadata=OPS)

            link.cut()
            await asyncio.sleep(0.3)  # past the cache TTL: the entry is stale now
            answer = await checks.CanUseFeature(paid, metadata=OPS, timeout=5)
            assert answer.allowed and answer.plan_id == "pro", "a cached check keeps answering"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await usage.ReportUsage(events("during"), metadata=OPS, timeout=15)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            info, _ = details(caught.value)
            assert info is not None and info.reason == "ERROR_REASON_DEPENDENCY_UNAVAILABLE"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await checks.CanUseFeature(
                    ent_pb.CanUseFeatureRequest(account_id="ws-unseen", feature="apiAccess"),
                    metadata=OPS,
                    timeout=15,
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

            link.restore()
            deadline = time.monotonic() + 10
            while True:  # no restart: the next calls get through once the link is back
                try:
                    retried = await usage.ReportUsage(events("during"), metadata=OPS, timeout=5)
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    assert time.monotonic() < deadline, "service did not resume"
                    await asyncio.sleep(0.2)
            assert retried.results[0].status == usage_pb.USAGE_EVENT_STATUS_APPLIED
            totals = await usage.GetUsage(usage_pb.GetUsageRequest(account_id="ws"), metadata=OPS)
            assert {m.metric: m.current for m in totals.metrics}["messages"] == 4
    finally:
        await running.stop(0)


async def test_past_the_in_flight_limit_calls_are_shed_at_once(
    tmp_path: Path, link_url: tuple[str, FaultyLink]
) -> None:
    url, link = link_url
    running = await start(tmp_path, url, ENTITLEMENTS_MAX_IN_FLIGHT="8")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            checks = ent_grpc.EntitlementsServiceStub(channel)
            await checks.CanUseFeature(  # open the pool's connection before slowing the link
                ent_pb.CanUseFeatureRequest(account_id="warm", feature="apiAccess"), metadata=OPS
            )
            link.delay = 0.5  # every database answer now takes half a second

            async def call(i: int) -> tuple[grpc.StatusCode, float, grpc.aio.AioRpcError | None]:
                started = time.monotonic()
                try:
                    await checks.CanUseFeature(
                        ent_pb.CanUseFeatureRequest(account_id=f"cold-{i}", feature="apiAccess"),
                        metadata=OPS,
                        timeout=30,
                    )
                    return grpc.StatusCode.OK, time.monotonic() - started, None
                except grpc.aio.AioRpcError as error:
                    return error.code(), time.monotonic() - started, error

            outcomes = await asyncio.gather(*(call(i) for i in range(40)))
        shed = [o for o in outcomes if o[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
        served = [o for o in outcomes if o[0] == grpc.StatusCode.OK]
        assert len(served) >= 8
        assert len(shed) >= 24
        assert len(shed) + len(served) == 40
        assert max(seconds for _, seconds, _ in shed) < 0.4, "shedding must answer at once"
        error = shed[0][2]
        assert error is not None
        info, _ = details(error)
        assert info is not None and info.reason == "ERROR_REASON_OVERLOADED"
        assert running.deps.in_flight.shed == len(shed)
    finally:
        await running.stop(0)
