"""SQL of outbound events: appending to the outbox inside a producer's transaction, fanning
events out to one delivery per endpoint, claiming due deliveries without two dispatchers sending
the same attempt, recording outcomes, listing and replaying them.

Claims: on PostgreSQL `SELECT ... FOR UPDATE SKIP LOCKED`, so replicas claim disjoint rows
without waiting; on SQLite the claim is one BEGIN IMMEDIATE transaction (the single writer).
A claim is a lease: it moves the delivery's `next_attempt_ms` past the send's deadline, so a
dispatcher killed mid-send leaves a delivery that is claimed again once its lease ran out.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, exists, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from entitlements.events.types import Event
from entitlements.store.models import EventDelivery, OutboxEvent, Subscription
from entitlements.store.sessions import Sessions

__all__ = [
    "ClaimedDelivery",
    "DeliveryRow",
    "EventsRepository",
    "OutboxStats",
    "Outcome",
    "RenewalDue",
    "append_event",
    "append_event_sqlite",
]

_INSERT = (
    "INSERT INTO outbox_events (id, type, account_id, occurred_at_ms, body, dedup_key,"
    " fanned_out) VALUES ({}) ON CONFLICT DO NOTHING"
)
_NAMED = _INSERT.format(":id, :type, :account_id, :occurred_at_ms, :body, :dedup_key, false")
_QMARK = _INSERT.format("?, ?, ?, ?, ?, ?, 0")


def _now_ms() -> int:
    return int(time.time() * 1000)


async def append_event(conn: AsyncConnection | AsyncSession, event: Event) -> bool:
    """Append `event` in the caller's transaction (same connection or session): it exists
    exactly when that transaction commits. False if its `dedup_key` was already written."""
    result: Any = await conn.execute(
        text(_NAMED),
        {
            "id": event.id,
            "type": event.type,
            "account_id": event.account_id,
            "occurred_at_ms": event.occurred_at_ms,
            "body": event.body,
            "dedup_key": event.dedup_key,
        },
    )
    return bool(result.rowcount)


def append_event_sqlite(conn: sqlite3.Connection, event: Event) -> bool:
    """`append_event` for code holding a plain sqlite3 connection in a transaction."""
    cursor = conn.execute(
        _QMARK,
        (
            event.id,
            event.type,
            event.account_id,
            event.occurred_at_ms,
            event.body,
            event.dedup_key,
        ),
    )
    return cursor.rowcount > 0


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    endpoint: str
    attempts: int
    event_id: str
    event_type: str
    body: str
    occurred_at_ms: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one attempt: "delivered", "retry" (at `next_attempt_ms`) or "failed"."""

    delivery_id: int
    status: str
    next_attempt_ms: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    event_id: str
    event_type: str
    account_id: str
    endpoint: str
    status: str
    attempts: int
    next_attempt_ms: int
    last_error: str
    created_at_ms: int
    delivered_at_ms: int | None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    #: Deliveries not yet delivered nor failed, plus events not yet fanned out.
    depth: int
    #: Age of the oldest such event, in seconds (0 when none).
    oldest_age_s: float
    #: Failed deliveries by endpoint.
    failed: dict[str, int]


_D = cast(Table, EventDelivery.__table__)
_E = cast(Table, OutboxEvent.__table__)


