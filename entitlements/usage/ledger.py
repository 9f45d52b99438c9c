"""The usage ledger: exact, idempotent, durable counting with group commit.

Every RPC hands its operations to one writer task and awaits them. The writer takes everything
queued while the previous transaction was committing and applies it in one transaction, so a
commit (and its fsync) is shared by many callers; a caller is answered only after the commit.
Counters' values are kept in memory after each commit, so CheckLimit answers without a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from entitlements.errors import AlreadyExists, EntitlementsError, InvalidArgument, Unavailable
from entitlements.policies import crossed_levels
from entitlements.store.failures import is_unstorable_value
from entitlements.store.usage_repository import (
    CounterKey,
    GroupWrite,
    KeyRecord,
    ThresholdRecord,
    UsageRepository,
)
from entitlements.usage.periods import current_period
from entitlements.watch import ThresholdCrossed, WatchHub

log = logging.getLogger(__name__)

#: Builds a NamedTuple without its Python-level __new__: three times cheaper, and the ledger
#: builds several per event.
_new = tuple.__new__

#: A counter never passes what a signed 64-bit column holds; an event that would is refused.
MAX_TOTAL = 2**63 - 1

APPLIED = "applied"
DUPLICATE = "duplicate"
REFUSED = "refused"


class Increment(NamedTuple):
    """One validated usage event, with the limit of its metric on the account's plan."""

    account_id: str
    metric: str
    delta: int
    key: str
    period: str
    occurred_at: int  # unix ms
    enforce: bool
    limit_key: str
    limit: int | None


@dataclass(frozen=True, slots=True)
class GaugeSet:
    """Set a gauge to an absolute value."""

    account_id: str
    metric: str
    value: int
    limit_key: str
    limit: int | None


class Outcome(NamedTuple):
    """What happened to one event: its status and the metric's total after it."""

    status: str
    total: int
    period: str


@dataclass(eq=False)
class _Pending:
    ops: Sequence[Increment] | GaugeSet
    future: asyncio.Future[list[Outcome]]
    size: int = 1


@dataclass(slots=True)
class _Decision:
    write: GroupWrite = field(default_factory=GroupWrite)
    results: dict[int, list[Outcome] | EntitlementsError] = field(default_factory=dict)
    limits: dict[CounterKey, tuple[str, int | None]] = field(default_factory=dict)
    applied: int = 0
    duplicate: int = 0


