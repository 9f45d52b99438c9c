"""A database that cannot be reached is UNAVAILABLE with a reason and a generic message: where
the database is (user, host, port, name, file) goes to the log, never to a caller."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from nchat.entitlements.v1 import admin_service_pb2 as admin_pb
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import token_gate_service_pb2 as gate_pb
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb

from entitlements.config import Settings
from entitlements.server.app import build_deps, create_server
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML, OPS
from tests.server.helpers import details


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: An unreachable database and the words of its URL no caller may see.
UNREACHABLE: dict[str, Callable[[Path], tuple[str, tuple[str, ...]]]] = {
    "postgres-closed-port": lambda _: (
        f"postgresql+asyncpg://ledgeruser:pw@localhost:{(port := closed_port())}/billingdb",
        ("ledgeruser", "localhost", str(port), "billingdb", "pw"),
    ),
    "sqlite-missing-directory": lambda tmp: (
        f"sqlite+aiosqlite:///{tmp / 'hidden-dir' / 'billingdb.sqlite'}",
        ("hidden-dir", "billingdb", str(tmp)),
    ),
}

CALLS: list[tuple[str, Message]] = [
    (
        "/nchat.entitlements.v1.EntitlementsService/CanUseFeature",
        ent_pb.CanUseFeatureRequest(account_id="ws", feature="apiAccess"),
    ),
    (
        "/nchat.entitlements.v1.UsageService/ReportUsage",
        usage_pb.ReportUsageRequest(
            events=[
                usage_pb.UsageEvent(
                    account_id="ws", metric="messages", delta=1, idempotency_key="k"
                )
            ]
        ),
    ),
    (
        "/nchat.entitlements.v1.UsageService/GetUsage",
        usage_pb.GetUsageRequest(account_id="ws"),
    ),
    (
        "/nchat.entitlements.v1.TokenGateService/ListTokenRequirements",
        gate_pb.ListTokenRequirementsRequest(channel_id="chan"),
    ),
    (
        "/nchat.entitlements.v1.AdminService/SetAccountOverrides",
        admin_pb.SetAccountOverridesRequest(
            overrides=admin_pb.AccountOverrides(
                account_id="ws", granted_features=["apiAccess"], reason="support"
            )
        ),
    ),
]


@pytest.mark.parametrize("unreachable", list(UNREACHABLE))
async def test_an_unreachable_database_is_unavailable_without_saying_where_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, unreachable: str
) -> None:
    url, secrets = UNREACHABLE[unreachable](tmp_path)
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    settings = Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers)})
    caplog.set_level(logging.WARNING)
    async with Store.open(url) as store:
        running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
        await running.server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                for path, request in CALLS:
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await channel.unary_unary(path)(
                            request.SerializeToString(), metadata=OPS, timeout=10
                        )
                    error = caught.value
                    assert error.code() == grpc.StatusCode.UNAVAILABLE, (path, error)
                    info, _ = details(error)
                    assert info is not None
                    assert info.reason == "ERROR_REASON_DEPENDENCY_UNAVAILABLE"
                    seen = (error.details() or "") + repr(error.trailing_metadata())
                    leaked = [s for s in secrets if s in seen]
                    assert not leaked, f"{path} told the caller {leaked}: {seen}"
        finally:
            await running.stop(0)
    # The operator still learns where: the log says it.
    assert any(secrets[1] in record.getMessage() for record in caplog.records), caplog.text
