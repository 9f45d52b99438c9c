"""Opaque page tokens for ListSubscriptions: the last row's keyset, bound to the filters."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from entitlements.errors import InvalidArgument

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "PageFilter", "decode_token", "encode_token"]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VERSION = 1


@dataclass(frozen=True, slots=True)
class PageFilter:
    """The filters a listing was asked with; a token only continues the same listing."""

    status: str | None = None
    plan_id: str | None = None

    def digest(self) -> str:
        text = json.dumps([self.status, self.plan_id])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _micros(value: datetime) -> int:
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_token(last: tuple[datetime, str], filters: PageFilter) -> str:
    """The token after the row `last` ((created_at, id)) of a listing with `filters`."""
    created_at, sub_id = last
    body = json.dumps(
        {"v": _VERSION, "t": _micros(created_at), "i": sub_id, "f": filters.digest()},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_token(token: str, filters: PageFilter) -> tuple[datetime, str]:
    """The keyset a token continues after; InvalidArgument (`page_token`) when it is malformed
    or was made for other filters."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise ValueError("unknown token version")
        micros, sub_id, digest = body["t"], body["i"], body["f"]
        if not isinstance(micros, int) or not isinstance(sub_id, str):
            raise ValueError("bad token fields")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token", "is not a token returned by ListSubscriptions") from exc
    if digest != filters.digest():
        raise InvalidArgument(
            "page_token", "was returned for other filters (status, plan_id); start again"
        )
    return _EPOCH + timedelta(microseconds=micros), sub_id
