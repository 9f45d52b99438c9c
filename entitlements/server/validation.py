"""Checks of request fields that are not catalog lookups; each names the offending field."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.errors import InvalidArgument

MAX_ID_LENGTH = 256


def require_id(value: str, field: str) -> str:
    """An opaque identifier: non-empty, at most 256 characters, no control characters."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_ID_LENGTH} characters")
    if not value.isprintable() or value.strip() != value:
        raise InvalidArgument(
            field, "must not contain control characters or leading/trailing white space"
        )
    return value


def require_min_revision(value: int, field: str) -> int:
    """A consistency token: 0 (none) or a revision an earlier answer or write returned."""
    if value < 0:
        raise InvalidArgument(field, f"must be 0 or a revision the service returned, got {value}")
    return value


def require_count(values: object, field: str, *, maximum: int) -> None:
    n = len(values)  # type: ignore[arg-type]
    if n > maximum:
        raise InvalidArgument(field, f"at most {maximum} items, got {n}")


#: The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


def require_timestamp(value: Timestamp, field: str) -> Timestamp:
    """A Timestamp inside the range protobuf defines (and so convertible), or INVALID_ARGUMENT."""
    if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(field, "seconds outside 0001-01-01 to 9999-12-31")
    if not 0 <= value.nanos <= 999_999_999:
        raise InvalidArgument(field, "nanos must be from 0 to 999,999,999")
    return value
