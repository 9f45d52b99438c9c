"""Token gating benchmarks: cached VerifyToken throughput over gRPC, and how many chain reads
1,000 concurrent identical checks cost (single-flight: one).

`await bench_verify_token()` returns a dict of figures; `python -m benchmarks.tokengate` prints
them. Needs node_modules (anvil, solc, OpenZeppelin) installed by `npm ci`.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nchat.entitlements.v1 import token_gate_service_pb2 as pb
from nchat.entitlements.v1 import token_gate_service_pb2_grpc as pb_grpc

from benchmarks.harness import Server, drive
from entitlements.config import Settings
from entitlements.server.app import build_deps, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.chain_fixtures import AnvilNode, ChainKit, deploy_tokens, local_settings, new_wallet


def _request(contract: str, wallet: str) -> pb.VerifyTokenRequest:
    return pb.VerifyTokenRequest(
        requirement=pb.TokenRequirement(
            token_type=pb.TOKEN_TYPE_ERC20,
            contract_address=contract,
            network="local",
            min_balance="1.5",
        ),
        wallet_address=wallet,
    )


async def _cached_throughput(
    node: AnvilNode, request: pb.VerifyTokenRequest, seconds: float, concurrency: int
) -> dict[str, Any]:
    with Server(ENTITLEMENTS_RPC_URL_LOCAL=node.url) as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = pb_grpc.TokenGateServiceStub(channel)
            first = await stub.VerifyToken(request)
            assert first.verified, first.error
            baseline = await drive(
                "Health/Check (baseline, token-gate server)",
                server,
                lambda i: health.Check(health_pb2.HealthCheckRequest()),
                seconds=seconds,
                concurrency=concurrency,
            )
            cached = await drive(
                "TokenGateService/VerifyToken (cached)",
                server,
                lambda i: stub.VerifyToken(request),
                seconds=seconds,
                concurrency=concurrency,
            )
    return {
        "verify_token_cached_calls_per_second": round(cached.calls_per_second),
        "verify_token_cached_server_cpu_per_call_us": round(cached.cpu_per_call_us, 1),
        "health_calls_per_second": round(baseline.calls_per_second),
        "ratio_calls_vs_health": round(cached.calls_per_second / baseline.calls_per_second, 3),
        "ratio_cpu_vs_health": round(cached.cpu_per_call_us / baseline.cpu_per_call_us, 3),
        # for `make bench` to print beside its other figures (popped before the JSON)
        "baseline_result": baseline,
        "cached_result": cached,
    }


async def _single_flight(node: AnvilNode, contract: str, wallet: str, n: int) -> dict[str, Any]:
    """n concurrent identical VerifyToken calls on a cold cache, against an in-process server
    so its verifier's counters can be read."""
    with tempfile.TemporaryDirectory(prefix="tokengate-bench-") as workdir:
        url = f"sqlite+aiosqlite:///{Path(workdir) / 'bench.db'}"
        await upgrade(url)
        store = Store.open(url)
        settings = Settings(dev_mode=True, chains=local_settings(node))
        deps = build_deps(settings, store)
        assert deps.token_gate is not None
        gate = deps.token_gate.gate
        running = await create_server(settings, deps, addr="127.0.0.1:0")
        await running.server.start()
        try:
            await gate.start()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.TokenGateServiceStub(channel)
                request = _request(contract, wallet)
                reads0, requests0 = gate.verifier.chain_reads, gate.readers.requests
                t0 = time.perf_counter()
                answers = await asyncio.gather(*(stub.VerifyToken(request) for _ in range(n)))
                elapsed = time.perf_counter() - t0
        finally:
            await running.stop(0)
            await store.close()
    return {
        "concurrent_identical_checks": n,
        "all_verified": all(a.verified for a in answers),
        "chain_reads": gate.verifier.chain_reads - reads0,
        "json_rpc_round_trips": gate.readers.requests - requests0,
        "served_from_cache": sum(a.cached for a in answers),
        "wall_seconds": round(elapsed, 3),
    }


async def bench_verify_token(
    seconds: float = 5.0, concurrency: int = 64, concurrent_checks: int = 1000
) -> dict[str, Any]:
    """Figures for token gating: cached VerifyToken over gRPC (an `entitlements serve` process
    pinned like the other benchmarks, beside the health-check baseline) and the chain reads of
    `concurrent_checks` identical checks at once."""
    node = AnvilNode().start()
    kit = await ChainKit.connect(node)
    try:
        tokens = await deploy_tokens(kit)
        holder, second = new_wallet().address, new_wallet().address
        for wallet in (holder, second):
            await kit.transact(tokens.usdc6.functions.mint(wallet, 2_000_000))
        figures = await _cached_throughput(
            node, _request(tokens.usdc6.address, holder), seconds, concurrency
        )
        figures.update(await _single_flight(node, tokens.usdc6.address, second, concurrent_checks))
        return figures
    finally:
        await kit.close()
        node.stop()


if __name__ == "__main__":
    figures = asyncio.run(bench_verify_token(seconds=3.0))
    for result in ("baseline_result", "cached_result"):
        figures.pop(result)
    print(json.dumps(figures, indent=2))
