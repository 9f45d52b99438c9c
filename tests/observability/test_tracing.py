"""Traces: opt-in from the standard OTEL_* variables, exported over real OTLP to a receiver run
by the test, parented by the caller's W3C traceparent; off by default with nothing installed."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from nchat.entitlements.v1 import admin_service_pb2 as admin_pb
from nchat.entitlements.v1 import admin_service_pb2_grpc as admin_grpc
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import token_gate_service_pb2 as gate_pb
from nchat.entitlements.v1 import token_gate_service_pb2_grpc as gate_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from entitlements.config import ConfigError, Settings
from entitlements.observability import tracing
from tests.chain_fixtures import AnvilNode
from tests.processes import ServerProcess, free_port, migrate
from tests.server.helpers import details


class _Receiver(otlp_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver, as a collector is: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def Export(
        self, request: otlp_pb.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp_pb.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            {
                                "service": service,
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "kind": span.kind,
                            }
                        )
        return otlp_pb.ExportTraceServiceResponse()

    def wait_for(self, predicate: Any, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [s for s in self.spans if predicate(s)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no such span; received: {self.spans}")


@pytest.fixture
def receiver() -> Any:
    servicer = _Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    otlp_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def _traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


@pytest.mark.slow
def test_spans_reach_an_otlp_collector_parented_by_the_callers_traceparent(
    tmp_path: Path, receiver: Any
) -> None:
    collector, port = receiver
    http_port = free_port()
    node = AnvilNode().start()
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'traced.db'}",
        tmp_path,
        ENTITLEMENTS_HTTP_ADDR=f"127.0.0.1:{http_port}",
        # What an operator sets: an OTLP endpoint and a service name (OTEL_TRACES_EXPORTER
        # defaults to otlp once an endpoint is given).
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_SERVICE_NAME="entitlements-under-test",
        OTEL_BSP_SCHEDULE_DELAY="50",
        ENTITLEMENTS_RPC_URL_LOCAL=node.url,
    )
    try:
        migrate(server.env, tmp_path)
        server.start(timeout=120)  # a loaded machine: the import of the SDK and anvil's checks
        with grpc.insecure_channel(server.target) as channel:
            check, check_trace, check_parent = _traceparent()
            answer = ent_grpc.EntitlementsServiceStub(channel).CanUseFeature(
                ent_pb.CanUseFeatureRequest(account_id="ws-1", feature="apiAccess"),
                metadata=[("traceparent", check)],
                timeout=5,
            )
            assert answer.plan_id == "free"
            # Errors keep their rich details with the interceptor in front.
            with pytest.raises(grpc.RpcError) as refused:
                ent_grpc.EntitlementsServiceStub(channel).CanUseFeature(
                    ent_pb.CanUseFeatureRequest(account_id="ws-1", feature="teleportation"),
                    timeout=5,
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            info, fields = details(refused.value)  # type: ignore[arg-type]
            assert info is not None and fields == ["feature"]
            read, read_trace, read_parent = _traceparent()
            with pytest.raises(grpc.RpcError) as no_token:
                gate_grpc.TokenGateServiceStub(channel).VerifyToken(
                    gate_pb.VerifyTokenRequest(
                        requirement=gate_pb.TokenRequirement(
                            token_type=gate_pb.TOKEN_TYPE_ERC20,
                            contract_address="0x" + "11" * 20,
                            network="local",
                            min_balance="1",
                        ),
                        wallet_address="0x" + "22" * 20,
                    ),
                    metadata=[("traceparent", read)],
                    timeout=10,
                )
            # The chain was read to find out that there is no token at that address.
            assert no_token.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            write, write_trace, write_parent = _traceparent()
            admin_grpc.AdminServiceStub(channel).SetAccountOverrides(
                admin_pb.SetAccountOverridesRequest(
                    overrides=admin_pb.AccountOverrides(
                        account_id="ws-1", granted_features=["apiAccess"], reason="support"
                    )
                ),
                metadata=[("traceparent", write)],
                timeout=5,
            )
        hook, hook_trace, hook_parent = _traceparent()
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/webhooks/stripe",
            data=b"{}",
            headers={"traceparent": hook, "Stripe-Signature": "t=1,v1=00"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=5)  # refused: Stripe is not configured

        rpc = collector.wait_for(lambda s: s["trace_id"] == check_trace)[0]
        assert rpc["name"].endswith("EntitlementsService/CanUseFeature")
        assert rpc["parent"] == check_parent
        assert rpc["service"] == "entitlements-under-test"

        admin = collector.wait_for(
            lambda s: s["trace_id"] == write_trace and s["name"].endswith("SetAccountOverrides")
        )[0]
        assert admin["parent"] == write_parent
        # The database writes the call made are its children, in the caller's trace.
        writes = collector.wait_for(
            lambda s: s["trace_id"] == write_trace and s["name"].startswith(("INSERT", "UPDATE"))
        )
        assert {w["parent"] for w in writes} == {admin["span_id"]}

        webhook = collector.wait_for(lambda s: s["trace_id"] == hook_trace)[0]
        assert webhook["name"] == "POST /webhooks/stripe"
        assert webhook["parent"] == hook_parent

        verify = collector.wait_for(
            lambda s: s["trace_id"] == read_trace and s["name"].endswith("VerifyToken")
        )[0]
        assert verify["parent"] == read_parent
        reads = collector.wait_for(
            lambda s: s["trace_id"] == read_trace and s["name"].startswith("chain ")
        )
        assert {r["parent"] for r in reads} == {verify["span_id"]}
    finally:
        try:
            assert server.stop() == 0
        finally:
            node.stop()


def test_tracing_is_off_by_default_and_installs_nothing() -> None:
    settings = Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1"})
    assert settings.traces_exporters == ()
    assert not tracing.configure_tracing(settings)
    assert not tracing.tracing_enabled()
    assert tracing.aio_server_interceptors() == []
    assert tracing.server_interceptors() == []
    assert tracing.http_middleware() == []

    def observe(network: str, method: str, seconds: float, error: str | None) -> None:
        return None

    assert tracing.chain_read_observer(observe) is observe


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "x"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ()),
    ],
)
def test_traces_are_opt_in_from_the_standard_variables(
    env: dict[str, str], exporters: tuple[str, ...]
) -> None:
    settings = Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1", **env})
    assert settings.traces_exporters == exporters


def test_an_unknown_exporter_or_protocol_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1", "OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        Settings.from_env(
            {"ENTITLEMENTS_DEV_MODE": "1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        )


_SYNC_SERVER = """
import asyncio
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from entitlements.config import Settings
from entitlements.observability import tracing

assert tracing.configure_tracing(Settings.from_env())
server = grpc.server(
    futures.ThreadPoolExecutor(max_workers=2), interceptors=tracing.server_interceptors()
)
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), metadata=[("traceparent", TRACEPARENT)], timeout=5
    )
server.stop(0)
asyncio.run(tracing.flush())
"""


@pytest.mark.slow
def test_the_sync_server_interceptor_traces_with_the_console_exporter() -> None:
    """grpc's sync server gets the same spans (`server_interceptors`), here printed by the
    console exporter (`OTEL_TRACES_EXPORTER=console`)."""
    traceparent, trace_id, parent_id = _traceparent()
    done = subprocess.run(
        [sys.executable, "-c", _SYNC_SERVER.replace("TRACEPARENT", repr(traceparent))],
        env={
            **os.environ,
            "ENTITLEMENTS_DEV_MODE": "1",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_SERVICE_NAME": "sync-under-test",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    span = json.loads(done.stdout[done.stdout.index("{") :])
    assert span["name"] == "/grpc.health.v1.Health/Check"
    assert span["context"]["trace_id"] == f"0x{trace_id}"
    assert span["parent_id"] == f"0x{parent_id}"
    assert span["resource"]["attributes"]["service.name"] == "sync-under-test"
