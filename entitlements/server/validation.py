"""Checks of request fields that are not catalog lookups; each names the offending field."""

from __future__ import annotations

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


def require_count(values: object, field: str, *, maximum: int) -> None:
    n = len(values)  # type: ignore[arg-type]
    if n > maximum:
        raise InvalidArgument(field, f"at most {maximum} items, got {n}")