class EventsRepository(Sessions):
    async def append(self, event: Event) -> bool:
        """Append an event in a transaction of its own (for producers with no change to
        commit with it, like the renewal scan)."""
        async with self._transaction(write=True) as session:
            return await append_event(session, event)

    async def fan_out(self, endpoints: Sequence[tuple[str, frozenset[str]]], limit: int) -> int:
        """Create the deliveries of up to `limit` new events: one per endpoint (name, event
        types; empty: all) that wants it. Returns how many events were fanned out."""
        now = _now_ms()
        async with self._transaction(write=True) as session:
            rows = (
                await session.execute(
                    select(_E.c.seq, _E.c.type, _E.c.account_id)
                    .where(_E.c.fanned_out.is_(False))
                    .order_by(_E.c.seq)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            deliveries = [
                {
                    "event_seq": seq,
                    "endpoint": name,
                    "account_id": account_id,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_ms": now,
                    "last_error": "",
                    "created_at_ms": now,
                }
                for seq, type_, account_id in rows
                for name, types in endpoints
                if not types or type_ in types
            ]
            if deliveries:
                await session.execute(
                    self._insert(EventDelivery).on_conflict_do_nothing(), deliveries
                )
            await session.execute(
                update(_E).where(_E.c.seq.in_([r.seq for r in rows])).values(fanned_out=True)
            )
            return len(rows)

    async def claim(
        self, endpoint: str, *, limit: int, lease_ms: int, ordered: bool
    ) -> list[ClaimedDelivery]:
        """Claim up to `limit` due deliveries of `endpoint` for one attempt each. With
        `ordered`, an account's delivery waits while an earlier one of the same account is
        still pending."""
        now = _now_ms()
        earlier = aliased(EventDelivery)
        query = (
            select(_D.c.id)
            .where(
                _D.c.endpoint == endpoint,
                _D.c.status == "pending",
                _D.c.next_attempt_ms <= now,
            )
            .order_by(_D.c.event_seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if ordered:
            # Nor while an earlier event of the account is not fanned out yet (another
            # replica's fan-out still in flight).
            query = query.where(
                ~exists().where(
                    and_(
                        earlier.endpoint == _D.c.endpoint,
                        earlier.account_id == _D.c.account_id,
                        earlier.status == "pending",
                        earlier.event_seq < _D.c.event_seq,
                    )
                ),
                ~exists().where(
                    and_(
                        _E.c.account_id == _D.c.account_id,
                        _E.c.fanned_out.is_(False),
                        _E.c.seq < _D.c.event_seq,
                    )
                ),
            )
        async with self._transaction(write=True) as session:
            ids = list((await session.execute(query)).scalars())
            if not ids:
                return []
            await session.execute(
                update(_D)
                .where(_D.c.id.in_(ids))
                .values(next_attempt_ms=now + lease_ms, attempts=_D.c.attempts + 1)
            )
            rows = await session.execute(
                select(
                    _D.c.id,
                    _D.c.endpoint,
                    _D.c.attempts,
                    _E.c.id,
                    _E.c.type,
                    _E.c.body,
                    _E.c.occurred_at_ms,
                )
                .join(_E, _E.c.seq == _D.c.event_seq)
                .where(_D.c.id.in_(ids))
                .order_by(_D.c.event_seq)
            )
            return [ClaimedDelivery(*r) for r in rows]

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """The outcomes of a batch of attempts, in one transaction (a statement per kind)."""
        now = _now_ms()
        delivered = sorted(o.delivery_id for o in outcomes if o.status == "delivered")
        retries = [
            {"b_id": o.delivery_id, "b_next": o.next_attempt_ms, "b_error": o.error[:1000]}
            for o in sorted(outcomes, key=lambda o: o.delivery_id)
            if o.status == "retry"
        ]
        failures = [
            {"b_id": o.delivery_id, "b_error": o.error[:1000]}
            for o in sorted(outcomes, key=lambda o: o.delivery_id)
            if o.status == "failed"
        ]
        # A replay may have moved a delivery on meanwhile: only a pending one is retried or
        # failed.
        pending = and_(_D.c.id == bindparam("b_id"), _D.c.status == "pending")
        async with self._transaction(write=True) as session:
            if delivered:
                await session.execute(
                    update(_D)
                    .where(_D.c.id.in_(delivered))
                    .values(status="delivered", delivered_at_ms=now, last_error="")
                )
            if retries:
                await session.execute(
                    update(_D)
                    .where(pending)
                    .values(next_attempt_ms=bindparam("b_next"), last_error=bindparam("b_error")),
                    retries,
                )
            if failures:
                await session.execute(
                    update(_D)
                    .where(pending)
                    .values(status="failed", last_error=bindparam("b_error")),
                    failures,
                )

    async def prune(self, older_than_ms: int, *, batch: int = 1000) -> int:
        """Delete events older than `older_than_ms` with no delivery still pending (and their
        deliveries), a batch per transaction; returns how many events."""
        removed = 0
        while True:
            async with self._transaction(write=True) as session:
                seqs = list(
                    (
                        await session.execute(
                            select(_E.c.seq)
                            .where(
                                _E.c.occurred_at_ms < older_than_ms,
                                _E.c.fanned_out.is_(True),
                                ~exists().where(
                                    _D.c.event_seq == _E.c.seq, _D.c.status == "pending"
                                ),
                            )
                            .limit(batch)
                        )
                    ).scalars()
                )
                if seqs:
                    await session.execute(delete(_D).where(_D.c.event_seq.in_(seqs)))
                    await session.execute(delete(_E).where(_E.c.seq.in_(seqs)))
            removed += len(seqs)
            if len(seqs) < batch:
                return removed

    async def list_deliveries(
        self,
        *,
        endpoint: str | None = None,
        status: str | None = None,
        account_id: str | None = None,
        after_id: int = 0,
        limit: int = 50,
    ) -> list[DeliveryRow]:
        """Deliveries by id (oldest first) after `after_id`, with the given filters."""
        query = (
            select(
                _D.c.id,
                _E.c.id,
                _E.c.type,
                _D.c.account_id,
                _D.c.endpoint,
                _D.c.status,
                _D.c.attempts,
                _D.c.next_attempt_ms,
                _D.c.last_error,
                _D.c.created_at_ms,
                _D.c.delivered_at_ms,
            )
            .join(_E, _E.c.seq == _D.c.event_seq)
            .where(_D.c.id > after_id)
            .order_by(_D.c.id)
            .limit(limit)
        )
        if endpoint:
            query = query.where(_D.c.endpoint == endpoint)
        if status:
            query = query.where(_D.c.status == status)
        if account_id:
            query = query.where(_D.c.account_id == account_id)
        async with self._transaction() as session:
            return [DeliveryRow(*r) for r in await session.execute(query)]

    async def latest_failed(self, limit: int) -> list[DeliveryRow]:
        """The most recently created failed deliveries, newest first."""
        query = (
            select(
                _D.c.id,
                _E.c.id,
                _E.c.type,
                _D.c.account_id,
                _D.c.endpoint,
                _D.c.status,
                _D.c.attempts,
                _D.c.next_attempt_ms,
                _D.c.last_error,
                _D.c.created_at_ms,
                _D.c.delivered_at_ms,
            )
            .join(_E, _E.c.seq == _D.c.event_seq)
            .where(_D.c.status == "failed")
            .order_by(_D.c.id.desc())
            .limit(limit)
        )
        async with self._transaction() as session:
            return [DeliveryRow(*r) for r in await session.execute(query)]

    async def event_exists(self, event_id: str) -> bool:
        async with self._transaction() as session:
            return (await session.scalar(select(_E.c.seq).where(_E.c.id == event_id))) is not None

    async def replay_event(self, event_id: str, endpoints: Iterable[str] | None = None) -> int:
        """Send the event again to every endpoint it went to (or `endpoints`); the count."""
        async with self._transaction(write=True) as session:
            seq = select(_E.c.seq).where(_E.c.id == event_id).scalar_subquery()
            query = update(_D).where(_D.c.event_seq == seq)
            if endpoints is not None:
                query = query.where(_D.c.endpoint.in_(list(endpoints)))
            result: Any = await session.execute(
                query.values(status="pending", next_attempt_ms=_now_ms(), delivered_at_ms=None)
            )
            return int(result.rowcount)

    async def replay_failed(self, endpoint: str) -> int:
        """Send every failed delivery of `endpoint` again; the count."""
        async with self._transaction(write=True) as session:
            result: Any = await session.execute(
                update(_D)
                .where(_D.c.endpoint == endpoint, _D.c.status == "failed")
                .values(status="pending", next_attempt_ms=_now_ms())
            )
            return int(result.rowcount)

    async def stats(self) -> OutboxStats:
        async with self._transaction() as session:
            pending, oldest_delivery = (
                await session.execute(
                    select(func.count(), func.min(_E.c.occurred_at_ms))
                    .select_from(_D.join(_E, _E.c.seq == _D.c.event_seq))
                    .where(_D.c.status == "pending")
                )
            ).one()
            new, oldest_new = (
                await session.execute(
                    select(func.count(), func.min(_E.c.occurred_at_ms)).where(
                        _E.c.fanned_out.is_(False)
                    )
                )
            ).one()
            failed: dict[str, int] = {
                endpoint: int(count)
                for endpoint, count in await session.execute(
                    select(_D.c.endpoint, func.count())
                    .where(_D.c.status == "failed")
                    .group_by(_D.c.endpoint)
                )
            }
        oldest = min((t for t in (oldest_delivery, oldest_new) if t is not None), default=None)
        age = max(0.0, (_now_ms() - oldest) / 1000) if oldest is not None else 0.0
        return OutboxStats(depth=int(pending) + int(new), oldest_age_s=age, failed=failed)

    async def renewals_due(self, now: datetime, until: datetime) -> list[RenewalDue]:
        """Active subscriptions that renew (not canceling) with a period end in (now, until]."""
        s = Subscription.__table__
        async with self._transaction() as session:
            rows = await session.execute(
                select(s.c.id, s.c.account_id, s.c.plan_id, s.c.interval, s.c.current_period_end)
                .where(
                    s.c.status.in_(("active", "trialing")),
                    s.c.cancel_at_period_end.is_(False),
                    s.c.current_period_end > now,
                    s.c.current_period_end <= until,
                )
                .order_by(s.c.current_period_end)
            )
            return [RenewalDue(*r) for r in rows]


@dataclass(frozen=True, slots=True)
class RenewalDue:
    id: str
    account_id: str
    plan_id: str
    interval: str
    period_end: datetime
