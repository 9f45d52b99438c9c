"""Usage counts survive kill -9 and stay exact across two replicas on one PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc
import pytest
from nchat.entitlements.v1 import usage_service_pb2 as pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as pb_grpc

from tests.conftest import PostgresServer
from tests.processes import ServerProcess, migrate

pytestmark = pytest.mark.slow

Event = tuple[str, str, int]  # account, key, delta


def request(events: list[Event]) -> pb.ReportUsageRequest:
    return pb.ReportUsageRequest(
        events=[
            pb.UsageEvent(account_id=a, metric="messages", delta=d, idempotency_key=k)
            for a, k, d in events
        ]
    )


async def totals(target: str, accounts: list[str]) -> dict[str, int]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.UsageServiceStub(channel)
        out = {}
        for account in accounts:
            answer = await stub.GetUsage(pb.GetUsageRequest(account_id=account))
            out[account] = {m.metric: m.current for m in answer.metrics}["messages"]
        return out


def expected(events: list[Event], accounts: list[str]) -> dict[str, int]:
    sums = dict.fromkeys(accounts, 0)
    for account, _, delta in events:
        sums[account] += delta
    return sums


async def test_kill_9_loses_no_acknowledged_event_and_counts_none_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    server = ServerProcess(url, tmp_path)
    migrate(server.env, tmp_path)
    server.start()
    rng = random.Random(1)
    accounts = [f"ws-{i}" for i in range(4)]
    attempted: list[Event] = []
    acknowledged: list[Event] = []
    stop = asyncio.Event()

    async def producer(worker: int, stub: pb_grpc.UsageServiceStub) -> None:
        n = 0
        while not stop.is_set():
            batch = [
                (rng.choice(accounts), f"w{worker}-{n}-{i}", rng.randint(1, 9)) for i in range(50)
            ]
            n += 1
            attempted.extend(batch)
            try:
                answer = await stub.ReportUsage(request(batch), timeout=10)
            except grpc.aio.AioRpcError:
                return  # the server is gone: this batch was never acknowledged
            assert all(r.status == pb.USAGE_EVENT_STATUS_APPLIED for r in answer.results)
            acknowledged.extend(batch)

    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = pb_grpc.UsageServiceStub(channel)
        producers = [asyncio.create_task(producer(w, stub)) for w in range(16)]
        await asyncio.sleep(1.5)
        server.kill()
        stop.set()
        await asyncio.gather(*producers)
    assert len(acknowledged) > 500, "the test must kill the server under load"
    assert len(attempted) > len(acknowledged), "some batches must have been in flight"

    restarted = ServerProcess(url, tmp_path).start()
    try:
        after_crash = await totals(restarted.target, accounts)
        acked = expected(acknowledged, accounts)
        for account in accounts:
            assert after_crash[account] >= acked[account], "an acknowledged event was lost"
        # The producers retry everything they ever sent: each event must now count exactly once.
        async with grpc.aio.insecure_channel(restarted.target) as channel:
            stub = pb_grpc.UsageServiceStub(channel)
            acked_keys = {k for _, k, _ in acknowledged}
            for start in range(0, len(attempted), 500):
                batch = attempted[start : start + 500]
                answer = await stub.ReportUsage(request(batch))
                for (_, key, _), result in zip(batch, answer.results, strict=True):
                    if key in acked_keys:
                        assert result.status == pb.USAGE_EVENT_STATUS_DUPLICATE
        assert await totals(restarted.target, accounts) == expected(attempted, accounts)
    finally:
        restarted.stop()


@pytest.mark.postgres
async def test_two_replicas_on_one_postgres_count_exactly(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = await postgres_server.create_database()
    try:
        first = ServerProcess(url, tmp_path)
        migrate(first.env, tmp_path)
        first.start()
        second = ServerProcess(url, tmp_path).start()
        try:
            rng = random.Random(2)
            accounts = [f"ws-{i}" for i in range(3)]
            events = [(rng.choice(accounts), f"k{i}", rng.randint(1, 5)) for i in range(4000)]
            retries = rng.sample(events, 1500)
            sends = events + retries
            rng.shuffle(sends)
            batches = [sends[i : i + 100] for i in range(0, len(sends), 100)]
            async with (
                grpc.aio.insecure_channel(first.target) as a,
                grpc.aio.insecure_channel(second.target) as b,
            ):
                stubs = [pb_grpc.UsageServiceStub(a), pb_grpc.UsageServiceStub(b)]
                answers = await asyncio.gather(
                    *(stubs[i % 2].ReportUsage(request(batch)) for i, batch in enumerate(batches))
                )
            statuses = [r.status for answer in answers for r in answer.results]
            assert statuses.count(pb.USAGE_EVENT_STATUS_APPLIED) == 4000
            assert statuses.count(pb.USAGE_EVENT_STATUS_DUPLICATE) == 1500
            want = expected(events, accounts)
            assert await totals(first.target, accounts) == want
            assert await totals(second.target, accounts) == want
        finally:
            first.stop()
            second.stop()
    finally:
        await postgres_server.drop_database(url)
