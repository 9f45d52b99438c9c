"""What every RPC does with requests no handler should see: bytes that are no message, and text
a database cannot hold. The caller is authenticated first; then INVALID_ARGUMENT (naming the
field where there is one), one short log line at most, nothing written.

The RPCs and their string fields are read from the descriptors, so a new RPC or field is covered
without a line here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from nchat.entitlements.v1 import (
    admin_service_pb2,
    billing_service_pb2,
    crypto_payment_service_pb2,
    entitlements_service_pb2,
    token_gate_service_pb2,
    usage_service_pb2,
)
from nchat.entitlements.v1 import admin_service_pb2 as admin_pb
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb

from entitlements.server.app import SERVICE_NAMES, Running
from entitlements.server.validation import MAX_TEXT_LENGTH
from entitlements.usage.periods import current_period
from tests.server.conftest import OPS
from tests.server.helpers import details

METHODS: tuple[MethodDescriptor, ...] = tuple(
    method
    for module in (
        entitlements_service_pb2,
        usage_service_pb2,
        token_gate_service_pb2,
        billing_service_pb2,
        crypto_payment_service_pb2,
        admin_service_pb2,
    )
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
)
IDS = [f"{m.containing_service.name}.{m.name}" for m in METHODS]

#: Seven bytes that are no protobuf message: a varint that never ends.
GARBAGE = b"\xff" * 7
#: Field 1, length 2, bytes that are not UTF-8: every request's field 1 is a string or a
#: message whose field 1 is one, or the parse fails earlier; either way undecodable or refused.
BAD_UTF8 = b"\x0a\x02\xc3\x28"


def test_every_served_service_is_covered() -> None:
    assert {m.containing_service.full_name for m in METHODS} == set(SERVICE_NAMES)


async def raw_call(
    channel: grpc.aio.Channel, method: MethodDescriptor, body: bytes, metadata: Any = ()
) -> grpc.aio.AioRpcError | None:
    """Send `body` as the request of `method`, as is; the error it got, or None."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(body, metadata=metadata, timeout=5)
            try:
                async for _ in stream:
                    break
            finally:
                stream.cancel()
        else:
            await channel.unary_unary(path)(body, metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error
    return None


@pytest.mark.parametrize("method", METHODS, ids=IDS)
async def test_undecodable_bytes_from_an_anonymous_caller_are_unauthenticated(
    lone_channel: grpc.aio.Channel, method: MethodDescriptor
) -> None:
    error = await raw_call(lone_channel, method, GARBAGE)
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED, error


@pytest.mark.parametrize("body", [GARBAGE, BAD_UTF8], ids=["garbage", "bad-utf8"])
@pytest.mark.parametrize("method", METHODS, ids=IDS)
async def test_undecodable_bytes_from_a_caller_are_invalid_argument(
    lone_channel: grpc.aio.Channel, method: MethodDescriptor, body: bytes
) -> None:
    error = await raw_call(lone_channel, method, body, OPS)
    if body is BAD_UTF8 and error is None:
        return  # field 1 of this request is no string: the bytes decode (as unknown fields)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    info, _ = details(error)
    assert info is not None and info.reason == "ERROR_REASON_INVALID_ARGUMENT"
    assert method.input_type.name in error.details()


async def test_undecodable_bytes_are_logged_in_a_few_short_lines(
    lone_channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Thirty-one seven-byte requests, twice over, used to write 43 KB of tracebacks."""
    caplog.set_level(logging.INFO)
    for _ in range(2):
        for method in METHODS:
            await raw_call(lone_channel, method, GARBAGE, OPS)
            await raw_call(lone_channel, method, GARBAGE)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    written = sum(len(r.getMessage()) for r in caplog.records)
    assert written < 4 * 1024, [r.getMessage() for r in caplog.records]


# --- text a database cannot hold ----------------------------------------------------------------


def string_paths(descriptor: Descriptor, depth: int = 0) -> Iterator[tuple[str, ...]]:
    """Every string field reachable in `descriptor`, as paths of field names."""
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            yield (field.name,)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
            for rest in string_paths(field.message_type, depth + 1):
                yield (field.name, *rest)


def with_text(descriptor: Descriptor, path: tuple[str, ...], value: str) -> tuple[Message, str]:
    """A request of `descriptor` whose only set string is `value` at `path`, and the field path
    a BadRequest names for it (a repeated field's first item: "events[0].idempotency_key")."""
    message = GetMessageClass(descriptor)()
    current: Any = message
    named: list[str] = []
    for depth, name in enumerate(path):
        field = current.DESCRIPTOR.fields_by_name[name]
        last = depth == len(path) - 1
        if field.is_repeated:
            named.append(f"{name}[0]")
            container = getattr(current, name)
            if last:
                container.append(value)
            else:
                current = container.add()
        else:
            named.append(name)
            if last:
                setattr(current, name, value)
            else:
                current = getattr(current, name)
    return message, ".".join(named)


TEXT_CASES = [(method, path) for method in METHODS for path in string_paths(method.input_type)]


@pytest.mark.parametrize("value", ["a\x00b", "x" * (MAX_TEXT_LENGTH + 1)], ids=["nul", "too-long"])
async def test_any_string_field_with_text_no_database_holds_is_invalid_argument_naming_it(
    server: Running, channel: grpc.aio.Channel, value: str
) -> None:
    """One rule for every text field of every request, on both databases."""
    wrong: list[str] = []
    for method, path in TEXT_CASES:
        request, field = with_text(method.input_type, path, value)
        error = await raw_call(channel, method, request.SerializeToString(), OPS)
        if error is None:
            wrong.append(f"{method.name} {field}: OK")
            continue
        _, fields = details(error)
        if (error.code(), fields) != (grpc.StatusCode.INVALID_ARGUMENT, [field]):
            wrong.append(f"{method.name} {field}: {error.code().name} {fields} {error.details()}")
    assert not wrong, "\n".join(wrong)


async def test_nul_in_an_idempotency_key_is_invalid_argument_and_counts_nothing(
    server: Running, channel: grpc.aio.Channel
) -> None:
    """On PostgreSQL this key used to reach the group commit and fail every batch sharing it."""
    report = usage_pb.ReportUsageRequest(
        events=[
            usage_pb.UsageEvent(
                account_id="ws-nul", metric="messages", delta=1, idempotency_key="a"
            ),
            usage_pb.UsageEvent(
                account_id="ws-nul", metric="messages", delta=1, idempotency_key="b\x00"
            ),
        ]
    )
    method = usage_pb.DESCRIPTOR.services_by_name["UsageService"].methods_by_name["ReportUsage"]
    error = await raw_call(channel, method, report.SerializeToString(), OPS)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error)[1] == ["events[1].idempotency_key"]
    assert server.deps.ledger is not None
    assert await server.deps.ledger.counters("ws-nul", current_period(datetime.now(UTC))) == {}


async def test_nul_in_an_override_reason_is_invalid_argument(
    server: Running, channel: grpc.aio.Channel
) -> None:
    request = admin_pb.SetAccountOverridesRequest(
        overrides=admin_pb.AccountOverrides(
            account_id="ws-nul", granted_features=["apiAccess"], reason="because\x00"
        )
    )
    method = admin_pb.DESCRIPTOR.services_by_name["AdminService"].methods_by_name[
        "SetAccountOverrides"
    ]
    error = await raw_call(channel, method, request.SerializeToString(), OPS)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error)[1] == ["overrides.reason"]
