"""The `entitlements` command as operators run it: migrate, serve, answer, stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as pb_grpc

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
