"""`UsageReporter` (a thread) and `AsyncUsageReporter` (a task): buffered, merged, exactly-once
usage reporting.

Increments are merged per (account, metric, month) in the caller's process. When a merged event
is sealed into a batch it gets ONE idempotency key; the batch is sent until the server has it,
and every retry resends the same events with the same keys, so the server counts each exactly
once however often the network fails. Nothing is dropped silently: a full buffer makes `add()`
wait (sync) or raise `BufferFull` (async); an event the server rejects as invalid is logged and
kept in `failed`; events still unsent when `close()` gives up are raised as `UndeliveredUsage`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from nchat.entitlements.client._exceptions import (
    AlreadyExists,
    BufferFull,
    EntitlementsError,
    InvalidArgument,
    ReporterClosed,
    ReporterError,
    Unavailable,
)
from nchat.entitlements.client._requests import UsageEvent
from nchat.entitlements.client._retry import RetryPolicy

if TYPE_CHECKING:
    from nchat.entitlements.client._async import AsyncEntitlementsClient
    from nchat.entitlements.client._sync import EntitlementsClient

__all__ = ["AsyncUsageReporter", "FailedUsage", "UndeliveredUsage", "UsageReporter"]

log = logging.getLogger("nchat.entitlements.client.usage")

_EVENT_INDEX = re.compile(r"^events\[(\d+)\]")
_BACKOFF = RetryPolicy(max_attempts=1, initial_backoff=0.05, max_backoff=2.0)

_Key = tuple[str, str, str]  # (account_id, metric, "YYYY-MM")


@dataclass(frozen=True, slots=True)
class FailedUsage:
    """An event the server refused as invalid (unknown metric, bad account id, ...)."""

    event: UsageEvent
    error: EntitlementsError


class UndeliveredUsage(ReporterError):
    """`close()` ran out of time: `events` (with their idempotency keys) were not confirmed.

    Sending them again later, with the same keys, cannot double count.
    """

    def __init__(self, events: list[UsageEvent]) -> None:
        super().__init__(f"{len(events)} usage events were not delivered")
        self.events = events


class _Buffer:
    """Open merge buckets and the sealed batch in flight; the caller holds `lock`."""

    def __init__(self, max_buffered: int) -> None:
        self.lock = threading.Lock()
        self.max_buffered = max_buffered
        self.open: dict[_Key, tuple[int, float]] = {}  # key -> (sum, last add, epoch s)
        self.oldest: float | None = None  # monotonic time of the oldest open bucket
        self.in_flight = 0
        self.added = 0

    def room(self, key: _Key) -> bool:
        return key in self.open or len(self.open) + self.in_flight < self.max_buffered

    def put(self, key: _Key, delta: int, now: float) -> None:
        total, _ = self.open.get(key, (0, now))
        self.open[key] = (total + delta, now)
        self.added += delta
        if self.oldest is None:
            self.oldest = time.monotonic()

    def seal(self, limit: int) -> list[UsageEvent]:
        """Up to `limit` merged events, each with a fresh idempotency key, out of the buffer."""
        keys = list(self.open)[:limit]
        batch = []
        for key in keys:
            total, last = self.open.pop(key)
            account_id, metric, _period = key
            batch.append(
                UsageEvent(
                    account_id=account_id,
                    metric=metric,
                    delta=total,
                    idempotency_key=f"ucr-{uuid.uuid4().hex}",
                    occurred_at=datetime.fromtimestamp(last, UTC),
                )
            )
        self.in_flight += len(batch)
        self.oldest = time.monotonic() if self.open else None
        return batch

    def due(self, max_batch_size: int, max_delay: float) -> bool:
        if not self.open:
            return False
        if len(self.open) >= max_batch_size:
            return True
        return self.oldest is not None and time.monotonic() - self.oldest >= max_delay


def _key(account_id: str, metric: str, delta: int, now: float) -> _Key:
    if delta < 0:
        raise ValueError(f"delta must be zero or more, got {delta}")
    if not account_id or not metric:
        raise ValueError("account_id and metric are required")
    period = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
    return (account_id, metric, period)


def _bad_index(error: EntitlementsError, size: int) -> int | None:
    """The index of the event a batch-level INVALID_ARGUMENT/ALREADY_EXISTS names, if any."""
    field = getattr(error, "field", "") or error.metadata.get("field", "")
    match = _EVENT_INDEX.match(field)
    if match is None:
        return None
    index = int(match.group(1))
    return index if index < size else None


class UsageReporter:
    """Buffers `add()`s and reports them in the background through an `EntitlementsClient`.

    - Merged per (account, metric, UTC month); a batch of at most `max_batch_size` events is
      sent when that many are open or the oldest has waited `max_delay` seconds.
    - The buffer holds at most `max_buffered` merged events (open + in flight). When it is full,
      `add()` BLOCKS until there is room, up to `add_timeout` seconds, then raises `BufferFull`
      (nothing added). Adding to an already open (account, metric, month) never waits.
    - UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried with backoff forever
      (until `close()`'s timeout), resending the same keys: never double counted, never lost.
    - `close()` (also run at interpreter exit) flushes; events it cannot deliver within
      `close_timeout` are raised as `UndeliveredUsage` (and logged at exit).
    """

    def __init__(
        self,
        client: EntitlementsClient,
        *,
        max_batch_size: int = 500,
        max_delay: float = 1.0,
        max_buffered: int = 100_000,
        add_timeout: float | None = 5.0,
        close_timeout: float = 10.0,
        backoff: RetryPolicy = _BACKOFF,
        on_failure: Callable[[FailedUsage], None] | None = None,
    ) -> None:
        if not 1 <= max_batch_size <= 1000:
            raise ValueError("max_batch_size must be 1..1000 (the server's batch limit)")
        self._client = client
        self._max_batch_size = max_batch_size
        self._max_delay = max_delay
        self._add_timeout = add_timeout
        self._close_timeout = close_timeout
        self._backoff = backoff
        self._on_failure = on_failure
        self._buffer = _Buffer(max_buffered)
        self._cond = threading.Condition(self._buffer.lock)
        self._closing = False
        self._closed = False
        self._flush_requested = 0
        self._deadline: float | None = None  # monotonic: give up retrying after this (closing)
        self._undelivered: list[UsageEvent] = []
        self.failed: list[FailedUsage] = []
        self.delivered_events = 0
        #: Batches sent again (same keys) after UNAVAILABLE or DEADLINE_EXCEEDED.
        self.retries = 0
        self._thread = threading.Thread(target=self._run, name="usage-reporter", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    def add(self, account_id: str, metric: str, delta: int = 1) -> None:
        """Count `delta` more of `metric` for `account_id` (blocks while the buffer is full)."""
        now = time.time()
        key = _key(account_id, metric, delta, now)
        with self._cond:
            if self._closing:
                raise ReporterClosed("add() after close()")
            if not self._buffer.room(key) and not self._cond.wait_for(
                lambda: self._closing or self._buffer.room(key), self._add_timeout
            ):
                raise BufferFull(
                    f"{self._buffer.max_buffered} usage events buffered and unsent "
                    f"after {self._add_timeout} s"
                )
            if self._closing:
                raise ReporterClosed("add() after close()")
            first = not self._buffer.open
            self._buffer.put(key, delta, now)
            if first or len(self._buffer.open) >= self._max_batch_size:
                self._cond.notify_all()

    def pending(self) -> int:
        """Merged events not yet confirmed by the server (open and in flight)."""
        with self._cond:
            return len(self._buffer.open) + self._buffer.in_flight

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything added so far and wait for it; False if `timeout` passed first."""
        with self._cond:
            self._flush_requested += 1
            self._cond.notify_all()
            done = self._cond.wait_for(
                lambda: not self._buffer.open and not self._buffer.in_flight, timeout
            )
            self._flush_requested -= 1
            return done

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop; raises `UndeliveredUsage` for what could not be sent in time."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            wait = self._close_timeout if timeout is None else timeout
            self._deadline = time.monotonic() + wait
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            self._closed = True
        atexit.unregister(self._at_exit)
        if self._undelivered:
            raise UndeliveredUsage(list(self._undelivered))

    def __enter__(self) -> UsageReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _at_exit(self) -> None:
        try:
            self.close()
        except UndeliveredUsage as exc:
            log.error(
                "usage reporter: %d events not delivered at exit: %s", len(exc.events), exc.events
            )

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        buffer = self._buffer
        while True:
            with self._cond:
                while True:
                    if self._closing and not buffer.open:
                        self._cond.notify_all()
                        return
                    if buffer.open and (
                        self._closing
                        or self._flush_requested
                        or buffer.due(self._max_batch_size, self._max_delay)
                    ):
                        break
                    wait = None
                    if buffer.oldest is not None:  # wake when the oldest open event is due
                        wait = max(0.0, buffer.oldest + self._max_delay - time.monotonic())
                    self._cond.wait(wait)
                batch = buffer.seal(self._max_batch_size)
            delivered = self._send(batch)
            with self._cond:
                buffer.in_flight -= len(batch)
                self.delivered_events += delivered
                self._cond.notify_all()

    def _give_up(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _send(self, batch: list[UsageEvent]) -> int:
        """Deliver `batch`, retrying with the same keys; the number of events confirmed."""
        attempt = 0
        while batch:
            try:
                self._client.report_usage(batch)
                return len(batch)
            except Unavailable as exc:
                attempt += 1
                self.retries += 1
                if self._give_up():
                    self._hold(batch)
                    return 0
                log.warning("usage report failed (%s), retrying with the same keys", exc.code.name)
                self._pause(self._backoff.backoff(attempt))
            except (InvalidArgument, AlreadyExists) as exc:
                batch = self._drop_bad(batch, exc)
            except Exception as exc:  # e.g. the token lost its scope: keep, retry slowly
                attempt += 1
                log.error("usage report failed (%r); keeping the events", exc)
                if self._give_up():
                    self._hold(batch)
                    return 0
                self._pause(self._backoff.ceiling(attempt))
        return 0

    def _pause(self, seconds: float) -> None:
        with self._cond:
            deadline = self._deadline
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline - time.monotonic()))
        time.sleep(seconds)

    def _hold(self, batch: list[UsageEvent]) -> None:
        with self._cond:
            self._undelivered.extend(batch)

    def _drop_bad(self, batch: list[UsageEvent], error: EntitlementsError) -> list[UsageEvent]:
        index = _bad_index(error, len(batch))
        bad = [batch[index]] if index is not None else batch
        for event in bad:
            failure = FailedUsage(event, error)
            self.failed.append(failure)
            log.error("usage event refused by the server and not counted: %s (%s)", event, error)
            if self._on_failure is not None:
                self._on_failure(failure)
        return [e for i, e in enumerate(batch) if i != index] if index is not None else []


