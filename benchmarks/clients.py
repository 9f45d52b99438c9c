"""Client benchmark: feature checks per second answered by the local-evaluation client (from
memory, kept fresh by WatchEntitlements) against the plain RPC client, on a running server.

`await bench_local_vs_rpc(target, seconds)` returns a dict of figures; `python -m
benchmarks.clients` starts a dev-mode server of its own and prints them.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from nchat.entitlements.client import AsyncEntitlementsClient, ClientOptions, EntitlementsClient

from benchmarks.harness import Server

ACCOUNTS = tuple(f"bench-client-{i}" for i in range(100))
FEATURES = ("apiAccess", "customBranding", "webhooks", "ssoIntegration")
#: Concurrent RPC checks in flight: a hot-path service checks from many requests at once.
RPC_CONCURRENCY = 32


async def _rpc_rate(client: AsyncEntitlementsClient, seconds: float) -> tuple[float, int]:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            await client.can_use_feature(ACCOUNTS[i % len(ACCOUNTS)], FEATURES[i % len(FEATURES)])
            done += 1
            i += RPC_CONCURRENCY

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(RPC_CONCURRENCY)))
    return done / (time.perf_counter() - start), done


#: (account, feature) pairs in the order the local benchmarks check them.
PAIRS = tuple((ACCOUNTS[i % len(ACCOUNTS)], FEATURES[i % len(FEATURES)]) for i in range(1000))


async def _local_rate(client: AsyncEntitlementsClient, seconds: float) -> tuple[float, float, int]:
    """(checks per wall second, checks per CPU second of this thread, checks)."""
    done = 0
    start, cpu0 = time.perf_counter(), time.thread_time()
    deadline = start + seconds
    can_use_feature = client.can_use_feature
    while time.perf_counter() < deadline:
        for account, feature in PAIRS:  # check the clock once per thousand checks
            check = await can_use_feature(account, feature)
        done += len(PAIRS)
    cpu = time.thread_time() - cpu0
    assert check.source == "local", check
    return done / (time.perf_counter() - start), done / cpu, done


def _sync_local_rate(client: EntitlementsClient, seconds: float) -> tuple[float, float]:
    """(checks per wall second, checks per CPU second of this thread)."""
    done = 0
    start, cpu0 = time.perf_counter(), time.thread_time()
    deadline = start + seconds
    can_use_feature = client.can_use_feature
    while time.perf_counter() < deadline:
        for account, feature in PAIRS:
            can_use_feature(account, feature)
        done += len(PAIRS)
    cpu = time.thread_time() - cpu0
    return done / (time.perf_counter() - start), done / cpu


async def _warm(client: AsyncEntitlementsClient) -> None:
    for account in ACCOUNTS:
        await client.can_use_feature(account, FEATURES[0])
    deadline = time.monotonic() + 10
    while not (client.local_state().connected and client.local_state().accounts == len(ACCOUNTS)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the watch stream did not come up: {client.local_state()}")
        await asyncio.sleep(0.01)


async def bench_local_vs_rpc(
    target: str, seconds: float, *, token: str | None = None
) -> dict[str, Any]:
    """Checks/s of `can_use_feature` over RPC (RPC_CONCURRENCY in flight) and from local
    evaluation (one caller, no network), asyncio and sync, on the server at `target`."""
    async with AsyncEntitlementsClient(target, token=token, timeout=5.0) as rpc:
        await rpc.can_use_feature(ACCOUNTS[0], FEATURES[0])  # connect first
        rpc_rate, rpc_checks = await _rpc_rate(rpc, seconds)
    async with AsyncEntitlementsClient(
        target, token=token, local_evaluation=True, local=ClientOptions()
    ) as local:
        await _warm(local)
        local_rate, local_cpu_rate, local_checks = await _local_rate(local, seconds)
        state = local.local_state()

    def sync_run() -> tuple[float, float]:
        with EntitlementsClient(target, token=token, local_evaluation=True) as client:
            for account in ACCOUNTS:
                client.can_use_feature(account, FEATURES[0])
            deadline = time.monotonic() + 10
            while client.local_state().accounts < len(ACCOUNTS) or not (
                client.local_state().connected
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the sync client's watch stream did not come up")
                time.sleep(0.01)
            return _sync_local_rate(client, seconds)

    sync_rate, sync_cpu_rate = await asyncio.to_thread(sync_run)
    return {
        "seconds": seconds,
        "rpc_concurrency": RPC_CONCURRENCY,
        "rpc_checks_per_second": round(rpc_rate),
        "rpc_checks": rpc_checks,
        "local_checks_per_second": round(local_rate),
        "local_checks": local_checks,
        "sync_local_checks_per_second": round(sync_rate),
        # per second of the checking thread's own CPU: what one core does on a busy machine
        "local_checks_per_cpu_second": round(local_cpu_rate),
        "sync_local_checks_per_cpu_second": round(sync_cpu_rate),
        "local_vs_rpc": round(local_rate / rpc_rate, 1) if rpc_rate else None,
        "local_rpc_fallbacks": state.rpc_fallbacks,
    }


async def _main(seconds: float) -> dict[str, Any]:
    with Server() as server:
        return await bench_local_vs_rpc(server.target, seconds)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(3.0)), indent=2))
