"""Cache coherence across workers and replicas: poll the store's change feed.

Every revision bump writes a row to the change feed in the same transaction. Each process polls
the recent rows a few times a second; an account cached at an older revision, or watched, is
reloaded and pushed to its watchers. Rows are re-read with an overlap, because on PostgreSQL a
transaction can commit after a later one, so a row can become visible with an older timestamp;
handling a change twice is harmless (a reload at the same revision is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from entitlements.errors import EntitlementsError
from entitlements.service import EntitlementService
from entitlements.store.usage_repository import UsageRepository
from entitlements.watch import ThresholdCrossed

log = logging.getLogger(__name__)


class ChangeFeed:
    def __init__(
        self,
        service: EntitlementService,
        *,
        usage: UsageRepository | None = None,
        interval_seconds: float = 0.25,
        overlap_ms: int = 5_000,
        retention_ms: int = 10 * 60_000,
    ) -> None:
        self._service = service
        self._usage = usage
        self._interval = interval_seconds
        self._overlap = overlap_ms
        self._retention = retention_ms
        self._since_ms = int(time.time() * 1000)
        self._handled: dict[tuple[str, int], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self.applied = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll()
                if time.monotonic() - self._last_prune > 60:
                    self._last_prune = time.monotonic()
                    await self._service.store.prune_changes(
                        int(time.time() * 1000) - self._retention
                    )
            except EntitlementsError as exc:
                log.warning("change feed poll failed (will retry): %s", exc)
            except Exception:
                log.exception("change feed poll failed (will retry)")

    async def poll(self) -> int:
        """Apply the changes recorded since the last poll; returns how many were applied."""
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
        if self._usage is not None:
            await self._thresholds(polled_from_ms)
        horizon = self._since_ms - 2 * self._overlap
        if len(self._handled) > 10_000:
            self._handled = {k: t for k, t in self._handled.items() if t >= horizon}
        self.applied += applied
        return applied

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
