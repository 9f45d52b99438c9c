"""`subscription.renewal_upcoming`: a periodic scan on every replica that writes one event per
subscription and period once the period's end is within the notice (dedup keys make the
replicas' scans agree)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from entitlements.events.types import renewal_upcoming
from entitlements.store.events_repository import EventsRepository
from entitlements.store.records import utcnow

__all__ = ["RenewalScan"]

log = logging.getLogger(__name__)

_STOP_GRACE_S = 10.0


class RenewalScan:
    def __init__(
        self, repository: EventsRepository, *, notice_days: float, interval_seconds: float
    ) -> None:
        self._repository = repository
        self._notice = timedelta(days=notice_days)
        self._notice_days = notice_days
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="renewal-scan")

    async def close(self) -> None:
        """Stop after the scan in flight: cancelling a query mid-way would strand its
        connection."""
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), _STOP_GRACE_S)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.scan()
            except Exception:
                log.exception("renewal scan failed; trying again at the next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def scan(self, now: datetime | None = None) -> int:
        """Write the events now due; returns how many were new."""
        now = now or utcnow()
        written = 0
        for sub in await self._repository.renewals_due(now, now + self._notice):
            event = renewal_upcoming(
                sub.account_id,
                sub.id,
                sub.plan_id,
                sub.interval,
                sub.period_end,
                self._notice_days,
                now=now,
            )
            written += await self._repository.append(event)
        return written
