"""A caller with no project code at all, only server reflection, finds and calls the services."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from entitlements.server.app import Running

SIX_SERVICES = {
    "nchat.entitlements.v1.EntitlementsService",
    "nchat.entitlements.v1.UsageService",
    "nchat.entitlements.v1.TokenGateService",
    "nchat.entitlements.v1.BillingService",
    "nchat.entitlements.v1.CryptoPaymentService",
    "nchat.entitlements.v1.AdminService",
}
TOKEN = (("authorization", "Bearer chat-backend-token-0001"),)


def reflect_and_call(port: int) -> tuple[set[str], dict[str, object]]:
    """What grpcurl does: list services, describe one, build requests from descriptors."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("nchat.entitlements.v1.EntitlementsService")
        answers: dict[str, object] = {}
        for rpc, fields in (
            ("CanUseFeature", {"account_id": "ws-seed", "feature": "apiAccess"}),
            ("GetUpgradePath", {"plan_id": "free", "feature": "customBranding"}),
        ):
            method = service.FindMethodByName(rpc)
            request_cls = message_factory.GetMessageClass(method.input_type)
            response_cls = message_factory.GetMessageClass(method.output_type)
            call = channel.unary_unary(
                f"/{service.full_name}/{rpc}",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            answers[rpc] = call(request_cls(**fields), metadata=TOKEN)
        return services, answers


async def test_reflection_lists_six_services_and_answers_the_seed_examples(
    lone_server: Running,
) -> None:
    services, answers = await asyncio.to_thread(reflect_and_call, lone_server.port)
    assert services >= SIX_SERVICES
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    can_use = answers["CanUseFeature"]
    assert (can_use.allowed, can_use.plan_id, can_use.upgrade_plan_id) == (  # type: ignore[attr-defined]
        False,
        "free",
        "starter",
    )
    assert answers["GetUpgradePath"].plan_id == "starter"  # type: ignore[attr-defined]


def reflect_file_of(port: int, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
    """The files a FileContainingSymbol request answers for `symbol` (as grpcurl asks)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert response.HasField("file_descriptor_response"), response.error_response
        return [
            descriptor_pb2.FileDescriptorProto.FromString(data)
            for data in response.file_descriptor_response.file_descriptor_proto
        ]


async def test_reflection_resolves_a_method_symbol_and_serves_the_comments(
    lone_server: Running,
) -> None:
    files = await asyncio.to_thread(
        reflect_file_of, lone_server.port, "nchat.entitlements.v1.UsageService.CheckLimit"
    )
    usage = files[0]
    assert usage.name == "nchat/entitlements/v1/usage_service.proto"
    comments = [loc.leading_comments for loc in usage.source_code_info.location]
    assert any(c.startswith(" CheckLimit judges usage") for c in comments), comments[:5]
    # json_name is served, so callers print lowerCamelCase names as the docs show
    request = next(m for m in usage.message_type if m.name == "CheckLimitRequest")
    assert request.field[0].json_name == "accountId"


async def test_reflection_still_serves_health_and_error_details(lone_server: Running) -> None:
    health = await asyncio.to_thread(reflect_file_of, lone_server.port, "grpc.health.v1.Health")
    assert health[0].service[0].name == "Health"
    details = await asyncio.to_thread(reflect_file_of, lone_server.port, "google.rpc.BadRequest")
    assert details[0].name == "google/rpc/error_details.proto"
