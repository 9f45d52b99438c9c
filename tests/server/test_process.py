"""The `entitlements` command as operators run it: migrate, serve, answer, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

from tests.processes import ServerProcess, migrate

pytestmark = pytest.mark.slow

ENTITLEMENTS = [sys.executable, "-m", "entitlements.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on {port} did not become SERVING")
            time.sleep(0.1)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    port = free_port()
    return {
        **os.environ,
        "ENTITLEMENTS_DEV_MODE": "1",
        "ENTITLEMENTS_GRPC_ADDR": f"127.0.0.1:{port}",
        "ENTITLEMENTS_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "ENTITLEMENTS_DATABASE_URL": f"sqlite:///{tmp_path / 'entitlements.db'}",
    }


def test_serve_refuses_an_unmigrated_database(env: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run(
        [*ENTITLEMENTS, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "entitlements migrate" in done.stderr


def test_serve_without_callers_or_dev_mode_is_a_configuration_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in env.items() if k != "ENTITLEMENTS_DEV_MODE"}
    env.pop("ENTITLEMENTS_CALLERS_FILE", None)
    done = subprocess.run(
        [*ENTITLEMENTS, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "ENTITLEMENTS_CALLERS_FILE" in done.stderr


def test_serve_refuses_dev_mode_beside_a_callers_file(env: dict[str, str], tmp_path: Path) -> None:
    callers = tmp_path / "callers.toml"
    callers.write_text(
        '[[callers]]\nname = "ops"\ntokens = ["ops-token-0000000000001"]\nscopes = ["admin"]\n'
    )
    env = {**env, "ENTITLEMENTS_CALLERS_FILE": str(callers)}
    done = subprocess.run(
        [*ENTITLEMENTS, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "ENTITLEMENTS_DEV_MODE" in done.stderr
    assert "ENTITLEMENTS_CALLERS_FILE" in done.stderr


def test_migrate_serve_answer_and_stop_gracefully_on_sigterm(
    env: dict[str, str], tmp_path: Path
) -> None:
    migrate = subprocess.run(
        [*ENTITLEMENTS, "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stderr
    again = subprocess.run(
        [*ENTITLEMENTS, "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, "migrate must be safe to run twice"
    server = subprocess.Popen(
        [*ENTITLEMENTS, "serve"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        port = int(env["ENTITLEMENTS_GRPC_ADDR"].rsplit(":", 1)[1])
        wait_serving(port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = pb_grpc.EntitlementsServiceStub(channel).CanUseFeature(
                pb.CanUseFeatureRequest(account_id="ws", feature="apiAccess"), timeout=5
            )
            assert (answer.allowed, answer.upgrade_plan_id) == (False, "starter")
            stream = pb_grpc.EntitlementsServiceStub(channel).WatchEntitlements(
                pb.WatchEntitlementsRequest(account_ids=["ws"], send_initial=True)
            )
            assert next(stream).entitlements.plan_id == "free"
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as caught:
                next(stream)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert server.wait(timeout=15) == 0
        assert time.monotonic() - started < 5
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        stderr = ""
        if server.stderr is not None:
            stderr = server.stderr.read()
            server.stderr.close()
    assert "DEV MODE" in stderr
    assert f"gRPC on {env['ENTITLEMENTS_GRPC_ADDR']}" in stderr
    assert "loopback" in stderr
    assert "stopped" in stderr


async def test_sigterm_finishes_in_flight_calls_and_refuses_new_ones_as_unavailable(
    tmp_path: Path,
) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'stop.db'}", tmp_path)
    migrate(server.env, tmp_path)
    server.start()
    process = server.process
    assert process is not None
    try:
        await _stop_under_calls(server, process, tmp_path)
    finally:
        server.stop()


async def _stop_under_calls(
    server: ServerProcess, process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """SIGTERM while a write is in flight and 16 callers keep calling through the shutdown."""
    check = pb.CanUseFeatureRequest(account_id="ws", feature="apiAccess")
    metrics_url = f"http://{server.env['ENTITLEMENTS_HTTP_ADDR']}/metrics"
    outcomes: list[tuple[float, grpc.StatusCode]] = []
    exited = asyncio.Event()

    async def keep_calling(fresh_channels: bool) -> None:
        """Calls back to back, from before SIGTERM until the process has exited."""
        shared = grpc.aio.insecure_channel(server.target)
        try:
            while not exited.is_set():
                channel = grpc.aio.insecure_channel(server.target) if fresh_channels else shared
                sent = time.monotonic()
                try:
                    await pb_grpc.EntitlementsServiceStub(channel).CanUseFeature(check, timeout=10)
                    outcomes.append((sent, grpc.StatusCode.OK))
                except grpc.aio.AioRpcError as error:
                    outcomes.append((sent, error.code()))
                    await asyncio.sleep(0.005)  # the server is going away: no busy loop
                finally:
                    if fresh_channels:
                        await channel.close()
        finally:
            await shared.close()

    async with grpc.aio.insecure_channel(server.target) as channel:
        usage = usage_grpc.UsageServiceStub(channel)
        await pb_grpc.EntitlementsServiceStub(channel).CanUseFeature(check, timeout=5)
        # Another process holds the database's write lock: the next write stays in flight.
        lock = sqlite3.connect(tmp_path / "stop.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        event = usage_pb.UsageEvent(
            account_id="ws", metric="messages", delta=1, idempotency_key="k"
        )

        async def report() -> usage_pb.ReportUsageResponse:
            return await usage.ReportUsage(usage_pb.ReportUsageRequest(events=[event]), timeout=30)

        held = asyncio.create_task(report())
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(metrics_url) as response:
                    if 'entitlements_rpc_in_flight{budget="writes"} 1.0' in await response.text():
                        break
                await asyncio.sleep(0.02)
        callers = [asyncio.create_task(keep_calling(i % 2 == 0)) for i in range(16)]
        await asyncio.sleep(1.0)
        sigterm_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        lock.execute("ROLLBACK")
        lock.close()
        answer = await held
        assert answer.results[0].status == usage_pb.USAGE_EVENT_STATUS_APPLIED
        assert await asyncio.to_thread(process.wait, 20) == 0
        exited.set()
        await asyncio.gather(*callers)
    codes = Counter(code for _, code in outcomes)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    # Calls the server had surely started before SIGTERM finish (a call sent just before may
    # still be on the wire, or queued on a loaded machine: it is new to the server, UNAVAILABLE).
    before = {code for sent, code in outcomes if sent < sigterm_at - 0.5}
    assert before == {grpc.StatusCode.OK}
    assert codes[grpc.StatusCode.UNAVAILABLE] > 0
