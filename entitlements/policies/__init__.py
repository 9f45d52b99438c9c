"""Pure entitlement rules: the plan catalog, feature checks, limits, thresholds and overrides."""

from __future__ import annotations

from entitlements.policies.catalog import (
    DEFAULT_PLAN_ID,
    UNLIMITED,
    Catalog,
    FeatureInfo,
    LimitInfo,
    MetricInfo,
    Plan,
    default_catalog,
    load_catalog,
)
from entitlements.policies.effective import (
    FEATURE_NOT_IN_PLAN,
    GRANTED_BY_OVERRIDE,
    INCLUDED_IN_PLAN,
    REVOKED_BY_OVERRIDE,
    EffectiveEntitlements,
    FeatureDecision,
    resolve,
)
from entitlements.policies.features import (
    get_upgrade_path,
    is_feature_allowed,
    meets_minimum_plan,
    minimum_plan_for,
)
from entitlements.policies.overrides import Overrides, validate_overrides
from entitlements.policies.thresholds import (
    LimitCheck,
    UsageLevel,
    check_limit,
    crossed_levels,
    level_for,
)

__all__ = [
    "DEFAULT_PLAN_ID",
    "FEATURE_NOT_IN_PLAN",
    "GRANTED_BY_OVERRIDE",
    "INCLUDED_IN_PLAN",
    "REVOKED_BY_OVERRIDE",
    "UNLIMITED",
    "Catalog",
    "EffectiveEntitlements",
    "FeatureDecision",
    "FeatureInfo",
    "LimitCheck",
    "LimitInfo",
    "MetricInfo",
    "Overrides",
    "Plan",
    "UsageLevel",
    "check_limit",
    "crossed_levels",
    "default_catalog",
    "get_upgrade_path",
    "is_feature_allowed",
    "level_for",
    "load_catalog",
    "meets_minimum_plan",
    "minimum_plan_for",
    "resolve",
    "validate_overrides",
]
