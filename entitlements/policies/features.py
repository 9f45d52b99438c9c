"""Feature rules: whether a plan has a feature, and which plan to upgrade to for it."""

from __future__ import annotations

from entitlements.policies.catalog import Catalog, Plan


def is_feature_allowed(catalog: Catalog, plan_id: str, feature: str) -> bool:
    """Whether `plan_id` includes `feature` (its own or inherited)."""
    plan = catalog.plan(plan_id)
    catalog.feature(feature)
    return feature in plan.features


def minimum_plan_for(catalog: Catalog, feature: str) -> Plan:
    """The lowest plan that includes `feature`."""
    return catalog.plan(catalog.feature(feature).minimum_plan_id)


def get_upgrade_path(catalog: Catalog, plan_id: str, feature: str) -> Plan | None:
    """The lowest plan above `plan_id` with `feature`; None if `plan_id` has it or no plan does."""
    plan = catalog.plan(plan_id)
    catalog.feature(feature)
    if feature in plan.features:
        return None
    for candidate in catalog.plans:
        if candidate.tier > plan.tier and feature in candidate.features:
            return candidate
    return None


def meets_minimum_plan(catalog: Catalog, plan_id: str, minimum_plan_id: str) -> bool:
    """Whether `plan_id` is `minimum_plan_id` or a higher tier."""
    plan = catalog.plan(plan_id)
    minimum = catalog.plan(minimum_plan_id, field="minimum_plan_id")
    return plan.tier >= minimum.tier
