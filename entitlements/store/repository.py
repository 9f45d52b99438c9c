"""The store: reads and writes of account entitlement state, each in its own transaction."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import fields, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy import ColumnElement, case, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from entitlements.errors import AlreadyExists, InvalidArgument
from entitlements.events.transitions import subscription_events
from entitlements.store.change_feed import notify_change
from entitlements.store.engine import DEFAULT_DATABASE_URL, IMMEDIATE, create_engine
from entitlements.store.events_repository import append_event
from entitlements.store.failures import translate_errors
from entitlements.store.models import (
    Account,
    AccountOverride,
    EntitlementChange,
    OverrideAudit,
    Subscription,
)
from entitlements.store.records import (
    ENDED_STATUSES,
    AccountSnapshot,
    AuditRecord,
    OverrideKind,
    OverrideRecord,
    PaymentMethod,
    SubscriptionInterval,
    SubscriptionRecord,
    SubscriptionStatus,
    utcnow,
)
from entitlements.store.sessions import Sessions

__all__ = ["Store"]


def _now_ms() -> int:
    return int(time.time() * 1000)


# Bound parameters per IN (...) list: far below SQLite's and asyncpg's limits (32,766 / 32,767).
_CHUNK = 500

# Every SubscriptionRecord field is a column of the same name.
_SUBSCRIPTION_COLUMNS = tuple(f.name for f in fields(SubscriptionRecord))
# What a save may change in an existing row: not its identity, owner or creation time.
_SUBSCRIPTION_UPDATABLE = tuple(
    c for c in _SUBSCRIPTION_COLUMNS if c not in ("id", "account_id", "created_at")
)


class Store(Sessions):
    """Account entitlement state in SQLite or PostgreSQL.

    Every method runs in its own session and transaction, so a Store may be shared by concurrent
    tasks. Methods return frozen records, never ORM objects, and raise
    `entitlements.errors.Unavailable` when the database cannot be reached.
    """

    #: The grace a past_due subscription keeps its plan for, as `subscription.past_due`
    #: events report it (`grace_ends_at`); the server sets it from its settings.
    past_due_grace: timedelta = timedelta(days=7)

    @classmethod
    def open(cls, url: str = DEFAULT_DATABASE_URL) -> Store:
        """A Store on a new engine for `url` (see `normalize_url`); `close()` disposes it."""
        return cls(create_engine(url))

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ping(self) -> None:
        """Return if the database answers; raise Unavailable if not."""
        with translate_errors(self._engine.url):
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

    async def get_account_snapshot(
        self, account_id: str, *, now: datetime | None = None
    ) -> AccountSnapshot | None:
        """The account's revision, latest subscription and overrides unexpired at `now`
        (default: the current time); None if the account was never stored."""
        return (await self.get_account_snapshots([account_id], now=now)).get(account_id)

    async def get_account_snapshots(
        self, account_ids: Sequence[str], *, now: datetime | None = None
    ) -> dict[str, AccountSnapshot]:
        """`get_account_snapshot` for many accounts at once; unknown accounts are left out."""
        if now is None:
            now = utcnow()
        unique_ids = list(dict.fromkeys(account_ids))
        snapshots: dict[str, AccountSnapshot] = {}
        async with self._transaction() as session:
            for start in range(0, len(unique_ids), _CHUNK):
                chunk = unique_ids[start : start + _CHUNK]
                # The revision is read first: a PostgreSQL READ COMMITTED transaction may see
                # newer rows in later statements, and data newer than its revision is harmless
                # (the next revision refreshes it) while data older than it would stick in caches.
                rows = await session.execute(
                    select(Account.id, Account.revision).where(Account.id.in_(chunk))
                )
                revisions = {account_id: revision for account_id, revision in rows}
                if not revisions:
                    continue
                subscriptions = await self._latest_subscriptions(session, list(revisions))
                overrides = await self._unexpired_overrides(session, list(revisions), now)
                for account_id, revision in revisions.items():
                    snapshots[account_id] = AccountSnapshot(
                        account_id=account_id,
                        revision=revision,
                        subscription=subscriptions.get(account_id),
                        overrides=tuple(overrides.get(account_id, ())),
                    )
        return snapshots

    async def save_subscription(
        self, record: SubscriptionRecord, *, audit: AuditRecord | None = None
    ) -> int:
        """Insert the subscription or update it by id, and bump its account's revision (creating
        the account if needed) in the same transaction; return the new revision. `audit`, when
        given (an admin's change), is written in that transaction too, with the revision.

        On update `created_at` keeps its stored value; `updated_at` is always the store's clock.
        Raises AlreadyExists if the id belongs to another account or the Stripe subscription id
        to another subscription.

        Writes the `subscription.*` events of the change in the same transaction (manual
        subscriptions, crypto activations and revocations come through here).
        """
        now = utcnow()
        values = {name: getattr(record, name) for name in _SUBSCRIPTION_COLUMNS}
        values["updated_at"] = now
        try:
            async with self._transaction(write=True) as session:
                # The bump locks the account row first: saves of one account take turns, so
                # the row read below is the one this save replaces.
                revision = await self._bump_revision(session, record.account_id)
                row = await session.get(Subscription, record.id, with_for_update=True)
                old = _subscription_record(row) if row is not None else None
                insert = self._insert(Subscription).values(values)
                upsert = insert.on_conflict_do_update(
                    index_elements=[Subscription.id],
                    set_={name: insert.excluded[name] for name in _SUBSCRIPTION_UPDATABLE},
                    where=Subscription.account_id == insert.excluded.account_id,
                ).returning(Subscription.id)
                if (await session.execute(upsert)).first() is None:
                    raise AlreadyExists(
                        f"subscription {record.id!r} belongs to another account than "
                        f"{record.account_id!r}"
                    )
                for event in subscription_events(
                    old,
                    record,
                    ref=f"r{revision}",
                    past_due_grace=self.past_due_grace,
                    now=now,
                ):
                    await append_event(session, event)
                if audit is not None:
                    session.add(audit_row(audit, revision=revision))
        except IntegrityError as error:
            also = (
                f" or audit request_id {audit.request_id!r}" if audit and audit.request_id else ""
            )
            raise AlreadyExists(
                f"subscription {record.id!r} conflicts with a stored one "
                f"(stripe_subscription_id {record.stripe_subscription_id!r}{also})"
            ) from error
        return revision

    async def set_overrides(
        self,
        account_id: str,
        overrides: Sequence[OverrideRecord],
        *,
        actor: str,
        reason: str,
    ) -> int:
        """Replace the account's overrides with `overrides`, record who did it with the old and
        new set in `override_audit`, bump the revision and return it.

        An override given again with the same terms keeps its row (and its `created_by`,
        `created_at` and `reason`); the others are stamped with `actor`, now and `reason`.
        """
        _reject_duplicates(overrides)
        now = utcnow()
        async with self._transaction(write=True) as session:
            # Bumping first locks the account row, so concurrent replacements take turns and
            # each audit row's "old" is exactly what the previous one wrote.
            revision = await self._bump_revision(session, account_id)
            stored = list(
                await session.scalars(
                    select(AccountOverride)
                    .where(AccountOverride.account_id == account_id)
                    .order_by(AccountOverride.kind, AccountOverride.key)
                )
            )
            old = [_override_record(row) for row in stored]
            wanted = {o.identity: o for o in overrides}
            kept: list[OverrideRecord] = []
            for row, record in zip(stored, old, strict=True):
                again = wanted.get(record.identity)
                if again is not None and record.same_terms(again):
                    kept.append(record)
                    del wanted[record.identity]
                else:
                    await session.delete(row)
            await session.flush()  # deletes before inserts: (account, kind, key) is unique
            added = [
                replace(o, created_by=actor, created_at=now, reason=reason) for o in wanted.values()
            ]
            session.add_all(
                AccountOverride(
                    account_id=account_id,
                    kind=o.kind,
                    key=o.key,
                    value=o.value,
                    expires_at=o.expires_at,
                    created_by=actor,
                    created_at=now,
                    reason=reason,
                )
                for o in added
            )
            new = sorted([*kept, *added], key=lambda o: o.identity)
            session.add(
                OverrideAudit(
                    account_id=account_id,
                    actor=actor,
                    action="set_overrides",
                    details={
                        "reason": reason,
                        "revision": revision,
                        "old": [_override_json(o) for o in old],
                        "new": [_override_json(o) for o in new],
                    },
                    created_at=now,
                )
            )
        return revision

    async def touch_account(self, account_id: str) -> int:
        """Bump the account's revision (creating the account if needed) and return it."""
        async with self._transaction(write=True) as session:
            return await self._bump_revision(session, account_id)

    async def _bump_revision(self, session: AsyncSession, account_id: str) -> int:
        # One UPDATE ... SET revision = revision + 1 is atomic on both backends: PostgreSQL locks
        # the row until commit, SQLite has one writer at a time.
        create = (
            self._insert(Account)
            .values(id=account_id)
            .on_conflict_do_nothing(index_elements=[Account.id])
        )
        await session.execute(create)
        bump = (
            update(Account)
            .where(Account.id == account_id)
            .values(revision=Account.revision + 1)
            .returning(Account.revision)
            .execution_options(synchronize_session=False)
        )
        revision: int = (await session.execute(bump)).scalar_one()
        # The change feed other workers and replicas read to drop their cached copy; on
        # PostgreSQL they are woken when this transaction commits.
        await session.execute(
            insert(EntitlementChange).values(
                account_id=account_id, revision=revision, changed_at_ms=_now_ms()
            )
        )
        await notify_change(session)
        return revision

    async def changes_since(self, since_ms: int) -> list[tuple[str, int, int]]:
        """(account_id, revision, changed_at_ms) of the changes recorded at or after `since_ms`,
        oldest first."""
        with translate_errors(self._engine.url):
            async with self._engine.connect() as connection:
                rows = await connection.execute(
                    select(
                        EntitlementChange.account_id,
                        EntitlementChange.revision,
                        EntitlementChange.changed_at_ms,
                    )
                    .where(EntitlementChange.changed_at_ms >= since_ms)
                    .order_by(EntitlementChange.changed_at_ms)
                )
                return [(a, r, t) for a, r, t in rows]

    async def prune_changes(self, before_ms: int) -> int:
        """Forget change-feed rows older than `before_ms`."""
        with translate_errors(self._engine.url):
            async with self._engine.execution_options(**{IMMEDIATE: True}).begin() as connection:
                result = await connection.execute(
                    delete(EntitlementChange).where(EntitlementChange.changed_at_ms < before_ms)
                )
                return int(result.rowcount)

    async def recently_changed_accounts(self, limit: int) -> list[str]:
        """The accounts whose entitlements changed most recently, newest first (cache warm-up)."""
        with translate_errors(self._engine.url):
            async with self._engine.connect() as connection:
                rows = await connection.execute(
                    select(Account.id).order_by(Account.updated_at.desc()).limit(limit)
                )
                return [account_id for (account_id,) in rows]

    async def _latest_subscriptions(
        self, session: AsyncSession, account_ids: list[str]
    ) -> dict[str, SubscriptionRecord]:
        rank = (
            func.row_number()
            .over(
                partition_by=Subscription.account_id,
                order_by=(
                    Subscription.created_at.desc(),
                    # Stripe's `created` has one-second precision: of two subscriptions created
                    # in the same second, one that has ended is not the latest.
                    case((Subscription.status.in_(ENDED_STATUSES), 1), else_=0),
                    Subscription.updated_at.desc(),
                    Subscription.id.desc(),
                ),
            )
            .label("rank")
        )
        ranked = (
            select(Subscription, rank).where(Subscription.account_id.in_(account_ids)).subquery()
        )
        latest = aliased(Subscription, ranked)
        rows = await session.scalars(select(latest).where(ranked.c.rank == 1))
        return {row.account_id: _subscription_record(row) for row in rows}

    async def _unexpired_overrides(
        self, session: AsyncSession, account_ids: list[str], now: datetime
    ) -> dict[str, list[OverrideRecord]]:
        unexpired: ColumnElement[bool] = or_(
            AccountOverride.expires_at.is_(None), AccountOverride.expires_at > now
        )
        rows = await session.scalars(
            select(AccountOverride)
            .where(AccountOverride.account_id.in_(account_ids), unexpired)
            .order_by(AccountOverride.account_id, AccountOverride.kind, AccountOverride.key)
        )
        by_account: dict[str, list[OverrideRecord]] = {}
        for row in rows:
            by_account.setdefault(row.account_id, []).append(_override_record(row))
        return by_account


def _subscription_record(row: Subscription) -> SubscriptionRecord:
    return SubscriptionRecord(
        id=row.id,
        account_id=row.account_id,
        plan_id=row.plan_id,
        status=cast(SubscriptionStatus, row.status),
        interval=cast(SubscriptionInterval, row.interval),
        payment_method=cast(PaymentMethod, row.payment_method),
        user_id=row.user_id,
        stripe_customer_id=row.stripe_customer_id,
        stripe_subscription_id=row.stripe_subscription_id,
        stripe_price_id=row.stripe_price_id,
        current_period_start=row.current_period_start,
        current_period_end=row.current_period_end,
        cancel_at_period_end=row.cancel_at_period_end,
        canceled_at=row.canceled_at,
        ended_at=row.ended_at,
        trial_end=row.trial_end,
        past_due_since=row.past_due_since,
        price_cents=row.price_cents,
        currency=row.currency,
        source_updated_at=row.source_updated_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def audit_row(record: AuditRecord, *, revision: int | None = None) -> OverrideAudit:
    """The `override_audit` row of an entry (with the account's new revision in its details)."""
    details = dict(record.details)
    if revision is not None:
        details["revision"] = revision
    return OverrideAudit(
        account_id=record.account_id,
        actor=record.actor,
        action=record.action,
        details=details,
        request_id=record.request_id,
        created_at=record.created_at,
    )


def _override_record(row: AccountOverride) -> OverrideRecord:
    return OverrideRecord(
        kind=cast(OverrideKind, row.kind),
        key=row.key,
        value=row.value,
        expires_at=row.expires_at,
        created_by=row.created_by,
        created_at=row.created_at,
        reason=row.reason,
    )


def _override_json(record: OverrideRecord) -> dict[str, Any]:
    return {
        "kind": record.kind,
        "key": record.key,
        "value": record.value,
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "created_by": record.created_by,
        "created_at": record.created_at.isoformat() if record.created_at else None,
        "reason": record.reason,
    }


def _reject_duplicates(overrides: Iterable[OverrideRecord]) -> None:
    seen: set[tuple[str, str]] = set()
    for override in overrides:
        if override.identity in seen:
            kind, key = override.identity
            raise InvalidArgument("overrides", f"{kind} {key!r} is given more than once")
        seen.add(override.identity)
