"""Cache coherence across workers and replicas: the store's change feed, read when woken.

Every revision bump writes a row to the change feed in the same transaction, and so does every
token-access change a replica finds. Each process reads the recent rows when woken and at least
every `interval_seconds` (the poll: SQLite's only way, and PostgreSQL's backstop for a lost
notification); on PostgreSQL a `NOTIFY` sent with each row wakes it at once. An account cached at
an older revision, or watched, is reloaded and pushed to its watchers; a token-access change is
pushed to the channel's watchers. Rows are re-read with an overlap, because on PostgreSQL a
transaction can commit after a later one, so a row can become visible with an older timestamp;
handling a change twice is harmless (a reload at the same revision is skipped, a token-access row
is pushed once by its id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from entitlements.errors import EntitlementsError
from entitlements.service import EntitlementService
from entitlements.store.change_feed import ChangeFeedStore
from entitlements.store.listen import ChangeListener
from entitlements.store.usage_repository import UsageRepository
from entitlements.watch import ThresholdCrossed, TokenAccessChanged

log = logging.getLogger(__name__)

TokenSink = Callable[[TokenAccessChanged], None]


class ChangeFeed:
    def __init__(
        self,
        service: EntitlementService,
        *,
        usage: UsageRepository | None = None,
        interval_seconds: float = 0.25,
        listen: bool = True,
        overlap_ms: int = 5_000,
        retention_ms: int = 10 * 60_000,
    ) -> None:
        self._service = service
        self._usage = usage
        engine = service.store.engine
        self._tokens = ChangeFeedStore(engine)
        self._interval = interval_seconds
        self._overlap = overlap_ms
        self._retention = retention_ms
        self._since_ms = int(time.time() * 1000)
        self._handled: dict[tuple[str, int], int] = {}
        self._handled_tokens: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_prune = 0.0
        #: Where token-access changes go (WatchEntitlements subscribers of the channel, and the
        #: token gate's in-process listeners once token gating is installed).
        self.token_sink: TokenSink = service.hub.publish
        #: On PostgreSQL: the LISTEN connection that wakes this feed (None on SQLite, or off).
        self.listener: ChangeListener | None = (
            ChangeListener(engine.url, self.wake)
            if listen and engine.dialect.name == "postgresql"
            else None
        )
        self.applied = 0
        self.polls = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="change-feed")
            if self.listener is not None:
                self.listener.start()

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Read the feed now (a notification arrived) rather than at the next poll."""
        self._wake.set()

    async def announce_token_access(self, event: TokenAccessChanged) -> None:
        """A token-access change found here: record it for the other replicas, push it here."""
        try:
            row = await self._tokens.add_token_access_change(
                channel_id=event.channel_id,
                user_id=event.user_id,
                wallet_addresses=event.wallet_addresses,
                granted=event.granted,
                unmet_requirement_ids=event.unmet_requirement_ids,
            )
        except EntitlementsError as exc:
            log.warning("token access change not shared with other replicas: %s", exc)
        else:
            if row.id in self._handled_tokens:
                return  # a poll that ran meanwhile already pushed it
            self._handled_tokens[row.id] = row.changed_at_ms
        self.token_sink(event)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.poll()
                if time.monotonic() - self._last_prune > 60:
                    self._last_prune = time.monotonic()
                    before = int(time.time() * 1000) - self._retention
                    await self._service.store.prune_changes(before)
                    await self._tokens.prune_token_access_changes(before)
            except EntitlementsError as exc:
                log.warning("change feed poll failed (will retry): %s", exc)
            except Exception:
                log.exception("change feed poll failed (will retry)")

    async def poll(self) -> int:
        """Apply the changes recorded since the last poll; returns how many were applied."""
        self.polls += 1
        polled_from_ms = self._since_ms - self._overlap
        rows = await self._service.store.changes_since(polled_from_ms)
        applied = 0
        cache, hub = self._service.cache, self._service.hub
        for account_id, revision, changed_at_ms in rows:
            if (account_id, revision) in self._handled:
                continue
            self._handled[(account_id, revision)] = changed_at_ms
            self._since_ms = max(self._since_ms, changed_at_ms)
            known = cache.known_revision(account_id)
            if (known is not None and known < revision) or (
                known is None and hub.watched(account_id)
            ):
                await self._service.changed(account_id)
                applied += 1
        applied += await self._token_access(polled_from_ms)
        if self._usage is not None:
            await self._thresholds(polled_from_ms)
        horizon = self._since_ms - 2 * self._overlap
        if len(self._handled) > 10_000:
            self._handled = {k: t for k, t in self._handled.items() if t >= horizon}
        if len(self._handled_tokens) > 10_000:
            self._handled_tokens = {k: t for k, t in self._handled_tokens.items() if t >= horizon}
        self.applied += applied
        return applied

    async def _token_access(self, since_ms: int) -> int:
        """Token-access changes other replicas found reach this one's watchers too."""
        pushed = 0
        for row in await self._tokens.token_access_changes_since(since_ms):
            if row.id in self._handled_tokens:
                continue
            self._handled_tokens[row.id] = row.changed_at_ms
            self._since_ms = max(self._since_ms, row.changed_at_ms)
            self.token_sink(
                TokenAccessChanged(
                    channel_id=row.channel_id,
                    user_id=row.user_id,
                    wallet_addresses=row.wallet_addresses,
                    granted=row.granted,
                    unmet_requirement_ids=row.unmet_requirement_ids,
                )
            )
            pushed += 1
        return pushed

    async def _thresholds(self, since_ms: int) -> None:
        """Threshold levels recorded by any replica reach this one's watchers too (the hub
        drops the ones already reported)."""
        assert self._usage is not None
        metrics = self._service.catalog.metrics
        since = datetime.fromtimestamp(since_ms / 1000, UTC)
        for t in await self._usage.thresholds_since(since):
            info = metrics.get(t.metric)
            self._service.hub.publish(
                ThresholdCrossed(
                    account_id=t.account_id,
                    metric=t.metric,
                    limit_key=info.limit_key if info else "",
                    period=t.period,
                    level=t.level,
                    current=t.current,
                    limit=t.limit,
                )
            )
