"""The change feed's token-access rows, and the PostgreSQL channel that wakes every replica.

Account changes are written by `Store` with each revision bump; token-access changes here, by the
replica whose check found them. On PostgreSQL both send `NOTIFY entitlements_changes` in the
same transaction as their row, so listeners are woken exactly when the row becomes visible.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from entitlements.store.engine import IMMEDIATE
from entitlements.store.failures import translate_errors
from entitlements.store.models import TokenAccessChange
from entitlements.store.sessions import Sessions

__all__ = ["CHANGE_CHANNEL", "ChangeFeedStore", "TokenAccessChangeRow", "notify_change"]

#: The LISTEN/NOTIFY channel of the change feed (PostgreSQL only).
CHANGE_CHANNEL = "entitlements_changes"

_NOTIFY = text(f"NOTIFY {CHANGE_CHANNEL}")


async def notify_change(session: AsyncSession) -> None:
    """Wake the replicas' change feeds when the session's transaction commits (PostgreSQL; on
    SQLite the feed is polled)."""
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        await session.execute(_NOTIFY)


@dataclass(frozen=True, slots=True)
class TokenAccessChangeRow:
    id: int
    channel_id: str
    user_id: str
    wallet_addresses: tuple[str, ...]
    granted: bool
    unmet_requirement_ids: tuple[str, ...]
    changed_at_ms: int


class ChangeFeedStore(Sessions):
    """Token-access rows of the change feed (see the module docstring)."""

    async def add_token_access_change(
        self,
        *,
        channel_id: str,
        user_id: str,
        wallet_addresses: Sequence[str],
        granted: bool,
        unmet_requirement_ids: Sequence[str],
    ) -> TokenAccessChangeRow:
        """Record a token-access change for every replica to push; returns the stored row."""
        changed_at_ms = int(time.time() * 1000)
        async with self._transaction(write=True) as session:
            row_id: int = (
                await session.execute(
                    insert(TokenAccessChange)
                    .values(
                        channel_id=channel_id,
                        user_id=user_id,
                        wallet_addresses=list(wallet_addresses),
                        granted=granted,
                        unmet_requirement_ids=list(unmet_requirement_ids),
                        changed_at_ms=changed_at_ms,
                    )
                    .returning(TokenAccessChange.id)
                )
            ).scalar_one()
            await notify_change(session)
        return TokenAccessChangeRow(
            row_id,
            channel_id,
            user_id,
            tuple(wallet_addresses),
            granted,
            tuple(unmet_requirement_ids),
            changed_at_ms,
        )

    async def token_access_changes_since(self, since_ms: int) -> list[TokenAccessChangeRow]:
        """The token-access changes recorded at or after `since_ms`, oldest first."""
        with translate_errors(self._engine.url):
            async with self._engine.connect() as connection:
                rows = await connection.execute(
                    select(
                        TokenAccessChange.id,
                        TokenAccessChange.channel_id,
                        TokenAccessChange.user_id,
                        TokenAccessChange.wallet_addresses,
                        TokenAccessChange.granted,
                        TokenAccessChange.unmet_requirement_ids,
                        TokenAccessChange.changed_at_ms,
                    )
                    .where(TokenAccessChange.changed_at_ms >= since_ms)
                    .order_by(TokenAccessChange.changed_at_ms, TokenAccessChange.id)
                )
                return [
                    TokenAccessChangeRow(i, c, u, tuple(w), bool(g), tuple(m), t)
                    for i, c, u, w, g, m, t in rows
                ]

    async def prune_token_access_changes(self, before_ms: int) -> int:
        """Forget token-access rows older than `before_ms`."""
        with translate_errors(self._engine.url):
            async with self._engine.execution_options(**{IMMEDIATE: True}).begin() as connection:
                result = await connection.execute(
                    delete(TokenAccessChange).where(TokenAccessChange.changed_at_ms < before_ms)
                )
                return int(result.rowcount)
