"""Wiring outbound events into the server: the dispatcher and the renewal scan on every replica
(started with the server, stopped at shutdown), their figures in /metrics and AdminService's
event RPCs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from entitlements.events.admin import EventsAdmin
from entitlements.events.dispatcher import Dispatcher
from entitlements.events.metrics import register_dispatcher
from entitlements.events.renewals import RenewalScan
from entitlements.server.events_admin_servicer import EventsAdminMethods
from entitlements.server.events_runtime import EventsRuntime
from entitlements.store.events_repository import EventsRepository

if TYPE_CHECKING:
    from entitlements.config import Settings
    from entitlements.server.deps import Deps

__all__ = ["install_events"]


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
