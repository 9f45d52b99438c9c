"""A service of the published API that this server does not serve answers UNIMPLEMENTED and
says why: here BillingService on a server without Stripe."""

from __future__ import annotations

import grpc
import pytest
from nchat.entitlements.v1 import billing_service_pb2 as pb

from tests.server.conftest import OPS
from tests.server.helpers import details

SERVICE = pb.DESCRIPTOR.services_by_name["BillingService"]


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
async def test_billing_without_stripe_answers_unimplemented_saying_why(
    lone_channel: grpc.aio.Channel, method: object
) -> None:
    request_cls = getattr(pb, method.input_type.name)  # type: ignore[attr-defined]
    response_cls = getattr(pb, method.output_type.name)  # type: ignore[attr-defined]
    rpc = lone_channel.unary_unary(
        f"/{SERVICE.full_name}/{method.name}",  # type: ignore[attr-defined]
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc(request_cls(account_id="ws"), metadata=OPS)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert f"BillingService.{method.name} is not served" in caught.value.details()  # type: ignore[attr-defined]
    assert "STRIPE_SECRET_KEY" in caught.value.details()
    info, _ = details(caught.value)
    assert info is not None and info.reason == "ERROR_REASON_NOT_IMPLEMENTED"
    assert info.metadata["missing"] == SERVICE.full_name
