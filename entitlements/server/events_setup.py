"""Wiring outbound events into the server: the dispatcher and the renewal scan on every replica
(started with the server, stopped at shutdown), their figures in /metrics and AdminService's
event RPCs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from entitlements.events.admin import EventsAdmin
from entitlements.events.dashboard import render_events_section
from entitlements.events.dispatcher import Dispatcher
from entitlements.events.metrics import register_dispatcher
from entitlements.events.renewals import RenewalScan
from entitlements.server.events_admin_servicer import EventsAdminMethods
from entitlements.store.events_repository import EventsRepository

if TYPE_CHECKING:
    from entitlements.config import Settings
    from entitlements.server.app import Deps

__all__ = ["EventsRuntime", "install_events"]


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


def install_events(settings: Settings, deps: Deps) -> EventsRuntime:
    repository = EventsRepository(deps.store.engine)
    runtime = EventsRuntime(
        repository,
        Dispatcher(repository, settings.events),
        RenewalScan(
            repository,
            notice_days=settings.events.renewal_notice_days,
            interval_seconds=settings.events.renewal_scan_interval_seconds,
        ),
    )
    admin = deps.servicers.get("AdminService")
    if isinstance(admin, EventsAdminMethods):
        admin.events_admin = EventsAdmin(repository, settings.events.endpoints)
    unregister = register_dispatcher(runtime.dispatcher)

    async def close() -> None:
        unregister()
        await runtime.close()

    deps.closers.append(close)
    return runtime
