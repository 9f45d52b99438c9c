"""The audit log (`override_audit`) read back: one entry by its idempotency key, and pages of
entries newest first by (created_at, id), filtered by account, actor, action and time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select

from entitlements.store.models import OverrideAudit
from entitlements.store.records import AuditRecord
from entitlements.store.sessions import Sessions

__all__ = ["AuditFilter", "AuditPage", "AuditStore"]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    account_id: str | None = None
    actor: str | None = None
    action: str | None = None
    #: Entries at or after this time.
    since: datetime | None = None
    #: Entries before this time.
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditRecord]
    #: (created_at, id) of the last entry when more may follow, else None.
    last: tuple[datetime, int] | None


def _entry(row: OverrideAudit) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        account_id=row.account_id,
        actor=row.actor,
        action=row.action,
        details=dict(row.details or {}),
        request_id=row.request_id,
        created_at=row.created_at,
    )


class AuditStore(Sessions):
    async def by_request(self, request_id: str) -> AuditRecord | None:
        """The entry written with the idempotency key `request_id`, if any."""
        async with self._transaction() as session:
            row = await session.scalar(
                select(OverrideAudit).where(OverrideAudit.request_id == request_id)
            )
            return _entry(row) if row is not None else None

    async def page(
        self, filters: AuditFilter, *, limit: int, after: tuple[datetime, int] | None
    ) -> AuditPage:
        """Up to `limit` entries newest first, strictly after the keyset `after`; entries
        written later never shift a page already handed out."""
        conditions: list[ColumnElement[bool]] = []
        if filters.account_id is not None:
            conditions.append(OverrideAudit.account_id == filters.account_id)
        if filters.actor is not None:
            conditions.append(OverrideAudit.actor == filters.actor)
        if filters.action is not None:
            conditions.append(OverrideAudit.action == filters.action)
        if filters.since is not None:
            conditions.append(OverrideAudit.created_at >= filters.since)
        if filters.until is not None:
            conditions.append(OverrideAudit.created_at < filters.until)
        if after is not None:
            created_at, entry_id = after
            conditions.append(
                or_(
                    OverrideAudit.created_at < created_at,
                    and_(OverrideAudit.created_at == created_at, OverrideAudit.id < entry_id),
                )
            )
        query = (
            select(OverrideAudit)
            .where(*conditions)
            .order_by(OverrideAudit.created_at.desc(), OverrideAudit.id.desc())
            .limit(limit + 1)
        )
        async with self._transaction() as session:
            rows = list(await session.scalars(query))
        entries = [_entry(row) for row in rows[:limit]]
        last = None
        if len(rows) > limit and entries:
            last = (entries[-1].created_at, entries[-1].id)
        return AuditPage(entries=entries, last=last)
