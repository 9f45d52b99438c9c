"""SQL of the usage ledger: counters, idempotency keys and threshold records, applied in groups.

A group of operations is applied in ONE transaction: the counters it touches are locked (SQLite:
BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE, in key order so concurrent replicas never
deadlock), the keys it carries are looked up, the new totals are computed in memory, and then the
new key rows, the counters' new values and newly reached threshold levels are written. Holding
the counter locks makes the totals exact across replicas: another replica touching the same
counter waits for this transaction, and sees its keys once it proceeds.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from entitlements.events.types import Event, threshold_crossed
from entitlements.store.engine import IMMEDIATE, SQLITE_PRAGMAS, is_postgres
from entitlements.store.events_repository import append_event, append_event_sqlite
from entitlements.store.failures import translate_errors
from entitlements.store.models import UsageMetric, UsageThreshold
from entitlements.store.records import utcnow

__all__ = [
    "CounterKey",
    "GroupWrite",
    "KeyRecord",
    "ThresholdRecord",
    "UsageRepository",
]

# Row-value IN lists stay far below SQLite's and asyncpg's bound-parameter limits.
_CHUNK = 400

CounterKey = tuple[str, str, str]  # (account_id, metric, period)


class KeyRecord(NamedTuple):
    """A counted event's idempotency row."""

    account_id: str
    idempotency_key: str
    metric: str
    delta: int
    period: str
    total: int
    occurred_at_ms: int


@dataclass(frozen=True, slots=True)
class ThresholdRecord:
    account_id: str
    metric: str
    period: str
    level: int
    current: int
    limit: int


@dataclass(slots=True)
class GroupWrite:
    """What a group decided to write, filled in by the ledger's `decide` callback."""

    new_keys: list[KeyRecord] = field(default_factory=list)
    counters: dict[CounterKey, int] = field(default_factory=dict)
    thresholds: list[ThresholdRecord] = field(default_factory=list)


#: Given the locked counters' values and the stored key rows of the group's keys, decide what to
#: write. Called inside the transaction, possibly more than once if it has to be retried.
Decide = Callable[[dict[CounterKey, int], dict[tuple[str, str], KeyRecord]], GroupWrite]


class UsageRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{IMMEDIATE: True})
        self._postgres = is_postgres(engine)
        self._sql: _Sql = _PostgresSql() if self._postgres else _SqliteSql()
        self._pg = self._sql if isinstance(self._sql, _PostgresSql) else None
        self._sqlite_writer = (
            None if self._postgres else _SqliteGroupWriter(engine.url.database or "")
        )

    async def close(self) -> None:
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()

    async def apply_group(
        self,
        counters: Iterable[CounterKey],
        keys: Iterable[tuple[str, str]],
        decide: Decide,
    ) -> tuple[GroupWrite, list[ThresholdRecord]]:
        """Lock `counters`, read them and the stored `keys`, let `decide` compute the writes, and
        write them, all in one transaction. Returns the writes and the threshold records that
        were new (a level already recorded by anyone is left out)."""
        counter_keys = sorted(set(counters))
        key_list = list(set(keys))
        if self._sqlite_writer is not None:
            with translate_errors(self._engine.url):
                return await self._sqlite_writer.apply(counter_keys, key_list, decide)
        assert self._pg is not None
        pg = self._pg
        for attempt in range(5):
            try:
                with translate_errors(self._engine.url):
                    async with self._writer.begin() as conn:
                        values = await pg.lock_counters(conn, counter_keys)
                        stored = await pg.stored_keys(conn, key_list)
                        write = decide(values, stored)
                        received = int(time.time() * 1000)
                        if write.new_keys:
                            await pg.insert_keys(conn, write.new_keys, received)
                        if write.counters:
                            await pg.save_counters(conn, write.counters, utcnow())
                        fresh = await self._record_thresholds(conn, write.thresholds)
                        return write, fresh
            except Exception as exc:
                # A key was taken concurrently (by another replica): the next attempt sees it
                # among the stored keys and answers it as a duplicate, or as a reused key.
                if attempt == 4 or not _unique_violation(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _record_thresholds(  # PostgreSQL; the SQLite writer records its own
        self, conn: AsyncConnection, thresholds: list[ThresholdRecord]
    ) -> list[ThresholdRecord]:
        fresh: list[ThresholdRecord] = []
        for t in thresholds:
            result = await conn.execute(
                postgresql.insert(UsageThreshold)
                .values(
                    account_id=t.account_id,
                    metric=t.metric,
                    period=t.period,
                    level=t.level,
                    current=t.current,
                    limit_value=t.limit,
                    crossed_at=utcnow(),
                )
                .on_conflict_do_nothing()
                .returning(UsageThreshold.__table__.c.level)
            )
            if result.first() is not None:
                fresh.append(t)
                await append_event(conn, _crossed(t))  # the outbox, in the same transaction
        return fresh

    async def counters(self, account_id: str, periods: Sequence[str]) -> dict[tuple[str, str], int]:
        """The account's counters in `periods`, as (metric, period) -> value."""
        table = UsageMetric.__table__
        with translate_errors(self._engine.url):
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    select(table.c.metric, table.c.period, table.c.value).where(
                        table.c.account_id == account_id, table.c.period.in_(list(periods))
                    )
                )
                return {(m, p): v for m, p, v in rows}

    async def counter(self, key: CounterKey) -> int:
        table = UsageMetric.__table__
        with translate_errors(self._engine.url):
            async with self._engine.connect() as conn:
                value = await conn.scalar(
                    select(table.c.value).where(
                        table.c.account_id == key[0],
                        table.c.metric == key[1],
                        table.c.period == key[2],
                    )
                )
                return int(value or 0)

    async def prune_keys(self, older_than_ms: int, *, batch: int = 10_000) -> int:
        """Delete idempotency rows received before `older_than_ms`, a batch per transaction so
        writers wait little; returns how many."""
        removed = 0
        after: int | None = 0
        while after is not None:
            with translate_errors(self._engine.url):
                async with self._writer.begin() as conn:
                    n, after = await self._sql.prune(conn, older_than_ms, batch, after)
            removed += n
        return removed

    async def thresholds_since(self, since: datetime) -> list[ThresholdRecord]:
        """The threshold levels recorded at or after `since`, by any replica, oldest first."""
        table = UsageThreshold.__table__
        with translate_errors(self._engine.url):
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    select(
                        table.c.account_id,
                        table.c.metric,
                        table.c.period,
                        table.c.level,
                        table.c.current,
                        table.c.limit_value,
                    )
                    .where(table.c.crossed_at >= since)
                    .order_by(table.c.crossed_at)
                )
                return [ThresholdRecord(*r) for r in rows]


class _Sql:
    """Statements in each backend's fastest form. They are raw SQL on purpose: SQLAlchemy's
    compilation of thousand-row IN lists cost more than the database work, and SQLite plans
    row-value IN lists as scans (70 times slower than OR'ed keys)."""

    async def prune(
        self, conn: AsyncConnection, older_than_ms: int, batch: int, after: int
    ) -> tuple[int, int | None]:
        """One batch of pruning: the rows deleted, and where the next batch starts (None: done)."""
        raise NotImplementedError


class _SqliteSql(_Sql):
    # Read by the group writer, which holds the write lock (BEGIN IMMEDIATE), so plain reads
    # are consistent.

    @staticmethod
    @functools.cache
    def _select_counters(n: int) -> str:
        where = " OR ".join(["(account_id = ? AND metric = ? AND period = ?)"] * n)
        return f"SELECT account_id, metric, period, value FROM usage_metrics WHERE {where}"

    @staticmethod
    @functools.cache
    def _select_keys(n: int) -> str:
        where = " OR ".join(["(account_id = ? AND idempotency_key = ?)"] * n)
        return (
            "SELECT account_id, idempotency_key, metric, delta, period, total, occurred_at_ms "
            f"FROM usage_events WHERE {where}"
        )

    async def prune(
        self, conn: AsyncConnection, older_than_ms: int, batch: int, after: int
    ) -> tuple[int, int | None]:
        # No index on the receipt time here (0011): the rows are walked in rowid order, which
        # is receipt order (each group takes its receipt time under the write lock and SQLite
        # numbers new rows past the largest rowid), a window of `batch` rows at a time. Only
        # rows received before the cutoff are deleted, so a row out of order (the clock set
        # back) is never deleted early; the walk ends at a window with nothing to delete.
        row: Any = (
            await conn.exec_driver_sql(
                "SELECT min(rowid), max(rowid), count(*), sum(received_at_ms < ?) FROM"
                " (SELECT rowid, received_at_ms FROM usage_events WHERE rowid > ?"
                " ORDER BY rowid LIMIT ?)",
                (older_than_ms, after, batch),
            )
        ).one()
        first: int | None = row[0]
        last: int | None = row[1]
        rows: int = row[2]
        old: int | None = row[3]
        if not old:
            return 0, None
        result = await conn.exec_driver_sql(
            "DELETE FROM usage_events WHERE rowid BETWEEN ? AND ? AND received_at_ms < ?",
            (first, last, older_than_ms),
        )
        return int(result.rowcount), (last if rows == batch else None)


