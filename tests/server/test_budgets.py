"""Reads and writes have separate in-flight budgets: a flood of one kind never sheds the other."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pool import Default as default_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import token_gate_service_pb2 as gate_pb
from nchat.entitlements.v1 import token_gate_service_pb2_grpc as gate_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

from entitlements.config import Settings
from entitlements.observability.metrics import render
from entitlements.server.app import SERVICE_NAMES, Running, build_deps, create_server
from entitlements.server.status import READ_METHODS
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML, OPS
from tests.server.helpers import details

BUDGET = 4
FLOOD = 12
TOKEN = "0x" + "11" * 20
WALLET = "0x" + "22" * 20


class SilentNode:
    """A chain node that accepts connections and never answers: chain reads hang."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> SilentNode:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    async def close(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def node() -> AsyncIterator[SilentNode]:
    silent = await SilentNode().start()
    try:
        yield silent
    finally:
        await silent.close()


@pytest.fixture
async def server(tmp_path: Path, node: SilentNode) -> AsyncIterator[Running]:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    settings = Settings.from_env(
        {
            "ENTITLEMENTS_CALLERS_FILE": str(callers),
            "ENTITLEMENTS_MAX_IN_FLIGHT": str(BUDGET),
            "ENTITLEMENTS_RPC_URL_LOCAL": f"http://127.0.0.1:{node.port}",
            "ENTITLEMENTS_RPC_TIMEOUT_SECONDS": "30",
        }
    )
    url = f"sqlite+aiosqlite:///{tmp_path / 'budgets.db'}"
    await upgrade(url)
    store = Store.open(url)
    running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
    running.deps.closers.insert(0, store.close)
    await running.server.start()
    await running.set_serving(True)
    try:
        yield running
    finally:
        await running.stop(0)


async def outcome(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            info, _ = details(error)
            assert info is not None and info.reason == "ERROR_REASON_OVERLOADED"
        return error.code()
    return grpc.StatusCode.OK


async def refused_at_once(
    calls: list[asyncio.Task[grpc.StatusCode]],
) -> list[asyncio.Task[grpc.StatusCode]]:
    """Wait for the calls past the budget to be refused; the others (returned) stay in flight."""
    while sum(task.done() for task in calls) < FLOOD - BUDGET:
        await asyncio.wait([t for t in calls if not t.done()], return_when="FIRST_COMPLETED")
    refused = [t.result() for t in calls if t.done()]
    assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * (FLOOD - BUDGET)
    return [t for t in calls if not t.done()]


def report(key: str) -> usage_pb.ReportUsageRequest:
    event = usage_pb.UsageEvent(account_id="ws", metric="messages", delta=1, idempotency_key=key)
    return usage_pb.ReportUsageRequest(events=[event])


async def health_serving(channel: grpc.aio.Channel) -> bool:
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_write_flood_does_not_shed_reads(server: Running, tmp_path: Path) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        checks = ent_grpc.EntitlementsServiceStub(channel)
        usage = usage_grpc.UsageServiceStub(channel)
        check = ent_pb.CanUseFeatureRequest(account_id="ws", feature="apiAccess")
        await checks.CanUseFeature(check, metadata=OPS)  # cached from now on
        await usage.ReportUsage(report("warm"), metadata=OPS)
        # Another process holds the database's write lock: every write waits in flight.
        lock = sqlite3.connect(tmp_path / "budgets.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            writes = [
                asyncio.create_task(
                    outcome(usage.ReportUsage(report(f"k{i}"), metadata=OPS, timeout=30))
                )
                for i in range(FLOOD)
            ]
            held = await refused_at_once(writes)
            exposed = render().decode()
            assert f'entitlements_rpc_in_flight{{budget="writes"}} {BUDGET}.0' in exposed
            assert f'entitlements_rpc_shed_total{{budget="writes"}} {FLOOD - BUDGET}.0' in exposed
            for _ in range(BUDGET * 2):  # the write budget is full; reads are answered
                assert (await checks.CanUseFeature(check, metadata=OPS, timeout=5)).plan_id
            limit = usage_pb.CheckLimitRequest(account_id="ws", limit="maxUsers")
            assert (await usage.CheckLimit(limit, metadata=OPS, timeout=5)).limit == 10
            assert await health_serving(channel)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert await asyncio.gather(*held) == [grpc.StatusCode.OK] * BUDGET


async def test_a_read_flood_does_not_shed_writes(server: Running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        gate = gate_grpc.TokenGateServiceStub(channel)
        usage = usage_grpc.UsageServiceStub(channel)
        requirement = gate_pb.TokenRequirement(
            token_type=gate_pb.TOKEN_TYPE_ERC20,
            contract_address=TOKEN,
            network="local",
            min_balance="1",
        )
        verify = gate_pb.VerifyTokenRequest(requirement=requirement, wallet_address=WALLET)
        # The chain node never answers: every VerifyToken waits in flight.
        reads = [
            asyncio.create_task(outcome(gate.VerifyToken(verify, metadata=OPS, timeout=30)))
            for _ in range(FLOOD)
        ]
        try:
            await refused_at_once(reads)
            for i in range(BUDGET * 2):  # the read budget is full; writes are answered
                answer = await usage.ReportUsage(report(f"w{i}"), metadata=OPS, timeout=10)
                assert answer.results[0].status == usage_pb.USAGE_EVENT_STATUS_APPLIED
            assert await health_serving(channel)
        finally:
            for task in reads:
                task.cancel()
            await asyncio.gather(*reads, return_exceptions=True)


def test_every_read_is_an_rpc_of_the_published_api() -> None:
    methods = {
        method.name
        for name in SERVICE_NAMES
        for method in default_pool().FindServiceByName(name).methods
    }
    assert methods >= READ_METHODS
    assert "ReportUsage" not in READ_METHODS and "CanUseFeature" in READ_METHODS
