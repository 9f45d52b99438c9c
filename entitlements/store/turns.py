"""Per-subscription turns: one fetch-and-write of a Stripe subscription at a time, across tasks,
worker processes and replicas sharing the database.

PostgreSQL: a transaction holding `pg_advisory_xact_lock` on a hash of the subscription id (the
turn's writes go in that same transaction, so the lock is released by their commit). SQLite: an
exclusive `flock` on one of `STRIPES` lock files beside the database file (`<db>.locks/`), which
every process opening that file shares; the kernel drops it if the process dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

__all__ = ["STRIPES", "FileTurns", "LocalTurns", "advisory_key"]

#: Lock files per SQLite database: subscriptions hashing to the same one take turns together.
STRIPES = 64
#: How often a turn held by another process is tried again.
_POLL_SECONDS = 0.002


def _digest(subscription_id: str) -> bytes:
    return hashlib.sha256(f"stripe-subscription:{subscription_id}".encode()).digest()


def advisory_key(subscription_id: str) -> int:
    """The PostgreSQL advisory lock key (a signed 64-bit integer) of a subscription."""
    return int.from_bytes(_digest(subscription_id)[:8], "big", signed=True)


def _stripe(subscription_id: str) -> int:
    return int.from_bytes(_digest(subscription_id)[8:12], "big") % STRIPES


class LocalTurns:
    """Turns among the tasks of this process (one asyncio lock per stripe)."""

    def __init__(self) -> None:
        self._locks = [asyncio.Lock() for _ in range(STRIPES)]

    @asynccontextmanager
    async def hold(self, subscription_id: str) -> AsyncIterator[int]:
        async with self._locks[_stripe(subscription_id)]:
            yield _stripe(subscription_id)


class FileTurns(LocalTurns):
    """Turns among every process using the SQLite file at `database`.

    `flock` locks belong to an open file description: this object's own descriptors conflict
    with any other process's (or another engine's in this process); its tasks take turns on the
    asyncio lock first. Descriptors are opened lazily and again after a fork, so forked workers
    never share one.
    """

    def __init__(self, database: str) -> None:
        super().__init__()
        self._dir = Path(f"{database}.locks")
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    @asynccontextmanager
    async def hold(self, subscription_id: str) -> AsyncIterator[int]:
        async with super().hold(subscription_id) as stripe:
            fd = self._fd(stripe)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(_POLL_SECONDS)
            try:
                yield stripe
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _fd(self, stripe: int) -> int:
        if os.getpid() != self._pid:
            self._fds = {}
            self._pid = os.getpid()
        fd = self._fds.get(stripe)
        if fd is None:
            self._dir.mkdir(exist_ok=True)
            fd = os.open(self._dir / f"{stripe:02d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._fds[stripe] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
