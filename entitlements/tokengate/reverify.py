"""The periodic re-verification of granted channel accesses: a token that left the wallet
revokes the access (and publishes the change) within one interval, whatever the cache held.

Reads are fresh (the cache is bypassed). A chain that cannot be read revokes nothing: the
access stays as it was and is checked again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from entitlements.errors import EntitlementsError, Unavailable
from entitlements.store.records import utcnow
from entitlements.tokengate.service import TokenGate

__all__ = ["Reverifier", "SweepReport"]

log = logging.getLogger(__name__)

#: Challenges expired longer ago than this are deleted by the sweep.
CHALLENGE_RETENTION = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class SweepReport:
    checked: int
    revoked: int
    unavailable: int


class Reverifier:
    """Runs `sweep()` every `interval_seconds` in a background task (0 = never)."""

    def __init__(self, gate: TokenGate, interval_seconds: float, *, page_size: int = 500) -> None:
        self._gate = gate
        self._interval = interval_seconds
        self._page_size = page_size
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> SweepReport:
        checked = revoked = unavailable = 0
        after = 0
        while True:
            grants = await self._gate.store.granted_accesses(after_id=after, limit=self._page_size)
            if not grants:
                break
            for grant in grants:
                after = grant.id
                checked += 1
                try:
                    decision = await self._gate.recheck(grant)
                except Unavailable as exc:
                    unavailable += 1
                    log.warning("re-verification of channel %s deferred: %s", grant.channel_id, exc)
                    continue
                except EntitlementsError as exc:
                    log.warning("re-verification of channel %s failed: %s", grant.channel_id, exc)
                    continue
                if not decision.granted:
                    revoked += 1
        await self._gate.store.delete_expired_challenges(utcnow() - CHALLENGE_RETENTION)
        return SweepReport(checked=checked, revoked=revoked, unavailable=unavailable)

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="token-gate-reverify"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                report = await self.sweep()
                log.info(
                    "token access re-verified: %d checked, %d revoked, %d deferred",
                    report.checked,
                    report.revoked,
                    report.unavailable,
                )
            except Exception:
                log.exception("token access re-verification failed; retrying next interval")
