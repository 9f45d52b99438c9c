"""`serve --workers N`: one /metrics scrape, on whichever worker answers, reports the whole
service (prometheus-client multiprocess mode), also after a worker was killed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc
from prometheus_client.multiprocess import MultiProcessCollector

from tests.processes import ENTITLEMENTS, ServerProcess, migrate
from tests.server.test_workers import children_of

pytestmark = pytest.mark.slow

CALLS = 24


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def _served(directory: Path, pid: int) -> float:
    """The CanUseFeature calls worker `pid` counted in its own file."""
    return sum(
        sample.value
        for family in MultiProcessCollector.merge([str(directory / f"counter_{pid}.db")])
        for sample in family.samples
        if sample.name == "entitlements_rpc_requests_total"
        and sample.labels["method"] == "CanUseFeature"
    )


async def _scrape(http: str) -> str:
    # A new connection each time: SO_REUSEPORT hands it to either worker.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(f"http://{http}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


async def _calls(target: str, count: int) -> None:
    """`count` CanUseFeature calls and one usage event each, each on a fresh connection."""
    for i in range(count):
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1), ("test.unique", i)]
        ) as channel:
            await pb_grpc.EntitlementsServiceStub(channel).CanUseFeature(
                pb.CanUseFeatureRequest(account_id=f"ws-{i}", feature="apiAccess"), timeout=5
            )
            await usage_grpc.UsageServiceStub(channel).ReportUsage(
                usage_pb.ReportUsageRequest(
                    events=[
                        usage_pb.UsageEvent(
                            account_id=f"ws-{i}",
                            metric="messages",
                            delta=1,
                            idempotency_key=f"k-{i}",
                        )
                    ]
                ),
                timeout=5,
            )


def _listens(pid: int, port: int) -> bool:
    """Does process `pid` hold a socket listening on TCP `port`?"""
    listening: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    listening.add(f"socket:[{fields[9]}]")
    try:
        held = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:
        return False
    return bool(listening & held)


async def _until_every_scrape_says(http: str, expected: float, **labels: str) -> str:
    """Scrapes (several, so both workers answer some) until each reports `expected`."""
    deadline = time.monotonic() + 10
    while True:
        texts = [await _scrape(http) for _ in range(6)]
        seen = [_value(t, **labels) for t in texts]  # type: ignore[arg-type]
        if all(v == expected for v in seen):
            return texts[-1]
        assert time.monotonic() < deadline, f"scrapes said {seen}, expected {expected}"
        await asyncio.sleep(0.2)


async def test_one_scrape_adds_up_the_calls_of_every_worker(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'workers.db'}",
        tmp_path,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    migrate(server.env, tmp_path)
    http = server.env["ENTITLEMENTS_HTTP_ADDR"]
    log = (tmp_path / "workers.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *ENTITLEMENTS, "serve", "--workers", "2", env=server.env, cwd=tmp_path, stdout=log,
        stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.returncode is None, (tmp_path / "workers.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "workers.log").read_text()
            try:
                # Both workers listening on the gRPC port: before that, every connection goes
                # to the first one.
                grpc_port = int(server.target.rsplit(":", 1)[1])
                pids = children_of(process.pid)
                if len(pids) == 2 and all(_listens(pid, grpc_port) for pid in pids):
                    await _scrape(http)
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        workers = children_of(process.pid)

        await _calls(server.target, CALLS)
        rpc = {"name": "entitlements_rpc_requests_total", "method": "CanUseFeature", "code": "OK"}
        text = await _until_every_scrape_says(http, CALLS, **rpc)
        latency = {"method": "CanUseFeature", "code": "OK"}
        assert _value(text, "entitlements_rpc_duration_seconds_count", **latency) == CALLS
        assert _value(text, "entitlements_rpc_duration_seconds_bucket", le="+Inf", **latency) == (
            CALLS
        )
        # Both workers answered some of the calls (each keeps its own files): one worker's
        # figure alone would not have added up.
        assert sorted(_served(metrics_dir, pid) for pid in workers)[0] > 0
        # The counters the code keeps in memory add up too (copied every second).
        await _until_every_scrape_says(http, CALLS, name="entitlements_usage_events_applied_total")

        # A worker killed: its counts stay in the sums, its live gauges go.
        os.kill(workers[0], signal.SIGKILL)
        while workers[0] in children_of(process.pid) or len(children_of(process.pid)) < 2:
            assert time.monotonic() < deadline + 30
            await asyncio.sleep(0.1)
        assert not list(metrics_dir.glob(f"gauge_live*_{workers[0]}.db"))
        text = await _until_every_scrape_says(http, CALLS, **rpc)
        assert _value(text, "entitlements_worker_restarts_total") >= 1
        assert "process_cpu_seconds_total" not in text  # one worker's, so not reported
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
        log.close()
