"""LISTEN on the change feed's PostgreSQL channel over a dedicated connection, reconnecting.

A notification only wakes the caller (who then reads the feed); it carries no data, so one that
is lost costs latency, never a change: the feed's poll is the backstop. After every (re)connect
the caller is woken too, since notifications sent while nobody listened are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

from entitlements.store.change_feed import CHANGE_CHANNEL
from entitlements.store.engine import safe_url

__all__ = ["ChangeListener"]

log = logging.getLogger(__name__)


class ChangeListener:
    """Calls `on_wake` for every notification on the change channel (and after connecting)."""

    def __init__(
        self,
        url: str | URL,
        on_wake: Callable[[], None],
        *,
        channel: str = CHANGE_CHANNEL,
        health_check_seconds: float = 10.0,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        parsed = make_url(url)
        self._dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._where = safe_url(parsed)
        self._on_wake = on_wake
        self._channel = channel
        self._health_check = health_check_seconds
        self._max_backoff = max_backoff_seconds
        self._task: asyncio.Task[None] | None = None
        #: True while a connection is listening.
        self.listening = False
        #: Notifications received (for tests and metrics).
        self.notifications = 0
        self.connects = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="change-feed-listen"
            )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _notified(self, *_: Any) -> None:
        self.notifications += 1
        self._on_wake()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning(
                    "change feed: cannot LISTEN on %s (%s); polling only, retrying in %.1f s",
                    self._where,
                    type(exc).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = 0.1
            try:
                await self._listen(connection)
            except Exception as exc:  # whatever broke the connection, listen again
                log.warning("change feed: LISTEN connection lost (%r); reconnecting", exc)
            finally:
                self.listening = False
                connection.terminate()

    async def _listen(self, connection: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        await connection.add_listener(self._channel, self._notified)
        self.listening = True
        self.connects += 1
        self._on_wake()  # whatever was sent while nobody listened is read now
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), self._health_check)
            except TimeoutError:
                # A link cut without a reset leaves the socket open and silent: ask.
                await asyncio.wait_for(connection.fetchval("SELECT 1"), self._health_check)
