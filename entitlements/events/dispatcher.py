"""The dispatcher: a task on every replica that fans new events out to their endpoints, claims
due deliveries and POSTs them, signed, retrying with backoff until delivered or failed.

At least once: a delivery is marked delivered only after the receiver answered 2xx, so a crash
between the two sends it again, with the same `webhook-id` (the event id) for the receiver to
drop the duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Sequence

import aiohttp

from entitlements.events.endpoints import Endpoint
from entitlements.events.retry import CircuitBreaker
from entitlements.events.settings import EventSettings
from entitlements.events.signing import signed_headers
from entitlements.store.events_repository import (
    ClaimedDelivery,
    EventsRepository,
    OutboxStats,
    Outcome,
)

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

_FAN_OUT_BATCH = 500
_STATS_EVERY_S = 5.0
_PRUNE_EVERY_S = 3600.0


class Dispatcher:
    def __init__(
        self,
        repository: EventsRepository,
        settings: EventSettings,
        *,
        endpoints: Sequence[Endpoint] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._repository = repository
        self._settings = settings
        self._endpoints = tuple(settings.endpoints if endpoints is None else endpoints)
        self._backoff = settings.backoff
        self._breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_seconds)
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        #: Failed attempts by endpoint, since start (this replica).
        self.attempt_failures: dict[str, int] = {e.name: 0 for e in self._endpoints}
        self.stats: OutboxStats | None = None
        self._stats_at = -math.inf
        self._pruned_at = -math.inf

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def breaker_open(self, endpoint: str) -> bool:
        return self._breaker.is_open(endpoint, time.monotonic())

    def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="event-dispatcher")

    async def close(self) -> None:
        """Stop after the round in flight (its sends get their deadline to finish)."""
        if self._task is not None:
            self._stopping.set()
            grace = max((e.timeout_s for e in self._endpoints), default=0.0) + 1.0
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                sent = await self.run_once()
            except Exception:
                log.exception("event dispatch failed; trying again")
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), self._settings.poll_interval_seconds
                    )

    async def run_once(self) -> int:
        """One round: fan out new events, send what is due. Returns the attempts made."""
        if time.monotonic() - self._stats_at >= _STATS_EVERY_S:
            self.stats = await self._repository.stats()
            self._stats_at = time.monotonic()
        if time.monotonic() - self._pruned_at >= _PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            cutoff_ms = int((time.time() - self._settings.retention_seconds) * 1000)
            await self._repository.prune(cutoff_ms)
        subscribed = [(e.name, e.event_types) for e in self._endpoints]
        while await self._repository.fan_out(subscribed, _FAN_OUT_BATCH) == _FAN_OUT_BATCH:
            pass
        rounds = await asyncio.gather(*(self._endpoint_round(e) for e in self._endpoints))
        return sum(rounds)

    async def _endpoint_round(self, endpoint: Endpoint) -> int:
        now = time.monotonic()
        if not self._breaker.allows(endpoint.name, now):
            return 0
        limit = 1 if self._breaker.half_open(endpoint.name) else self._settings.batch_size
        lease_ms = int((endpoint.timeout_s + self._settings.lease_margin_seconds) * 1000)
        claimed = await self._repository.claim(
            endpoint.name, limit=limit, lease_ms=lease_ms, ordered=endpoint.ordered
        )
        if not claimed:
            return 0
        errors = await asyncio.gather(*(self._post(endpoint, d) for d in claimed))
        outcomes: list[Outcome] = []
        for delivery, error in zip(claimed, errors, strict=True):
            self._breaker.record(endpoint.name, error is None, time.monotonic())
            outcomes.append(self._outcome(endpoint, delivery, error))
        # One transaction for the batch: one commit (fsync) rather than one per delivery.
        await self._repository.record(outcomes)
        return len(claimed)

    def _outcome(self, endpoint: Endpoint, delivery: ClaimedDelivery, error: str | None) -> Outcome:
        if error is None:
            return Outcome(delivery.id, "delivered")
        self.attempt_failures[endpoint.name] = self.attempt_failures.get(endpoint.name, 0) + 1
        age_s = time.time() - delivery.occurred_at_ms / 1000
        if self._backoff.gives_up(age_s):
            log.warning(
                "event %s to %s failed for good after %d attempts: %s",
                delivery.event_id,
                endpoint.name,
                delivery.attempts,
                error,
            )
            return Outcome(delivery.id, "failed", error=error)
        delay = self._backoff.delay_s(delivery.attempts, self._rng)
        return Outcome(delivery.id, "retry", int((time.time() + delay) * 1000), error)

    async def _post(self, endpoint: Endpoint, delivery: ClaimedDelivery) -> str | None:
        """None when the receiver took it (2xx), else why not."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = signed_headers(endpoint.key, delivery.event_id, int(time.time()), delivery.body)
        try:
            async with self._http.post(
                endpoint.url,
                data=delivery.body.encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=endpoint.timeout_s),
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"timeout after {endpoint.timeout_s:g}s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"
