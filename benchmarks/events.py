"""Outbound events: outbox throughput (a backlog drained to a local receiver) and the delay
from a change's commit to its delivery (p50/p99), on SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.events [--postgres URL]

In-process: the dispatcher, the store and an aiohttp receiver share one event loop (the
receiver answers 204 at once), so the figures are the outbox's and the dispatcher's cost with
a loopback receiver, not a network's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine

from entitlements.events.dispatcher import Dispatcher
from entitlements.events.endpoints import Endpoint
from entitlements.events.settings import EventSettings
from entitlements.events.types import new_event
from entitlements.store.engine import create_engine
from entitlements.store.events_repository import EventsRepository, append_event
from entitlements.store.migrate import upgrade
from entitlements.store.records import utcnow

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


async def until(condition: Callable[[], bool]) -> None:
    for _ in itertools.count():
        if condition():
            return
        await asyncio.sleep(0.01)


async def receiver(received: dict[str, float]) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        received.setdefault(request.headers["webhook-id"], time.perf_counter())
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"


async def run(url: str, backlog: int, rate: float, seconds: float, poll: float) -> None:
    await upgrade(url)
    repository = EventsRepository(create_engine(url))
    received: dict[str, float] = {}
    runner, endpoint_url = await receiver(received)
    settings = EventSettings(poll_interval_seconds=poll, batch_size=200)
    endpoint = Endpoint("bench", endpoint_url, SECRET)

    for start in range(0, backlog, 500):  # the backlog, 500 events per transaction
        async with repository._transaction(write=True) as session:
            for i in range(start, min(backlog, start + 500)):
                await append_event(
                    session, new_event("payment.failed", f"ws{i % 100}", {}, now=utcnow())
                )
    dispatcher = Dispatcher(repository, settings, endpoints=[endpoint])
    began = time.perf_counter()
    dispatcher.start()
    await until(lambda: len(received) >= backlog)
    drained = time.perf_counter() - began
    print(
        f"  backlog of {backlog:,}: drained in {drained:.2f} s = {backlog / drained:,.0f} events/s"
    )

    committed: dict[str, float] = {}
    interval = 1 / rate
    next_at = time.perf_counter()
    end = next_at + seconds
    while next_at < end:
        event = new_event("payment.failed", f"ws{uuid.uuid4().hex[:4]}", {}, now=utcnow())
        await repository.append(event)
        committed[event.id] = time.perf_counter()
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await until(lambda: all(i in received for i in committed))
    delays = sorted((received[i] - t) * 1000 for i, t in committed.items())
    p50 = statistics.median(delays)
    p99 = delays[int(len(delays) * 0.99) - 1]
    print(
        f"  commit to delivery at {rate:.0f} events/s (poll {poll:g} s):"
        f" p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {delays[-1]:.0f} ms"
    )
    await dispatcher.close()
    await runner.cleanup()
    await repository.engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="")
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite")
        await run(
            f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
            args.backlog,
            args.rate,
            args.seconds,
            args.poll,
        )
    if args.postgres:
        name = f"bench_events_{uuid.uuid4().hex[:8]}"
        admin = create_async_engine(args.postgres, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            print("PostgreSQL")
            url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
            await run(url, args.backlog, args.rate, args.seconds, args.poll)
        finally:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
            await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
