"""Crypto payments as the server runs them: the domain, the chain readers and one watcher per
configured network."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from adapters.chains import ChainMismatch, ChainReaders
from entitlements.crypto import CryptoPayments, PaymentWatcher
from entitlements.errors import FailedPrecondition

__all__ = ["CryptoRuntime"]

log = logging.getLogger(__name__)


@dataclass
class CryptoRuntime:
    payments: CryptoPayments
    readers: ChainReaders
    watchers: list[PaymentWatcher] = field(default_factory=list)

    async def start(self) -> None:
        """Refuse a node of the wrong chain (ChainMismatch), then start every network's
        watcher (background tasks); an unreachable node is checked again on use."""
        if self.watchers:
            try:
                await self.readers.connect()
            except ChainMismatch as exc:
                raise FailedPrecondition(f"refusing to start: {exc}") from exc
        for watcher in self.watchers:
            watcher.start()
        if self.watchers:
            log.info("crypto payments: watching %s", ", ".join(w.network for w in self.watchers))

    async def close(self) -> None:
        for watcher in self.watchers:
            await watcher.stop()
        await self.readers.close()
