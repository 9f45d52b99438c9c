"""`entitlements report`: the revenue dashboard in the terminal, from the database."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from entitlements.admin.dashboard import render_text
from entitlements.admin.metrics import RevenueMetrics
from entitlements.admin.service import AdminService
from entitlements.config import Settings
from entitlements.policies import default_catalog
from entitlements.service import EntitlementService
from entitlements.store.admin_repository import AdminStore
from entitlements.store.repository import Store
from entitlements.watch import WatchHub

__all__ = ["load_metrics", "report"]


async def load_metrics(
    settings: Settings, *, as_of: datetime | None = None, churn_window_days: int = 0
) -> RevenueMetrics:
    """The figures GetRevenueMetrics would answer, read from `settings.database_url`."""
    store = Store.open(settings.database_url)
    try:
        catalog = default_catalog()
        service = EntitlementService(
            store, catalog, WatchHub(), past_due_grace=settings.past_due_grace
        )
        admin = AdminService(
            AdminStore(store), service, catalog, past_due_grace=settings.past_due_grace
        )
        return await admin.revenue_metrics(as_of=as_of, churn_window_days=churn_window_days)
    finally:
        await store.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


async def report(
    settings: Settings,
    *,
    as_of: datetime | None = None,
    churn_window_days: int = 0,
    as_json: bool = False,
) -> str:
    """The report's text (a table with bar charts, or JSON)."""
    metrics = await load_metrics(settings, as_of=as_of, churn_window_days=churn_window_days)
    if as_json:
        return json.dumps(_jsonable(asdict(metrics)), indent=2)
    return render_text(metrics)
