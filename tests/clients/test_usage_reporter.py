"""UsageReporter: merged in process, one idempotency key per merged event, exactly-once totals
through a network that fails at random, nothing dropped silently."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from nchat.entitlements.client import (
    AsyncEntitlementsClient,
    AsyncUsageReporter,
    BufferFull,
    EntitlementsClient,
    InvalidArgument,
    ReporterClosed,
    RetryPolicy,
    UndeliveredUsage,
    UsageReporter,
)
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb

from entitlements.config import Settings
from entitlements.server.app import Running
from entitlements.store.repository import Store
from tests.clients.conftest import TOKEN, CountingInterceptor, FlakyProxy, eventually, start_server
from tests.processes import free_port

ACCOUNTS = ("ws-a", "ws-b", "ws-c")
METRICS = ("messages", "aiQueries", "integrations")
QUICK = RetryPolicy(max_attempts=1, initial_backoff=0.01, max_backoff=0.1)


async def server_totals(port: int, accounts: tuple[str, ...]) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    async with AsyncEntitlementsClient(f"127.0.0.1:{port}", token=TOKEN) as client:
        for account in accounts:
            usage = await client.get_usage(account)
            for metric in usage.metrics:
                if metric.current:
                    totals[account, metric.metric] = metric.current
    return totals


async def test_increments_merge_into_one_event_per_account_metric_and_month(
    server: Running,
) -> None:
    counter = CountingInterceptor()
    sent: list[int] = []

    def run() -> None:
        with (
            EntitlementsClient(
                f"127.0.0.1:{server.port}", token=TOKEN, interceptors=[counter]
            ) as client,
            UsageReporter(client, max_delay=30) as reporter,
        ):
            for _ in range(1000):
                reporter.add("ws-merge", "messages")
            reporter.add("ws-merge", "aiQueries", 5)
            sent.append(reporter.pending())
            assert reporter.flush(timeout=5)
            sent.append(reporter.delivered_events)

    await asyncio.to_thread(run)
    assert sent == [2, 2]  # 1001 increments, two merged events
    assert counter.calls == ["ReportUsage"]
    totals = await server_totals(server.port, ("ws-merge",))
    assert totals == {("ws-merge", "messages"): 1000, ("ws-merge", "aiQueries"): 5}


async def test_sync_reporter_counts_exactly_once_through_a_flaky_network(server: Running) -> None:
    proxy = await FlakyProxy(server.port, seed=7).start()
    duplicates = DuplicateCounter()
    added: Counter[tuple[str, str]] = Counter()
    stats: dict[str, int] = {}

    def run() -> None:
        rng = random.Random(11)
        with (
            EntitlementsClient(
                f"127.0.0.1:{proxy.port}",
                token=TOKEN,
                timeout=0.3,
                write_timeout=0.3,
                retry=QUICK,
                interceptors=[duplicates],
            ) as client,
            UsageReporter(
                client, max_batch_size=4, max_delay=0.01, backoff=QUICK, close_timeout=30
            ) as reporter,
        ):
            threads = [
                threading.Thread(target=producer, args=(reporter, rng.random())) for _ in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        stats["failed"] = len(reporter.failed)
        stats["retries"] = reporter.retries

    lock = threading.Lock()

    def producer(reporter: UsageReporter, seed: float) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            account, metric = rng.choice(ACCOUNTS), rng.choice(METRICS)
            delta = rng.randint(1, 5)
            reporter.add(account, metric, delta)
            with lock:
                added[account, metric] += delta
            time.sleep(0.003)  # spread over about a second: many batches, many cuts

    try:
        await asyncio.to_thread(run)
    finally:
        await proxy.close()
    assert proxy.cuts > 0, "the proxy never cut a connection: the test proved nothing"
    assert stats["retries"] > 0, "no batch was ever retried: the test proved nothing"
    # Batches the server had applied before the cut were sent again, and not counted again.
    assert duplicates.duplicates > 0, "no retry hit an applied batch: the test proved nothing"
    assert stats["failed"] == 0
    assert await server_totals(server.port, ACCOUNTS) == added


async def test_async_reporter_counts_exactly_once_across_a_server_restart(
    settings: Settings, store: Store
) -> None:
    first = await start_server(settings, store)
    port = first.port
    added: Counter[tuple[str, str]] = Counter()
    second: Running | None = None
    try:
        async with (
            AsyncEntitlementsClient(f"127.0.0.1:{port}", token=TOKEN, retry=QUICK) as client,
            AsyncUsageReporter(
                client, max_batch_size=3, max_delay=0.005, backoff=QUICK
            ) as reporter,
        ):
            rng = random.Random(3)
            for i in range(600):
                account, metric = rng.choice(ACCOUNTS), rng.choice(METRICS)
                reporter.add(account, metric, 2)
                added[account, metric] += 2
                if i == 200:
                    await first.stop(0)
                if i == 400:
                    second = await start_server(settings, store, port=port)
                await asyncio.sleep(0.001)
            assert await reporter.flush(timeout=15)
            assert reporter.failed == []
    finally:
        if second is not None:
            await second.stop(0)
        else:
            await first.stop(0)
    check = await start_server(settings, store)
    try:
        assert await server_totals(check.port, ACCOUNTS) == added
    finally:
        await check.stop(0)


class DuplicateCounter(grpc.UnaryUnaryClientInterceptor):
    """Counts events the server answered DUPLICATE: retries of batches it had already applied."""

    def __init__(self) -> None:
        self.duplicates = 0

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        if outcome.exception() is None:
            response = outcome.result()
            for result in getattr(response, "results", ()):
                self.duplicates += result.status == usage_pb.USAGE_EVENT_STATUS_DUPLICATE
        return outcome


def test_full_buffer_blocks_add_then_raises_and_close_returns_the_unsent_events() -> None:
    with EntitlementsClient(f"127.0.0.1:{free_port()}", retry=QUICK) as client:
        reporter = UsageReporter(
            client, max_buffered=2, max_delay=60, add_timeout=0.2, backoff=QUICK
        )
        reporter.add("ws-full", "messages")
        reporter.add("ws-full", "aiQueries")
        reporter.add("ws-full", "messages", 4)  # merges into the open event: no wait
        with pytest.raises(BufferFull):
            reporter.add("ws-full", "callMinutes")
        with pytest.raises(UndeliveredUsage) as undelivered:
            reporter.close(timeout=0.3)
        with pytest.raises(ReporterClosed):
            reporter.add("ws-full", "messages")
    events = undelivered.value.events
    assert sum(e.delta for e in events) == 6
    assert len({e.idempotency_key for e in events}) == len(events)  # one key per merged event
    assert all(e.occurred_at is not None and e.occurred_at <= datetime.now(UTC) for e in events)


async def test_an_invalid_event_is_reported_as_failed_and_the_rest_counted(
    server: Running,
) -> None:
    async with (
        AsyncEntitlementsClient(f"127.0.0.1:{server.port}", token=TOKEN) as client,
        AsyncUsageReporter(client, max_delay=60) as reporter,
    ):
        reporter.add("ws-bad", "messages", 3)
        reporter.add("ws-bad", "teleports", 1)
        reporter.add("ws-bad", "aiMinutes", 2)
        assert await reporter.flush(timeout=5)
        assert [f.event.metric for f in reporter.failed] == ["teleports"]
        assert isinstance(reporter.failed[0].error, InvalidArgument)
        assert reporter.failed[0].error.field == "events[1].metric"
    totals = await server_totals(server.port, ("ws-bad",))
    assert totals == {("ws-bad", "messages"): 3, ("ws-bad", "aiMinutes"): 2}


async def test_reporter_delivers_on_close_without_a_flush(server: Running) -> None:
    async with AsyncEntitlementsClient(f"127.0.0.1:{server.port}", token=TOKEN) as client:
        reporter = AsyncUsageReporter(client, max_delay=60)
        reporter.add("ws-close", "messages", 7)
        await reporter.close()
        assert reporter.pending() == 0
    assert await server_totals(server.port, ("ws-close",)) == {("ws-close", "messages"): 7}


async def test_async_reporter_sends_on_its_own_after_max_delay(server: Running) -> None:
    async with (
        AsyncEntitlementsClient(f"127.0.0.1:{server.port}", token=TOKEN) as client,
        AsyncUsageReporter(client, max_delay=0.05) as reporter,
    ):
        reporter.add("ws-delay", "messages", 2)
        took = await eventually(lambda: reporter.delivered_events == 1, within=10.0)
        assert took >= 0.04
        assert reporter.pending() == 0
    assert await server_totals(server.port, ("ws-delay",)) == {("ws-delay", "messages"): 2}
