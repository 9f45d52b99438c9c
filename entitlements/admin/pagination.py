"""Opaque page tokens for the admin listings (ListSubscriptions, ListUnsettledFunds): the last
row's keyset (a time and an id), bound to the filters it was listed with."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from entitlements.errors import InvalidArgument

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Filters",
    "PageFilter",
    "decode_token",
    "encode_token",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VERSION = 1


class Filters(Protocol):
    """A listing's filters: a token made under one digest only continues that listing."""

    def digest(self) -> str: ...


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


def encode_token(last: tuple[datetime, str], filters: Filters) -> str:
    """The token after the row `last` ((created_at, id)) of a listing with `filters`."""
    created_at, sub_id = last
    body = json.dumps(
        {"v": _VERSION, "t": _micros(created_at), "i": sub_id, "f": filters.digest()},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_token(
    token: str, filters: Filters, *, listing: str = "ListSubscriptions", names: str = ""
) -> tuple[datetime, str]:
    """The keyset a token continues after; InvalidArgument (`page_token`) when it is malformed
    or was made for other filters (`names` lists them in the message)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise ValueError("unknown token version")
        micros, sub_id, digest = body["t"], body["i"], body["f"]
        if not isinstance(micros, int) or not isinstance(sub_id, str):
            raise ValueError("bad token fields")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token", f"is not a token returned by {listing}") from exc
    if digest != filters.digest():
        raise InvalidArgument(
            "page_token",
            f"was returned for other filters ({names or 'status, plan_id'}); start again",
        )
    return _EPOCH + timedelta(microseconds=micros), sub_id