class AsyncUsageReporter:
    """The asyncio `UsageReporter`: same merging, keys and retries, on an
    `AsyncEntitlementsClient`, sending from a task. `add()` never blocks the loop: when the
    buffer is full it raises `BufferFull` at once. Close it (`await close()` or `async with`):
    interpreter exit cannot run the loop, so an unclosed reporter only logs what it loses.
    """

    def __init__(
        self,
        client: AsyncEntitlementsClient,
        *,
        max_batch_size: int = 500,
        max_delay: float = 1.0,
        max_buffered: int = 100_000,
        close_timeout: float = 10.0,
        backoff: RetryPolicy = _BACKOFF,
        on_failure: Callable[[FailedUsage], None] | None = None,
    ) -> None:
        if not 1 <= max_batch_size <= 1000:
            raise ValueError("max_batch_size must be 1..1000 (the server's batch limit)")
        self._client = client
        self._max_batch_size = max_batch_size
        self._max_delay = max_delay
        self._close_timeout = close_timeout
        self._backoff = backoff
        self._on_failure = on_failure
        self._buffer = _Buffer(max_buffered)
        self._wake = asyncio.Event()
        self._flush_requested = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._deadline: float | None = None
        self._undelivered: list[UsageEvent] = []
        self.failed: list[FailedUsage] = []
        self.delivered_events = 0
        #: Batches sent again (same keys) after UNAVAILABLE or DEADLINE_EXCEEDED.
        self.retries = 0
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-reporter")
        atexit.register(self._at_exit)

    def add(self, account_id: str, metric: str, delta: int = 1) -> None:
        """Count `delta` more of `metric` for `account_id`; `BufferFull` when there is no room."""
        now = time.time()
        key = _key(account_id, metric, delta, now)
        if self._closing:
            raise ReporterClosed("add() after close()")
        with self._buffer.lock:
            if not self._buffer.room(key):
                raise BufferFull(f"{self._buffer.max_buffered} usage events buffered and unsent")
            first = not self._buffer.open
            self._buffer.put(key, delta, now)
            full = len(self._buffer.open) >= self._max_batch_size
        self._idle.clear()
        if first or full:
            self._wake.set()  # the task sleeps without a deadline while nothing is open

    def pending(self) -> int:
        with self._buffer.lock:
            return len(self._buffer.open) + self._buffer.in_flight

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything added so far and wait for it; False if `timeout` passed first."""
        self._flush_requested += 1
        try:
            async with asyncio.timeout(timeout):
                while self.pending():
                    self._idle.clear()
                    self._wake.set()
                    await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            self._flush_requested -= 1
        return True

    async def close(self, timeout: float | None = None) -> None:
        """Flush and stop; raises `UndeliveredUsage` for what could not be sent in time."""
        if self._closing:
            await asyncio.shield(self._task)
            return
        self._closing = True
        wait = self._close_timeout if timeout is None else timeout
        self._deadline = time.monotonic() + wait
        self._wake.set()
        await self._task
        atexit.unregister(self._at_exit)
        if self._undelivered:
            raise UndeliveredUsage(list(self._undelivered))

    async def __aenter__(self) -> AsyncUsageReporter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _at_exit(self) -> None:
        lost = self.pending()
        if lost:
            log.error("async usage reporter not closed: %d merged events not delivered", lost)

    async def _run(self) -> None:
        buffer = self._buffer
        while True:
            with buffer.lock:
                due = buffer.due(self._max_batch_size, self._max_delay)
                wait = (
                    max(0.0, buffer.oldest + self._max_delay - time.monotonic())
                    if buffer.oldest is not None
                    else None
                )
                has_open = bool(buffer.open)
            if not has_open:
                self._idle.set()
                if self._closing:
                    return
            if not (has_open and (due or self._closing or self._flush_requested)):
                # No await between reading the buffer and clearing: add() runs on this loop
                # too, so no wake-up can fall in between.
                self._wake.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            self._wake.clear()
            with buffer.lock:
                batch = buffer.seal(self._max_batch_size)
            delivered = await self._send(batch)
            with buffer.lock:
                buffer.in_flight -= len(batch)
            self.delivered_events += delivered

    def _give_up(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    async def _pause(self, seconds: float) -> None:
        if self._deadline is not None:
            seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
        await asyncio.sleep(seconds)

    async def _send(self, batch: list[UsageEvent]) -> int:
        attempt = 0
        while batch:
            try:
                await self._client.report_usage(batch)
                return len(batch)
            except Unavailable as exc:
                attempt += 1
                self.retries += 1
                if self._give_up():
                    self._undelivered.extend(batch)
                    return 0
                log.warning("usage report failed (%s), retrying with the same keys", exc.code.name)
                await self._pause(self._backoff.backoff(attempt))
            except (InvalidArgument, AlreadyExists) as exc:
                index = _bad_index(exc, len(batch))
                bad = [batch[index]] if index is not None else batch
                for event in bad:
                    failure = FailedUsage(event, exc)
                    self.failed.append(failure)
                    log.error(
                        "usage event refused by the server and not counted: %s (%s)", event, exc
                    )
                    if self._on_failure is not None:
                        self._on_failure(failure)
                batch = [e for i, e in enumerate(batch) if i != index] if index is not None else []
            except Exception as exc:  # e.g. the token lost its scope: keep, retry slowly
                attempt += 1
                log.error("usage report failed (%r); keeping the events", exc)
                if self._give_up():
                    self._undelivered.extend(batch)
                    return 0
                await self._pause(self._backoff.ceiling(attempt))
        return 0
