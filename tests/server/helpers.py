"""Reading the rich error details a caller sees."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo | None, list[str]]:
    """(ErrorInfo, BadRequest field names) carried by an error's status details."""
    raw = None
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            raw = value
    if raw is None:
        return None, []
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    return status_details(status)


def status_details(
    status: status_pb2.Status,
) -> tuple[error_details_pb2.ErrorInfo | None, list[str]]:
    info: error_details_pb2.ErrorInfo | None = None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return info, fields