class UsageLedger:
    """Counts usage. `report` and `set_gauge` return once the change is durable."""

    def __init__(
        self,
        repository: UsageRepository,
        hub: WatchHub,
        *,
        max_group_events: int = 4000,
        counter_cache_size: int = 500_000,
        counter_ttl_seconds: float = 2.0,
        key_retention_seconds: float = 7 * 86400,
        prune_interval_seconds: float = 3600,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._repo = repository
        self._hub = hub
        self._max_group = max_group_events
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        # key -> (value, refresh after (monotonic), stored at (monotonic)). A plain dict of
        # immutable tuples, in the order they were last written: a read is one lookup that
        # changes nothing (safe from any thread: `peek` reads it from gRPC's handler threads while
        # the loop writes, no lock needed), and past the bound the longest-unwritten go.
        self._counters: dict[CounterKey, tuple[int, float, float]] = {}
        self._counter_cache_size = counter_cache_size
        self._loop: asyncio.AbstractEventLoop | None = None
        # Counters whose refresh a handler thread asked of the loop (set.add and discard are
        # atomic; a race asks twice, which `_refresh_soon` ignores).
        self._refresh_asked: set[CounterKey] = set()
        self._refreshing: dict[CounterKey, asyncio.Task[int]] = {}
        self._counter_ttl = counter_ttl_seconds
        self._retention = key_retention_seconds
        self._prune_interval = prune_interval_seconds
        self._clock = clock
        self._writer: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.commits = 0
        self.events_applied = 0
        self.events_duplicate = 0

    @property
    def key_retention_seconds(self) -> float:
        return self._retention

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
            self._pruner = asyncio.get_running_loop().create_task(self._prune_loop())

    async def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        await self._queue.join()
        for task in (self._pruner, self._writer, *self._refreshing.values()):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._writer = self._pruner = None
        await self._repo.close()

    async def report(self, events: Sequence[Increment]) -> list[Outcome]:
        """Count a batch of events; all or nothing (a reused key with another payload fails the
        whole batch with AlreadyExists)."""
        return await self._submit(_Pending(events, self._future(), size=len(events)))

    async def set_gauge(self, op: GaugeSet) -> Outcome:
        return (await self._submit(_Pending(op, self._future())))[0]

    async def current(self, key: CounterKey) -> int:
        """A counter's value, from memory. The first read of a counter waits for the database
        (concurrent first reads share one query); after that a value older than the TTL is
        still answered at once while one background read refreshes it, so the hot path never
        waits for the database (and keeps answering while it is down)."""
        cached = self._counter(key)
        if cached is not None:
            if time.monotonic() >= cached[1] and key not in self._refreshing:
                self._refreshing[key] = asyncio.get_running_loop().create_task(
                    self._refresh(key, time.monotonic())
                )
            return cached[0]
        loading = self._refreshing.get(key)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(self._refresh(key, time.monotonic()))
            self._refreshing[key] = loading
        return await asyncio.shield(loading)

    async def _refresh(self, key: CounterKey, started: float) -> int:
        try:
            value = await self._repo.counter(key)
        except EntitlementsError:
            cached = self._counter(key)
            if cached is None:
                raise
            return cached[0]  # keep the last value while the database is away
        finally:
            self._refreshing.pop(key, None)
        cached = self._counter(key)
        if cached is not None and cached[2] > started:
            return cached[0]  # this replica wrote it since: that value is newer
        self._remember(key, value)
        return value

    async def counters(self, account_id: str, period: str) -> dict[tuple[str, str], int]:
        """The account's monthly counters of `period` and its gauges, fresh from the database."""
        values = await self._repo.counters(account_id, [period, ""])
        for (metric, metric_period), value in values.items():
            self._remember((account_id, metric, metric_period), value)
        return values

    def peek(self, key: CounterKey) -> int | None:
        """`current` without waiting, from any thread: the value in memory, or None when the
        counter was never read. A value past its TTL is answered too (as `current` does) and
        its background refresh is asked of the loop."""
        cached = self._counter(key)
        if cached is None:
            return None
        loop = self._loop
        if (
            time.monotonic() >= cached[1]
            and loop is not None
            and key not in self._refreshing
            and key not in self._refresh_asked  # asked once until the loop takes it up
        ):
            self._refresh_asked.add(key)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to refresh
                loop.call_soon_threadsafe(self._refresh_soon, key)
        return cached[0]

    def _refresh_soon(self, key: CounterKey) -> None:
        self._refresh_asked.discard(key)
        cached = self._counter(key)
        if key not in self._refreshing and cached is not None and time.monotonic() >= cached[1]:
            self._refreshing[key] = asyncio.get_running_loop().create_task(
                self._refresh(key, time.monotonic())
            )

    def _counter(self, key: CounterKey) -> tuple[int, float, float] | None:
        return self._counters.get(key)  # one dict lookup: atomic, from any thread

    def _remember(self, key: CounterKey, value: int) -> None:
        now = time.monotonic()
        counters = self._counters
        counters.pop(key, None)  # re-inserted last
        counters[key] = (value, now + self._counter_ttl, now)
        if len(counters) > self._counter_cache_size:
            del counters[next(iter(counters))]

    def _future(self) -> asyncio.Future[list[Outcome]]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, pending: _Pending) -> list[Outcome]:
        if self._writer is None:
            raise RuntimeError("UsageLedger.start() was not called")
        self._queue.put_nowait(pending)
        return await pending.future

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            group = [first]
            size = first.size
            while size < self._max_group and not self._queue.empty():
                nxt = self._queue.get_nowait()
                group.append(nxt)
                size += nxt.size
            try:
                await self._commit(group)
            except Exception as exc:  # never leave a caller waiting
                log.exception("usage group of %d operations failed", len(group))
                _fail(group, exc)
            finally:
                for _ in group:
                    self._queue.task_done()

    async def _commit(self, group: list[_Pending], *, retry: bool = False) -> None:
        """Apply `group` in one transaction. If it fails for something one member sent (a
        value the database refuses), only that member's caller must see it: the group is
        retried in halves, recursively, so the others commit and the culprit fails alone
        (about 2 log2(n) transactions for one culprit among n). A failed transaction wrote
        nothing, so a retried member is counted once. A database that is away fails every
        member at once: each would fail alike, and UNAVAILABLE is retried by its caller."""
        try:
            done = await self._transact(group)
        except Unavailable as exc:
            _fail(group, exc)
            return
        except Exception as exc:
            if len(group) > 1:
                if not retry:
                    log.warning(
                        "usage group of %d operations failed (%s); retrying it in halves so "
                        "that only the operations that fail are refused",
                        len(group),
                        _summary(exc),
                    )
                middle = len(group) // 2
                await self._commit(group[:middle], retry=True)
                await self._commit(group[middle:], retry=True)
                return
            _fail(group, self._culprit_error(group[0], exc))
            return
        self._settle(group, *done)

    @staticmethod
    def _culprit_error(pending: _Pending, exc: Exception) -> Exception:
        """The error one operation that fails on its own is answered with."""
        if not is_unstorable_value(exc):
            log.error("usage operation failed on its own", exc_info=exc)
            return exc
        log.warning("the database refused a value of a usage operation: %s", _summary(exc))
        field = "value" if isinstance(pending.ops, GaugeSet) else "events"
        return InvalidArgument(
            field,
            "holds a value the database cannot store (a character or number out of its "
            "range); nothing of this request was written",
        )

    async def _transact(
        self, group: list[_Pending]
    ) -> tuple[_Decision, GroupWrite, list[ThresholdRecord]]:
        counters: set[CounterKey] = set()
        keys: set[tuple[str, str]] = set()
        for pending in group:
            if isinstance(pending.ops, GaugeSet):
                op = pending.ops
                counters.add((op.account_id, op.metric, ""))
            else:
                ops = pending.ops
                counters.update({(ev[0], ev[1], ev[4]) for ev in ops})
                keys.update({(ev[0], ev[3]) for ev in ops})
        decision = _Decision()

        def decide(
            values: dict[CounterKey, int], stored: dict[tuple[str, str], KeyRecord]
        ) -> GroupWrite:
            nonlocal decision
            decision = self._decide(group, values, stored)
            return decision.write

        write, fresh = await self._repo.apply_group(counters, keys, decide)
        return decision, write, fresh

    def _settle(
        self,
        group: list[_Pending],
        decision: _Decision,
        write: GroupWrite,
        fresh: list[ThresholdRecord],
    ) -> None:
        """After the commit: remember the counters, answer the callers, publish crossings."""
        self.commits += 1
        for key, value in write.counters.items():
            self._remember(key, value)
        for index, pending in enumerate(group):
            result = decision.results[index]
            # A caller that went away (its call was cancelled) cancelled its future; the
            # others are answered all the same.
            answer = not pending.future.done()
            if isinstance(result, EntitlementsError):
                if answer:
                    pending.future.set_exception(result)
            else:
                if answer:
                    pending.future.set_result(result)
        self.events_applied += decision.applied
        self.events_duplicate += decision.duplicate
        for t in fresh:
            limit_key, _ = decision.limits[(t.account_id, t.metric, t.period)]
            self._hub.publish(
                ThresholdCrossed(
                    account_id=t.account_id,
                    metric=t.metric,
                    limit_key=limit_key,
                    period=t.period,
                    level=t.level,
                    current=t.current,
                    limit=t.limit,
                )
            )

    def _decide(
        self,
        group: list[_Pending],
        values: dict[CounterKey, int],
        stored: dict[tuple[str, str], KeyRecord],
    ) -> _Decision:
        decision = _Decision()
        current = dict(values)
        seen = dict(stored)
        touched: dict[CounterKey, tuple[str, int | None]] = {}
        seen_get, current_get, touched_get = seen.get, current.get, touched.get
        new_keys = decision.write.new_keys
        add_key = new_keys.append
        for index, pending in enumerate(group):
            if isinstance(pending.ops, GaugeSet):
                op = pending.ops
                ck = (op.account_id, op.metric, "")
                current[ck] = op.value
                touched[ck] = (op.limit_key, op.limit)
                decision.results[index] = [Outcome(APPLIED, op.value, "")]
                decision.applied += 1
                continue
            # Apply the batch tentatively; a reused key with another payload undoes the whole
            # batch (it is all or nothing): `saved` keeps each counter's state from before the
            # batch, taken when the batch first touches it. The loop is the ingest hot path:
            # tuples are unpacked once and methods bound to locals.
            outcomes: list[Outcome] = []
            out = outcomes.append
            saved: dict[CounterKey, tuple[int | None, tuple[str, int | None] | None]] = {}
            keys_mark = len(new_keys)
            conflict: AlreadyExists | None = None
            duplicate = 0
            for i, ev in enumerate(pending.ops):
                account_id, metric, delta, key, period, occurred_at, enforce, limit_key, limit = ev
                identity = (account_id, key)
                record = seen_get(identity)
                if record is not None:
                    if record[2] != metric or record[3] != delta or record[4] != period:
                        conflict = _reused_key_error(i, ev, record)
                        break
                    out(_new(Outcome, (DUPLICATE, record[5], record[4])))
                    duplicate += 1
                    continue
                ck = (account_id, metric, period)
                before = current_get(ck)
                total = (before or 0) + delta
                if (enforce and limit is not None and total > limit) or total > MAX_TOTAL:
                    out(_new(Outcome, (REFUSED, total - delta, period)))
                    continue
                if ck not in saved:
                    saved[ck] = (before, touched_get(ck))
                current[ck] = total
                touched[ck] = (limit_key, limit)
                record = _new(
                    KeyRecord, (account_id, key, metric, delta, period, total, occurred_at)
                )
                seen[identity] = record
                add_key(record)
                out(_new(Outcome, (APPLIED, total, period)))
            if conflict is not None:
                for record in new_keys[keys_mark:]:
                    del seen[(record[0], record[1])]
                for ck, (before, was_touched) in saved.items():
                    if before is None:
                        del current[ck]
                    else:
                        current[ck] = before
                    if was_touched is None:
                        touched.pop(ck, None)
                    else:
                        touched[ck] = was_touched
                del new_keys[keys_mark:]
                decision.results[index] = conflict
                continue
            decision.applied += len(new_keys) - keys_mark
            decision.duplicate += duplicate
            decision.results[index] = outcomes
        month = current_period(self._clock())
        for ck, (limit_key, limit) in touched.items():
            after = current[ck]
            decision.write.counters[ck] = after
            decision.limits[ck] = (limit_key, limit)
            before = values.get(ck, 0)
            if limit is None or after <= before:
                continue
            for level in crossed_levels(before, after, limit):
                account_id, metric, period = ck
                decision.write.thresholds.append(
                    ThresholdRecord(account_id, metric, period or month, int(level), after, limit)
                )
                if not period:
                    decision.limits[(account_id, metric, month)] = (limit_key, limit)
        return decision

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval)
            await self.prune()

    async def prune(self) -> int:
        """Forget idempotency keys older than the retention window."""
        cutoff = int((self._clock().timestamp() - self._retention) * 1000)
        try:
            removed = await self._repo.prune_keys(cutoff)
        except EntitlementsError as exc:
            log.warning("pruning usage keys failed: %s", exc)
            return 0
        if removed:
            log.info("pruned %d usage idempotency keys older than the retention window", removed)
        return removed


def _fail(group: list[_Pending], exc: Exception) -> None:
    for pending in group:
        if not pending.future.done():
            pending.future.set_exception(exc)


def _summary(exc: BaseException) -> str:
    """An error in one line, without the statement and parameters SQLAlchemy appends."""
    orig = getattr(exc, "orig", None)
    shown = orig if isinstance(orig, BaseException) else exc
    return f"{type(shown).__name__}: {str(shown).splitlines()[0] if str(shown) else ''}"


def _reused_key_error(index: int, ev: Increment, known: KeyRecord) -> AlreadyExists:
    return AlreadyExists(
        f"events[{index}].idempotency_key: {ev.key!r} was already used for account "
        f"{ev.account_id!r} with another event ({known.metric} +{known.delta} in "
        f"{known.period or 'the gauge'}); use a new key for a new event",
        reason="ERROR_REASON_IDEMPOTENCY_KEY_REUSED",
    )
