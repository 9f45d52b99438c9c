"""What an account may do: its plan's features and limits with its overrides applied.

Built for the hot path: every feature's decision is computed once, and without overrides the
whole `EffectiveEntitlements` of a plan is shared, so a check is a dictionary lookup.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from entitlements.errors import UnknownFeature, UnknownLimit, UnknownPlan
from entitlements.policies import thresholds
from entitlements.policies.catalog import Catalog, Plan
from entitlements.policies.features import get_upgrade_path
from entitlements.policies.overrides import Overrides, validate_overrides

#: FeatureDecision.reason values: stable codes callers may branch on.
INCLUDED_IN_PLAN: Final = "INCLUDED_IN_PLAN"
GRANTED_BY_OVERRIDE: Final = "GRANTED_BY_OVERRIDE"
REVOKED_BY_OVERRIDE: Final = "REVOKED_BY_OVERRIDE"
FEATURE_NOT_IN_PLAN: Final = "FEATURE_NOT_IN_PLAN"

_NO_OVERRIDES: Final = Overrides()


@dataclass(frozen=True, slots=True)
class FeatureDecision:
    """The answer to "may this account use this feature?".

    `upgrade_plan_id` is the lowest plan that would allow it: empty when allowed, when no plan
    has it, or when an override revoked it (no plan change brings it back).
    """

    allowed: bool
    plan_id: str
    upgrade_plan_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class EffectiveEntitlements:
    """An account's plan, effective features and limits (None = unlimited), from `resolve`."""

    plan: Plan
    features: frozenset[str]
    limits: Mapping[str, int | None]
    overrides: Overrides
    #: Every catalog feature's decision, precomputed.
    decisions: Mapping[str, FeatureDecision] = field(repr=False, compare=False)

    def __hash__(self) -> int:
        return hash((self.plan, self.features, self.overrides))

    def can_use(self, feature: str) -> FeatureDecision:
        """Whether the account may use `feature`; UnknownFeature if the catalog has no such key."""
        try:
            return self.decisions[feature]
        except KeyError:
            raise UnknownFeature("feature", feature) from None

    def check_limit(self, limit_key: str, current: int) -> thresholds.LimitCheck:
        """Judge `current` against the account's `limit_key`; UnknownLimit if there is none."""
        try:
            limit = self.limits[limit_key]
        except KeyError:
            raise UnknownLimit("limit", limit_key) from None
        return thresholds.check_limit(limit, current)


def resolve(
    catalog: Catalog, plan_id: str, overrides: Overrides | None = None
) -> EffectiveEntitlements:
    """The entitlements of an account on `plan_id` with `overrides` (validated first)."""
    plain = _plan_entitlements(catalog).get(plan_id)
    if plain is None:
        raise UnknownPlan("plan_id", plan_id)
    if overrides is None or overrides.is_empty:
        return plain

    return _resolve_overridden(catalog, plain, overrides)


@functools.lru_cache(maxsize=4096)
def _resolve_overridden(
    catalog: Catalog, plain: EffectiveEntitlements, overrides: Overrides
) -> EffectiveEntitlements:
    # Cached: accounts with the same plan and overrides share one value, and an account with
    # custom limits only shares the plan's decisions (the cache holds many such accounts).
    validate_overrides(catalog, overrides)
    plan = plain.plan
    decisions: Mapping[str, FeatureDecision] = plain.decisions
    if overrides.granted_features or overrides.revoked_features:
        changed = dict(plain.decisions)
        for key in overrides.granted_features - plan.features:
            changed[key] = FeatureDecision(True, plan.id, "", GRANTED_BY_OVERRIDE)
        for key in overrides.revoked_features:
            changed[key] = FeatureDecision(False, plan.id, "", REVOKED_BY_OVERRIDE)
        decisions = MappingProxyType(changed)
    return EffectiveEntitlements(
        plan=plan,
        features=(plan.features | overrides.granted_features) - overrides.revoked_features,
        limits=MappingProxyType({**plan.limits, **overrides.limits}),
        overrides=overrides,
        decisions=decisions,
    )


@functools.lru_cache(maxsize=16)
def _plan_entitlements(catalog: Catalog) -> Mapping[str, EffectiveEntitlements]:
    """Every plan's entitlements without overrides, shared by all accounts on that plan."""
    table: dict[str, EffectiveEntitlements] = {}
    for plan in catalog.plans:
        decisions: dict[str, FeatureDecision] = {}
        for key in catalog.features:
            if key in plan.features:
                decisions[key] = FeatureDecision(True, plan.id, "", INCLUDED_IN_PLAN)
            else:
                upgrade = get_upgrade_path(catalog, plan.id, key)
                upgrade_id = "" if upgrade is None else upgrade.id
                decisions[key] = FeatureDecision(False, plan.id, upgrade_id, FEATURE_NOT_IN_PLAN)
        table[plan.id] = EffectiveEntitlements(
            plan=plan,
            features=plan.features,
            limits=plan.limits,
            overrides=_NO_OVERRIDES,
            decisions=MappingProxyType(decisions),
        )
    return MappingProxyType(table)
