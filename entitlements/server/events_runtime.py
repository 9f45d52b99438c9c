"""Outbound events as the server runs them: the dispatcher and the renewal scan."""

from __future__ import annotations

from dataclasses import dataclass

from entitlements.events.dashboard import render_events_section
from entitlements.events.dispatcher import Dispatcher
from entitlements.events.renewals import RenewalScan
from entitlements.store.events_repository import EventsRepository

__all__ = ["EventsRuntime"]


@dataclass
class EventsRuntime:
    repository: EventsRepository
    dispatcher: Dispatcher
    renewals: RenewalScan

    def start(self) -> None:
        # With no endpoint configured events wait in the outbox for the first one.
        if self.dispatcher.endpoints:
            self.dispatcher.start()
        self.renewals.start()

    async def admin_section(self) -> str:
        """The /admin page's section on outbound events."""
        stats = await self.repository.stats()
        failed = await self.repository.latest_failed(20)
        return render_events_section(stats, self.dispatcher.endpoints, failed)

    async def close(self) -> None:
        await self.renewals.close()
        await self.dispatcher.close()
