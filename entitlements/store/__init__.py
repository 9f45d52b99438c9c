"""Storage: SQLAlchemy models, the `Store` repository and the alembic migrations."""

from __future__ import annotations

from entitlements.store.engine import DEFAULT_DATABASE_URL, create_engine, normalize_url
from entitlements.store.records import AccountSnapshot, OverrideRecord, SubscriptionRecord
from entitlements.store.repository import Store

__all__ = [
    "DEFAULT_DATABASE_URL",
    "AccountSnapshot",
    "OverrideRecord",
    "Store",
    "SubscriptionRecord",
    "create_engine",
    "normalize_url",
]
