"""The audit log, readable: every admin change (overrides, manual subscriptions and invoices,
resolved crypto funds) a page at a time, newest first, with filters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from entitlements.admin.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_token,
    encode_token,
)
from entitlements.admin.sales import MANUAL_ACTIONS
from entitlements.errors import InvalidArgument
from entitlements.store.audit_repository import AuditFilter, AuditStore
from entitlements.store.records import AuditRecord

__all__ = ["AUDIT_ACTIONS", "AuditLog", "AuditQuery"]

#: Every action the audit log holds (`AuditEntry.action`).
AUDIT_ACTIONS = ("set_overrides", "resolve_crypto_funds", *MANUAL_ACTIONS)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    account_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def digest(self) -> str:
        text = json.dumps(
            [self.account_id, self.actor, self.action, _iso(self.since), _iso(self.until)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class AuditLog:
    def __init__(self, store: AuditStore) -> None:
        self._store = store

    async def list(
        self, query: AuditQuery, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[AuditRecord], str]:
        """A page of entries newest first, and the next page's token ("" on the last)."""
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        if query.action is not None and query.action not in AUDIT_ACTIONS:
            raise InvalidArgument(
                "action", f"unknown action {query.action!r}; one of {', '.join(AUDIT_ACTIONS)}"
            )
        if query.since is not None and query.until is not None and query.until <= query.since:
            raise InvalidArgument("until", "must be after since")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = None
        if page_token:
            at, last_id = decode_token(
                page_token,
                query,
                listing="ListAuditEntries",
                names="account_id, actor, action, since, until",
            )
            if not last_id.isdigit():
                raise InvalidArgument("page_token", "is not a token returned by ListAuditEntries")
            after = (at, int(last_id))
        page = await self._store.page(
            AuditFilter(
                account_id=query.account_id,
                actor=query.actor,
                action=query.action,
                since=query.since,
                until=query.until,
            ),
            limit=size,
            after=after,
        )
        token = ""
        if page.last is not None:
            token = encode_token((page.last[0], str(page.last[1])), query)
        return page.entries, token
