"""Services whose issue has not landed answer UNIMPLEMENTED and say what is missing."""

from __future__ import annotations

import grpc
import pytest

from tests.server.conftest import OPS
from tests.server.helpers import details

UNBUILT = [
    (module, service)
    for module, name in ()  # every service of the API is built
    for service in [module.DESCRIPTOR.services_by_name[name]]
]
METHODS = [
    pytest.param(module, service, method, id=f"{service.name}.{method.name}")
    for module, service in UNBUILT
    for method in service.methods
]


@pytest.mark.parametrize(("module", "service", "method"), METHODS)
async def test_unbuilt_rpc_answers_unimplemented_naming_what_is_missing(
    lone_channel: grpc.aio.Channel, module: object, service: object, method: object
) -> None:
    path = f"/{service.full_name}/{method.name}"  # type: ignore[attr-defined]
    request_cls = getattr(module, method.input_type.name)  # type: ignore[attr-defined]
    response_cls = getattr(module, method.output_type.name)  # type: ignore[attr-defined]
    if method.server_streaming:  # type: ignore[attr-defined]
        call = lone_channel.unary_stream(
            path,
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )(request_cls(), metadata=OPS)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    else:
        rpc = lone_channel.unary_unary(
            path,
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc(request_cls(), metadata=OPS)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert f"{service.name}.{method.name} is not implemented" in caught.value.details()  # type: ignore[attr-defined]
    assert "not built yet" in caught.value.details()
    info, _ = details(caught.value)
    assert info is not None and info.reason == "ERROR_REASON_NOT_IMPLEMENTED"
    assert info.metadata["missing"] == service.full_name  # type: ignore[attr-defined]
