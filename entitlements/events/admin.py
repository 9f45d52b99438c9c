"""What operators do with outbound events: list deliveries a page at a time (opaque AIP-158
tokens bound to the filters) and replay an event or an endpoint's failed deliveries."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence

from entitlements.errors import InvalidArgument, NotFound
from entitlements.events.endpoints import Endpoint
from entitlements.store.events_repository import DeliveryRow, EventsRepository

__all__ = ["DELIVERY_STATUSES", "EventsAdmin"]

DELIVERY_STATUSES = ("pending", "delivered", "failed")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class EventsAdmin:
    def __init__(self, repository: EventsRepository, endpoints: Sequence[Endpoint]) -> None:
        self._repository = repository
        self._endpoints = {e.name for e in endpoints}

    async def list_deliveries(
        self,
        *,
        page_size: int,
        page_token: str,
        endpoint: str | None,
        status: str | None,
        account_id: str | None,
    ) -> tuple[list[DeliveryRow], str]:
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidArgument("status", "is not a delivery status")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        filters = _digest(endpoint, status, account_id)
        after = _decode(page_token, filters) if page_token else 0
        rows = await self._repository.list_deliveries(
            endpoint=endpoint, status=status, account_id=account_id, after_id=after, limit=size + 1
        )
        if len(rows) <= size:
            return rows, ""
        rows = rows[:size]
        return rows, _encode(rows[-1].id, filters)

    async def replay_event(self, event_id: str) -> int:
        if not event_id:
            raise InvalidArgument("event_id", "is required")
        if not await self._repository.event_exists(event_id):
            raise NotFound(f"no event {event_id!r}")
        return await self._repository.replay_event(event_id)

    async def replay_failed(self, endpoint: str) -> int:
        if not endpoint:
            raise InvalidArgument("endpoint", "is required")
        if endpoint not in self._endpoints:
            raise InvalidArgument("endpoint", f"{endpoint!r} is not a configured endpoint")
        return await self._repository.replay_failed(endpoint)


def _digest(*filters: str | None) -> str:
    return hashlib.sha256(json.dumps(filters).encode()).hexdigest()[:16]


def _encode(last_id: int, filters: str) -> str:
    body = json.dumps({"v": 1, "i": last_id, "f": filters}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _decode(token: str, filters: str) -> int:
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(body, dict) or body.get("v") != 1 or not isinstance(body["i"], int):
            raise ValueError("not a token")
        last_id, digest = body["i"], body["f"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            "page_token", "is not a token returned by ListEventDeliveries"
        ) from exc
    if digest != filters:
        raise InvalidArgument(
            "page_token", "was returned for other filters (endpoint, status, account_id)"
        )
    return int(last_id)
