"""Admin analytics and operations: revenue metrics, the subscription listing, overrides."""

from __future__ import annotations

from entitlements.admin.metrics import RevenueMetrics, compute_metrics
from entitlements.admin.pagination import PageFilter
from entitlements.admin.service import AdminService, LimitRequest, OverridesRequest

__all__ = [
    "AdminService",
    "LimitRequest",
    "OverridesRequest",
    "PageFilter",
    "RevenueMetrics",
    "compute_metrics",
]
