"""Bearer tokens and scopes: UNAUTHENTICATED for strangers, PERMISSION_DENIED for the unentitled."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nchat.entitlements.v1 import crypto_payment_service_pb2 as crypto_pb
from nchat.entitlements.v1 import entitlements_service_pb2 as pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as pb_grpc

from entitlements.config import Settings
from entitlements.server.app import build_deps, create_server
from entitlements.store.repository import Store
from tests.server.conftest import CHAT, MESSAGES
from tests.server.helpers import details

REQUEST = pb.CanUseFeatureRequest(account_id="ws", feature="apiAccess")


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer not-a-configured-token-at-all"),),
        (("authorization", "chat-backend-token-0001"),),
        (("authorization", "Basic chat-backend-token-0001"),),
        (("authorization", "Bearer "),),
    ],
)
async def test_missing_or_unknown_token_is_unauthenticated(
    lone_channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> None:
    stub = pb_grpc.EntitlementsServiceStub(lone_channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CanUseFeature(REQUEST, metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info, _ = details(caught.value)
    assert info is not None and info.reason == "ERROR_REASON_UNAUTHENTICATED"


async def test_known_caller_without_the_scope_is_permission_denied(
    lone_channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.EntitlementsServiceStub(lone_channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CanUseFeature(REQUEST, metadata=MESSAGES)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "message-service" in caught.value.details()
    info, _ = details(caught.value)
    assert info is not None and info.metadata["scope"] == "entitlements:read"


async def test_streaming_rpc_is_refused_without_the_scope(lone_channel: grpc.aio.Channel) -> None:
    stream = pb_grpc.EntitlementsServiceStub(lone_channel).WatchEntitlements(
        pb.WatchEntitlementsRequest(account_ids=["ws"], send_initial=True), metadata=MESSAGES
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_caller_with_the_scope_is_answered(lone_channel: grpc.aio.Channel) -> None:
    answer = await pb_grpc.EntitlementsServiceStub(lone_channel).CanUseFeature(
        REQUEST, metadata=CHAT
    )
    assert answer.plan_id == "free"


async def test_every_token_of_a_caller_works_during_rotation(
    lone_channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.EntitlementsServiceStub(lone_channel)
    for token in ("ops-token-0000000000001", "ops-token-rotated-00002"):
        answer = await stub.CanUseFeature(REQUEST, metadata=(("authorization", f"Bearer {token}"),))
        assert answer.plan_id == "free"


async def test_health_needs_no_token(lone_channel: grpc.aio.Channel) -> None:
    answer = await health_pb2_grpc.HealthStub(lone_channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_dev_mode_needs_no_token(sqlite_store: Store) -> None:
    settings = Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1"})
    running = await create_server(settings, build_deps(settings, sqlite_store), addr="127.0.0.1:0")
    await running.server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            answer = await pb_grpc.EntitlementsServiceStub(channel).CanUseFeature(REQUEST)
            assert answer.plan_id == "free"
    finally:
        await running.stop(0)


CRYPTO_CALLERS = """
[[callers]]
name = "payments-page"
tokens = ["payments-page-token-0001"]
scopes = ["crypto:read"]

[[callers]]
name = "checkout"
tokens = ["checkout-token-000000001"]
scopes = ["crypto:write"]
"""
CRYPTO_READER = (("authorization", "Bearer payments-page-token-0001"),)
CRYPTO_WRITER = (("authorization", "Bearer checkout-token-000000001"),)
CRYPTO = crypto_pb.DESCRIPTOR.services_by_name["CryptoPaymentService"]
CRYPTO_READS = ("GetCryptoPayment", "GetTransactionStatus")


@pytest.mark.parametrize("method", list(CRYPTO.methods), ids=lambda m: m.name)
async def test_crypto_reads_need_crypto_read_and_writes_crypto_write(
    tmp_path: Path, sqlite_store: Store, method: MethodDescriptor
) -> None:
    """A page that shows a payment's status holds crypto:read, not the right to create
    payments; a checkout that creates them does not read others' payments by id."""
    callers = tmp_path / "crypto-callers.toml"
    callers.write_text(CRYPTO_CALLERS)
    settings = Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers)})
    running = await create_server(settings, build_deps(settings, sqlite_store), addr="127.0.0.1:0")
    await running.server.start()
    request_cls = getattr(crypto_pb, method.input_type.name)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            rpc = channel.unary_unary(
                f"/{CRYPTO.full_name}/{method.name}",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=lambda raw: raw,
            )
            needed = "crypto:read" if method.name in CRYPTO_READS else "crypto:write"
            callers = ((CRYPTO_READER, "crypto:read"), (CRYPTO_WRITER, "crypto:write"))
            for metadata, holds in callers:
                try:
                    await rpc(request_cls(), metadata=metadata)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                    info, _ = details(error)
                if holds == needed:
                    assert code != grpc.StatusCode.PERMISSION_DENIED, (method.name, holds)
                else:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (method.name, holds)
                    assert info is not None and info.metadata["scope"] == needed
    finally:
        await running.stop(0)
