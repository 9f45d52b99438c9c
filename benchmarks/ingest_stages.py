"""Where `ReportUsage` ingest's CPU goes beside gRPC: the servicer, the ledger's decisions, the
database and the rest (ledger bookkeeping, the thread hop, the event loop), in CPU microseconds
per event.

`python -m benchmarks.ingest_stages [--postgres]` builds the service's own parts in this process
(the servicer, the entitlement service, the ledger and its repository on a fresh SQLite file or
PostgreSQL database) and sends them the benchmark's load without gRPC: batches of 100 events over
20 accounts, 10 % of each batch repeating keys of the previous batch, `--concurrency` batches in
flight (so groups form as in the server). Each stage is timed with the CPU clock of the thread
that runs it (`time.thread_time`), so the figures hold on a busy machine, where wall-clock
figures do not:

- protobuf: parsing each request from bytes and serializing each response (done by gRPC in the
  server; timed here apart on the same messages);
- servicer: validation, the entitlements lookup and the ledger's operations; the response;
- ledger decisions (`UsageLedger._decide`);
- database: SQLite's transaction in the writer thread (less the decisions it calls), or the
  writer task's steps through SQLAlchemy and asyncpg on PostgreSQL (less the decisions);
- the rest of the process's CPU (`time.process_time`, every thread): the ledger's queue,
  grouping and futures, the thread hop to SQLite's writer (SQLite), asyncpg's protocol callbacks
  (PostgreSQL), the event loop.

The server's CPU per event in `make bench` minus this process's total is gRPC (transport, the
`@unary` wrapper, the request guard). Timing wraps the parts from outside (this module only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from typing import Any, TypeVar

from nchat.entitlements.v1 import usage_service_pb2 as pb

from entitlements.cli import GC_THRESHOLD

T = TypeVar("T")

BATCH = 100


class Clock:
    """Accumulated CPU seconds of one stage."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def sync(self, fn: Callable[..., T]) -> Callable[..., T]:
        def timed(*args: Any, **kwargs: Any) -> T:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - t0
                self.calls += 1

        return timed

    def steps(self, fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., Awaitable[T]]:
        """A coroutine function whose own steps are timed (not what runs while it awaits)."""

        def timed(*args: Any, **kwargs: Any) -> Awaitable[T]:
            self.calls += 1
            return _Steps(fn(*args, **kwargs), self)

        return timed


class _Steps:
    def __init__(self, coro: Coroutine[Any, Any, Any], clock: Clock) -> None:
        self._coro = coro
        self._clock = clock

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, clock = self._coro, self._clock
        value: Any = None
        error: BaseException | None = None
        while True:
            t0 = time.thread_time()
            try:
                step = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                clock.seconds += time.thread_time() - t0
                return stop.value
            clock.seconds += time.thread_time() - t0
            try:
                value, error = (yield step), None
            except BaseException as exc:  # handed into the coroutine, as await would
                value, error = None, exc


def batches(count: int) -> list[bytes]:
    """The benchmark's requests (benchmarks.__main__.usage_throughput), serialized."""
    out = []
    for i in range(count):
        events = []
        for j in range(BATCH):
            repeat = j < 10 and i > 0
            key = f"b{i - 1}-{j}" if repeat else f"b{i}-{j}"
            account = f"ws-{(i - 1 + j) % 20}" if repeat else f"ws-{(i + j) % 20}"
            events.append(
                pb.UsageEvent(account_id=account, metric="messages", delta=1, idempotency_key=key)
            )
        out.append(pb.ReportUsageRequest(events=events).SerializeToString())
    return out


