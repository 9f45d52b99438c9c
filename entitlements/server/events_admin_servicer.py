"""AdminService's outbound-event RPCs (ListEventDeliveries, ReplayEvent, ReplayFailedEvents):
thin, on `entitlements.events.admin.EventsAdmin`; mixed into the AdminService servicer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from nchat.entitlements.v1 import event_delivery_pb2 as events_pb

from entitlements.errors import FailedPrecondition, InvalidArgument
from entitlements.events.admin import EventsAdmin
from entitlements.server import convert
from entitlements.server.status import unary
from entitlements.store.events_repository import DeliveryRow

__all__ = ["EventsAdminMethods"]

Ctx = grpc.aio.ServicerContext[Any, Any]

_STATUSES = {
    "pending": events_pb.EVENT_DELIVERY_STATUS_PENDING,
    "delivered": events_pb.EVENT_DELIVERY_STATUS_DELIVERED,
    "failed": events_pb.EVENT_DELIVERY_STATUS_FAILED,
}
_STATUS_NAMES = {v: k for k, v in _STATUSES.items()}


def _at(ms: int | None) -> Any:
    return convert.timestamp(None if ms is None else datetime.fromtimestamp(ms / 1000, UTC))


def delivery_message(row: DeliveryRow) -> events_pb.EventDelivery:
    return events_pb.EventDelivery(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        account_id=row.account_id,
        endpoint=row.endpoint,
        status=_STATUSES[row.status],
        attempts=row.attempts,
        next_attempt_at=_at(row.next_attempt_ms if row.status == "pending" else None),
        last_error=row.last_error,
        created_at=_at(row.created_at_ms),
        delivered_at=_at(row.delivered_at_ms),
    )


class EventsAdminMethods:
    #: Set by the server's wiring (entitlements.server.events_setup).
    events_admin: EventsAdmin | None = None

    def _events(self) -> EventsAdmin:
        if self.events_admin is None:
            raise FailedPrecondition("outbound events are not set up on this server")
        return self.events_admin

    @unary
    async def ListEventDeliveries(
        self, request: events_pb.ListEventDeliveriesRequest, context: Ctx
    ) -> events_pb.ListEventDeliveriesResponse:
        status: str | None = None
        if request.status != events_pb.EVENT_DELIVERY_STATUS_UNSPECIFIED:
            status = _STATUS_NAMES.get(request.status)
            if status is None:
                raise InvalidArgument("status", "is not a delivery status")
        rows, token = await self._events().list_deliveries(
            page_size=request.page_size,
            page_token=request.page_token,
            endpoint=request.endpoint or None,
            status=status,
            account_id=request.account_id or None,
        )
        return events_pb.ListEventDeliveriesResponse(
            deliveries=[delivery_message(r) for r in rows], next_page_token=token
        )

    @unary
    async def ReplayEvent(
        self, request: events_pb.ReplayEventRequest, context: Ctx
    ) -> events_pb.ReplayEventResponse:
        count = await self._events().replay_event(request.event_id)
        return events_pb.ReplayEventResponse(deliveries=count)

    @unary
    async def ReplayFailedEvents(
        self, request: events_pb.ReplayFailedEventsRequest, context: Ctx
    ) -> events_pb.ReplayFailedEventsResponse:
        count = await self._events().replay_failed(request.endpoint)
        return events_pb.ReplayFailedEventsResponse(deliveries=count)