class _SqliteGroupWriter:
    """SQLite: a whole group as one synchronous transaction on a dedicated connection in one
    thread. Through aiosqlite and SQLAlchemy every statement cost a thread hop and a compile;
    here a group costs one hop, and the event loop is free while SQLite works and fsyncs.
    BEGIN IMMEDIATE takes the database's write lock, so the group is exact against every
    other writer (other workers, other processes) as on the async path."""

    def __init__(self, database: str) -> None:
        self._database = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def apply(
        self, counter_keys: list[CounterKey], keys: list[tuple[str, str]], decide: Decide
    ) -> tuple[GroupWrite, list[ThresholdRecord]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._apply, counter_keys, keys, decide)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._database, isolation_level=None, check_same_thread=False)
            for pragma in SQLITE_PRAGMAS:
                conn.execute(pragma)
            conn.execute("PRAGMA journal_mode=WAL")  # already so (persistent); made sure
            self._conn = conn
        return self._conn

    def _apply(
        self, counter_keys: list[CounterKey], keys: list[tuple[str, str]], decide: Decide
    ) -> tuple[GroupWrite, list[ThresholdRecord]]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            values: dict[CounterKey, int] = {}
            for start in range(0, len(counter_keys), _CHUNK):
                chunk = counter_keys[start : start + _CHUNK]
                sql = _SqliteSql._select_counters(len(chunk))
                for account_id, metric, period, value in conn.execute(
                    sql, list(itertools.chain.from_iterable(chunk))
                ):
                    values[(account_id, metric, period)] = value
            stored: dict[tuple[str, str], KeyRecord] = {}
            for start in range(0, len(keys), _CHUNK):
                chunk_keys = keys[start : start + _CHUNK]
                sql = _SqliteSql._select_keys(len(chunk_keys))
                for row in conn.execute(sql, list(itertools.chain.from_iterable(chunk_keys))):
                    stored[(row[0], row[1])] = KeyRecord(*row)
            write = decide(values, stored)
            received = int(time.time() * 1000)
            if write.new_keys:
                # The rows as they are (no copy per row): the group's one receipt time is a
                # literal of the statement (an int: nothing to escape), prepared once a group.
                conn.executemany(
                    "INSERT INTO usage_events (account_id, idempotency_key, metric, delta, period,"
                    f" total, occurred_at_ms, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?,"
                    f" {int(received)})",
                    write.new_keys,
                )
            stamp = _sqlite_stamp(utcnow())
            if write.counters:
                conn.executemany(
                    "INSERT INTO usage_metrics (account_id, metric, period, value, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, metric, period)"
                    " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    [(a, m, p, v, stamp) for (a, m, p), v in sorted(write.counters.items())],
                )
            fresh = []
            for t in write.thresholds:
                row = conn.execute(
                    "INSERT INTO usage_thresholds (account_id, metric, period, level, current,"
                    " limit_value, crossed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING RETURNING level",
                    (t.account_id, t.metric, t.period, t.level, t.current, t.limit, stamp),
                ).fetchone()
                if row is not None:
                    fresh.append(t)
                    append_event_sqlite(conn, _crossed(t))  # the outbox, in this transaction
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return write, fresh