async def measure(url: str, count: int, concurrency: int) -> dict[str, object]:
    from entitlements.policies import default_catalog
    from entitlements.server import usage_servicer
    from entitlements.server.usage_servicer import UsageServicer
    from entitlements.service import EntitlementService
    from entitlements.store import Store
    from entitlements.store.migrate import upgrade
    from entitlements.store.usage_repository import UsageRepository
    from entitlements.usage.ledger import UsageLedger
    from entitlements.watch import WatchHub

    await upgrade(url)
    store = Store.open(url)
    catalog = default_catalog()
    hub = WatchHub()
    service = EntitlementService(store, catalog, hub)
    repository = UsageRepository(store.engine)
    ledger = UsageLedger(repository, hub)
    ledger.start()
    servicer = UsageServicer(ledger, service, catalog)
    handler = UsageServicer.ReportUsage.__wrapped__  # type: ignore[attr-defined]  # no @unary
    requests = batches(count + 20)
    warm, timed_requests = requests[:20], requests[20:]
    for raw in warm:  # accounts loaded, counters created
        await handler(servicer, pb.ReportUsageRequest.FromString(raw), None)

    clocks = {
        name: Clock()
        for name in (
            "protobuf: parse request, serialize response",
            "servicer: validate, build ledger operations",
            "servicer: entitlements lookup",
            "servicer: build response",
            "ledger decisions (_decide)",
            "database",
        )
    }
    parse = clocks["protobuf: parse request, serialize response"]
    handler = clocks["servicer: validate, build ledger operations"].steps(handler)
    servicer._limits = clocks["servicer: entitlements lookup"].steps(servicer._limits)  # type: ignore[method-assign]
    usage_servicer._answer = clocks["servicer: build response"].sync(usage_servicer._answer)  # type: ignore[assignment]
    decide = clocks["ledger decisions (_decide)"]
    ledger._decide = decide.sync(ledger._decide)  # type: ignore[method-assign]
    database = clocks["database"]
    writer = getattr(repository, "_sqlite_writer", None)
    if writer is not None:
        writer._apply = database.sync(writer._apply)
    else:
        repository.apply_group = database.steps(repository.apply_group)  # type: ignore[method-assign]

    queue = list(reversed(timed_requests))

    async def worker() -> None:
        while queue:
            raw = queue.pop()
            t0 = time.thread_time()
            request = pb.ReportUsageRequest.FromString(raw)
            parse.seconds += time.thread_time() - t0
            response = await handler(servicer, request, None)
            t0 = time.thread_time()
            response.SerializeToString()
            parse.seconds += time.thread_time() - t0

    commits0 = ledger.commits
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    groups = ledger.commits - commits0
    events = count * BATCH
    await ledger.close()
    await store.close()

    per_event = {name: clock.seconds / events * 1e6 for name, clock in clocks.items()}
    # nested stages are charged once: the decisions run inside the database stage, the lookup
    # and the response inside the handler
    per_event["database"] -= per_event["ledger decisions (_decide)"]
    per_event["servicer: validate, build ledger operations"] -= (
        per_event["servicer: entitlements lookup"] + per_event["servicer: build response"]
    )
    measured = sum(per_event.values())
    per_event["rest: ledger bookkeeping, thread hop, event loop"] = cpu / events * 1e6 - measured
    return {
        "events": events,
        "groups": groups,
        "events_per_group": round(events / max(groups, 1)),
        "process_cpu_us_per_event": round(cpu / events * 1e6, 2),
        "wall_events_per_second": round(events / wall),
        "us_per_event": {name: round(v, 2) for name, v in per_event.items()},
    }


async def main(postgres: bool, count: int, concurrency: int) -> dict[str, object]:
    if not postgres:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'stages.db'}"
            return {"database": "SQLite", **await measure(url, count, concurrency)}
    from benchmarks.databases import drop_postgres_database, fresh_postgres_database

    name = "entitlements_stages"
    url = await fresh_postgres_database(name)
    if url is None:
        raise SystemExit("PostgreSQL is not reachable")
    try:
        return {"database": "PostgreSQL", **await measure(url, count, concurrency)}
    finally:
        await drop_postgres_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest_stages")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=GC_THRESHOLD,
        help=f"the garbage collector's first threshold (default {GC_THRESHOLD:,}, as "
        "`entitlements serve` sets it; Python's own is 700)",
    )
    args = parser.parse_args()
    gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    import uvloop

    print(json.dumps(uvloop.run(main(args.postgres, args.batches, args.concurrency)), indent=2))
