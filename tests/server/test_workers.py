"""One process per core: `serve --workers N` shares the port and keeps every cache coherent."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as pb_grpc

from entitlements.store.repository import Store
from tests.processes import ENTITLEMENTS, ServerProcess, migrate
from tests.server.conftest import subscription

pytestmark = pytest.mark.slow


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


async def plans_seen(target: str, account: str, connections: int) -> set[str]:
    """The plan each of several fresh connections answers with (SO_REUSEPORT spreads new
    connections over the workers)."""
    seen = set()
    for i in range(connections):
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1), ("test.unique", i)]
        ) as channel:
            answer = await pb_grpc.EntitlementsServiceStub(channel).CanUseFeature(
                pb.CanUseFeatureRequest(account_id=account, feature="apiAccess"), timeout=5
            )
            seen.add(answer.plan_id)
    return seen


async def test_workers_share_the_port_and_see_a_change_within_a_second(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    server = ServerProcess(url, tmp_path)
    migrate(server.env, tmp_path)
    log = (tmp_path / "workers.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *ENTITLEMENTS,
        "serve",
        "--workers",
        "2",
        env=server.env,
        cwd=tmp_path,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while len(children_of(process.pid)) < 2:
            assert process.returncode is None, (tmp_path / "workers.log").read_text()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        workers = children_of(process.pid)
        while True:
            try:
                assert await plans_seen(server.target, "ws", 12) == {"free"}
                break
            except grpc.aio.AioRpcError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        # Every worker has now cached "ws" as free. Another replica (this test) upgrades it.
        store = Store.open("sqlite+aiosqlite:///" + str(tmp_path / "workers.db"))
        try:
            await store.save_subscription(subscription("ws", "business"))
        finally:
            await store.close()
        changed_at = time.monotonic()
        while await plans_seen(server.target, "ws", 12) != {"business"}:
            assert time.monotonic() - changed_at < 1.5, "a worker kept the old plan"
            await asyncio.sleep(0.05)
        assert time.monotonic() - changed_at < 1.5
        assert sorted(children_of(process.pid)) == sorted(workers), "no worker restarted"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
        assert children_of(process.pid) == []
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()


def test_a_single_process_server_refuses_to_share_its_port(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    first = ServerProcess(url, tmp_path)
    migrate(first.env, tmp_path)
    first.start()
    try:
        env = {**first.env, "ENTITLEMENTS_HTTP_ADDR": "127.0.0.1:0"}
        second = subprocess.run(
            [*ENTITLEMENTS, "serve"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert "cannot listen" in second.stderr or "address already in use" in second.stderr
        assert first.process is not None and first.process.poll() is None
    finally:
        assert first.stop() == 0


def test_worker_count_must_be_positive(tmp_path: Path) -> None:
    env = {**os.environ, "ENTITLEMENTS_DEV_MODE": "1"}
    done = subprocess.run(
        [*ENTITLEMENTS, "serve", "--workers", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers" in done.stderr


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


async def test_a_killed_worker_is_replaced_while_the_others_keep_serving(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    server = ServerProcess(url, tmp_path)
    migrate(server.env, tmp_path)
    log_path = tmp_path / "workers.log"
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        *ENTITLEMENTS,
        "serve",
        "--workers",
        "2",
        env={**server.env, "ENTITLEMENTS_LOG_LEVEL": "INFO"},
        cwd=tmp_path,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while len(children_of(process.pid)) < 2:
            assert process.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        while True:
            try:
                assert await plans_seen(server.target, "ws", 6) == {"free"}
                break
            except grpc.aio.AioRpcError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        victim, survivor = children_of(process.pid)
        os.kill(victim, signal.SIGKILL)
        # The survivor answers every call meanwhile (a connection the dead worker had accepted
        # is refused, and the caller's channel connects again).
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = pb_grpc.EntitlementsServiceStub(channel)
            for _ in range(20):
                answer = await stub.CanUseFeature(
                    pb.CanUseFeatureRequest(account_id="ws", feature="apiAccess"),
                    timeout=10,
                    wait_for_ready=True,
                )
                assert answer.plan_id == "free"
        while True:
            workers = children_of(process.pid)
            if len(workers) == 2 and victim not in workers:
                break
            assert process.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.1)
        assert survivor in workers, "the other worker kept running"
        replacement = next(pid for pid in workers if pid != survivor)
        log_text = log_path.read_text()
        assert f"pid {victim}) was killed by SIGKILL" in log_text
        assert f"restarted as pid {replacement}" in log_text
        # Every worker reports the service's count of replacements.
        metrics_url = f"http://{server.env['ENTITLEMENTS_HTTP_ADDR']}/metrics"
        while "entitlements_worker_restarts_total 1.0" not in await metrics_text(metrics_url):
            assert time.monotonic() < deadline, "the restart was not counted in /metrics"
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert children_of(process.pid) == []
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()


CRASH_LOOP = """
import logging, sys
from entitlements.server.workers import run_workers
logging.basicConfig(level=logging.INFO, format="%(message)s")
sys.exit(run_workers(1, lambda index: 1, backoff_seconds=0.05, max_backoff_seconds=0.2,
                     give_up_after=4))
"""


def test_a_worker_crash_looping_at_start_is_retried_with_backoff_then_given_up(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASH_LOOP],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    delays = re.findall(r"restarting it in ([0-9.]+)s", done.stderr)
    assert delays == ["0.05", "0.1", "0.2", "0.2"], done.stderr
    assert "died 5 times in a row" in done.stderr and "giving up" in done.stderr


CONFIG_ERROR = """
import sys
from entitlements.server.workers import run_workers
sys.exit(run_workers(2, lambda index: 2 if index == 0 else __import__("time").sleep(60) or 0))
"""


def test_a_worker_with_a_configuration_error_stops_the_service(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CONFIG_ERROR],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