def _unique_violation(exc: BaseException) -> bool:
    """A unique index refused a row: SQLAlchemy's IntegrityError, or asyncpg's own error from
    the COPY (SQLSTATE 23505)."""
    while exc is not None:
        if isinstance(exc, IntegrityError) or getattr(exc, "sqlstate", None) == "23505":
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def _crossed(t: ThresholdRecord) -> Event:
    return threshold_crossed(
        t.account_id, t.metric, t.period, t.level, t.current, t.limit, now=utcnow()
    )


def _sqlite_stamp(now: datetime) -> str:
    """The text SQLAlchemy's DateTime stores on SQLite (naive UTC)."""
    return now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


_EVENT_COLUMNS = (
    "account_id",
    "idempotency_key",
    "metric",
    "delta",
    "period",
    "total",
    "occurred_at_ms",
    "received_at_ms",
)


class _PostgresSql(_Sql):
    async def lock_counters(
        self, conn: AsyncConnection, keys: list[CounterKey]
    ) -> dict[CounterKey, int]:
        if not keys:
            return {}
        accounts, metrics, periods = (list(column) for column in zip(*keys, strict=True))
        # Every counter row must exist for FOR UPDATE to lock it; keys are sorted, so two
        # replicas lock in the same order and cannot deadlock.
        await conn.exec_driver_sql(
            "INSERT INTO usage_metrics (account_id, metric, period, value, updated_at)"
            " SELECT a, m, p, 0, now()"
            " FROM unnest($1::text[], $2::text[], $3::text[]) AS k(a, m, p)"
            " ORDER BY a, m, p ON CONFLICT DO NOTHING",
            (accounts, metrics, periods),
        )
        result: Any = await conn.exec_driver_sql(
            "SELECT u.account_id, u.metric, u.period, u.value FROM usage_metrics u"
            " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(a, m, p)"
            " ON u.account_id = k.a AND u.metric = k.m AND u.period = k.p"
            " ORDER BY u.account_id, u.metric, u.period FOR UPDATE OF u",
            (accounts, metrics, periods),
        )
        return {(a, m, p): v for a, m, p, v in result}

    async def stored_keys(
        self, conn: AsyncConnection, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], KeyRecord]:
        if not keys:
            return {}
        accounts, idempotency_keys = (list(column) for column in zip(*keys, strict=True))
        result: Any = await conn.exec_driver_sql(
            "SELECT e.account_id, e.idempotency_key, e.metric, e.delta, e.period, e.total,"
            " e.occurred_at_ms FROM usage_events e"
            " JOIN unnest($1::text[], $2::text[]) AS k(a, key)"
            " ON e.account_id = k.a AND e.idempotency_key = k.key",
            (accounts, idempotency_keys),
        )
        return {(row[0], row[1]): KeyRecord(*row) for row in result}

    async def insert_keys(
        self, conn: AsyncConnection, records: list[KeyRecord], received_ms: int
    ) -> None:
        """COPY (binary), in the group's transaction: per row, the cheapest way in for both
        sides (asyncpg encodes each row in C; PostgreSQL skips the executor). A key another
        replica took meanwhile fails the COPY with a unique violation, and the group is
        retried (`apply_group`), then seeing that key among the stored ones."""
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_records_to_table(
            "usage_events",
            columns=_EVENT_COLUMNS,
            records=[(*r, received_ms) for r in records],
        )

    async def save_counters(
        self, conn: AsyncConnection, counters: dict[CounterKey, int], now: datetime
    ) -> None:
        items = sorted(counters.items())
        await conn.exec_driver_sql(
            "UPDATE usage_metrics u SET value = k.v, updated_at = $5"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS k(a, m, p, v)"
            " WHERE u.account_id = k.a AND u.metric = k.m AND u.period = k.p",
            (
                [a for (a, _, _), _ in items],
                [m for (_, m, _), _ in items],
                [p for (_, _, p), _ in items],
                [v for _, v in items],
                now,
            ),
        )

    async def prune(
        self, conn: AsyncConnection, older_than_ms: int, batch: int, after: int
    ) -> tuple[int, int | None]:
        result = await conn.exec_driver_sql(
            "DELETE FROM usage_events WHERE ctid IN (SELECT ctid FROM usage_events"
            " WHERE received_at_ms < $1 LIMIT $2)",
            (older_than_ms, batch),
        )
        n = int(result.rowcount)
        return n, (0 if n == batch else None)
