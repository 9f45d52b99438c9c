"""Where `ReportUsage` ingest spends the server's CPU: py-spy samples of the benchmark's load
(batches of 100 events, 10 % duplicates), split into gRPC and parsing, the servicer, the
ledger's decisions, the ledger's bookkeeping, the database and the thread hop.

`python -m benchmarks.ingest_profile [--postgres]` starts `entitlements serve` like `make bench`
(pinned to core 0), drives usage ingest from core 1 and records the server with `py-spy record
--format raw` (every non-idle thread, 250 samples/s) for the same window. py-spy is not a
dependency of the project: `.venv/bin/pip install py-spy` first. Python frames only: time in C
(protobuf parsing, grpc's core, sqlite3's and asyncpg's C code) is charged to the Python frame
that called it, which is what the split below wants.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.__main__ import usage_throughput
from benchmarks.databases import drop_postgres_database, fresh_postgres_database
from benchmarks.harness import Server, pin_client

#: (bucket, a substring of a frame "function (file:line)"), first match from the top of the
#: stack (innermost frame) down wins, so the ledger's decisions called from inside the
#: SQLite transaction count as decisions, not as SQLite.
RULES: tuple[tuple[str, str], ...] = (
    ("ledger decisions (_decide)", "_decide (entitlements/usage/ledger.py"),
    (
        "database: usage_repository.py (SQLite: the writer thread; PostgreSQL: statements)",
        "(entitlements/store/usage_repository.py",
    ),
    ("database: SQLAlchemy / asyncpg", "sqlalchemy/"),
    ("database: SQLAlchemy / asyncpg", "asyncpg/"),
    # a thread whose target is C: grpc's completion-queue poller (working or waiting in C)
    ("gRPC's poller thread (C)", "Thread.run (threading.py:982)"),
    ("thread hop (executor, futures, wake-ups)", "concurrent/futures/"),
    ("thread hop (executor, futures, wake-ups)", "(threading.py"),
    ("thread hop (executor, futures, wake-ups)", "asyncio/futures.py"),
    ("thread hop (executor, futures, wake-ups)", "run_in_executor"),
    ("ledger bookkeeping (queue, group, results, counters)", "(entitlements/usage/ledger.py"),
    ("servicer: validate, build events, answer", "(entitlements/server/usage_servicer.py"),
    ("RPC wrapper (metrics, load shedding)", "(entitlements/server/status.py"),
)
OTHER = "gRPC, event loop and protobuf (C, charged to the loop)"

#: Innermost frames of threads waiting for work. py-spy's idle detection does not see these as
#: idle in this container (it samples them as running), so they are dropped by hand.
WAITING = (
    "_connection_worker_thread (aiosqlite/core.py:59)",  # aiosqlite's idle connection thread
    "_worker (concurrent/futures/thread.py:81)",  # an idle executor thread: work_queue.get()
    "(queue.py:",
    "wait (threading.py:",
    "select (selectors.py:",
)


def classify(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for bucket, needle in RULES:
            if needle in frame:
                return bucket
    return OTHER


async def profile(postgres: bool, seconds: float, out: Path) -> dict[str, object]:
    pin_client()
    database = await fresh_postgres_database() if postgres else None
    if postgres and database is None:
        raise SystemExit("PostgreSQL is not reachable")
    spy = shutil.which("py-spy") or str(Path(".venv/bin/py-spy"))
    try:
        with Server(database) as server:
            # warm up: the first batches create the accounts' counters
            await usage_throughput(server, "warm-up", 1.0)
            recorder = subprocess.Popen(  # noqa: ASYNC220 (started, then awaited in a thread)
                [
                    spy,
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = await usage_throughput(server, "ReportUsage", seconds)
            await asyncio.to_thread(recorder.wait)
    finally:
        if database is not None:
            await drop_postgres_database(database)
    buckets: Counter[str] = Counter()
    waiting = 0
    for row in (await asyncio.to_thread(out.read_text)).splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack:
            continue
        if any(stack.endswith(leaf) or leaf in stack.rsplit(";", 1)[-1] for leaf in WAITING):
            waiting += int(count)
        else:
            buckets[classify(stack)] += int(count)
    total = sum(buckets.values())
    per_event_us = result.cpu_per_call_us / 100
    split = {
        bucket: {
            "share": round(n / total, 3),
            "us_per_event": round(per_event_us * n / total, 2),
        }
        for bucket, n in buckets.most_common()
    }
    return {
        "database": "PostgreSQL" if postgres else "SQLite",
        "events_per_second": round(result.items_per_second),
        "server_cpu_us_per_event": round(per_event_us, 2),
        "samples": total,
        "samples_dropped_as_waiting": waiting,
        "split": split,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest_profile")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stacks", type=Path, help="keep py-spy's raw stacks in this file")
    args = parser.parse_args()
    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        stacks = args.stacks or Path(tmp) / "stacks.txt"
        figures = uvloop.run(profile(args.postgres, args.seconds, stacks))
    print(json.dumps(figures, indent=2))
