"""The feature and limit rules of local evaluation, as the server applies them: pure functions
of an account's `Entitlements` and the plan catalog."""

from __future__ import annotations

from datetime import datetime

from nchat.entitlements.client._models import (
    AnswerSource,
    Entitlements,
    FeatureCheck,
    FeatureDecisionReason,
    Limit,
    LimitCheck,
    PlanCatalog,
    UsageLevel,
)

_MESSAGES = {
    FeatureDecisionReason.INCLUDED_IN_PLAN: "the {plan} plan includes {feature}",
    FeatureDecisionReason.GRANTED_BY_OVERRIDE: (
        "{feature} is granted to this account by an override"
    ),
    FeatureDecisionReason.REVOKED_BY_OVERRIDE: (
        "{feature} is revoked for this account by an override"
    ),
    FeatureDecisionReason.FEATURE_NOT_IN_PLAN: "the {plan} plan does not include {feature}",
}


def evaluate_feature(
    catalog: PlanCatalog, ent: Entitlements, feature: str
) -> tuple[bool, str, FeatureDecisionReason]:
    """The server's decision for `feature`: (allowed, upgrade plan, reason)."""
    plan = catalog.plan(ent.plan_id)
    plan_features = plan.features if plan is not None else frozenset()
    if feature in ent.features:
        if feature in ent.granted_features and feature not in plan_features:
            return True, "", FeatureDecisionReason.GRANTED_BY_OVERRIDE
        return True, "", FeatureDecisionReason.INCLUDED_IN_PLAN
    if feature in ent.revoked_features:
        # No plan change brings back a revoked feature, so there is no upgrade to offer.
        return False, "", FeatureDecisionReason.REVOKED_BY_OVERRIDE
    return (
        False,
        catalog.upgrade_path(ent.plan_id, feature),
        FeatureDecisionReason.FEATURE_NOT_IN_PLAN,
    )


def feature_message(plan_id: str, feature: str, reason: FeatureDecisionReason, upgrade: str) -> str:
    """The server's message for a feature decision."""
    message = _MESSAGES[reason].format(plan=plan_id, feature=feature)
    return f"{message}; upgrade to {upgrade}" if upgrade else message


def prepare_features(
    catalog: PlanCatalog, ent: Entitlements, as_of: datetime | None = None
) -> dict[str, FeatureCheck]:
    """Every catalog feature's answer for `ent`, as the server would give it (`as_of`: when the
    state arrived)."""
    answers: dict[str, FeatureCheck] = {}
    for info in catalog.features:
        allowed, upgrade, reason = evaluate_feature(catalog, ent, info.key)
        answers[info.key] = FeatureCheck(
            allowed=allowed,
            plan_id=ent.plan_id,
            upgrade_plan_id=upgrade,
            reason=reason,
            revision=ent.revision,
            message=feature_message(ent.plan_id, info.key, reason, upgrade),
            source="local",
            as_of=as_of,
        )
    return answers


def judge_limit(limit: int | None, current: int) -> tuple[bool, float, UsageLevel, int | None]:
    """(allowed, percentage, level, remaining) of `current` against `limit` (None: unlimited)."""
    if limit is None:
        return True, 0.0, UsageLevel.OK, None
    if limit <= 0:
        return False, 100.0, UsageLevel.EXCEEDED, 0
    remaining = limit - current
    # Integer comparisons, as the server does: no float rounding at exactly 75 % or 90 %.
    if current >= limit:
        level = UsageLevel.EXCEEDED
    elif 100 * current >= 90 * limit:
        level = UsageLevel.UPGRADE_PROMPT
    elif 100 * current >= 75 * limit:
        level = UsageLevel.WARNING
    else:
        level = UsageLevel.OK
    return remaining > 0, 100 * current / limit, level, max(remaining, 0)


def limit_check(
    ent: Entitlements,
    found: Limit,
    current: int,
    source: AnswerSource,
    as_of: datetime | None = None,
) -> LimitCheck:
    """`current` judged against the account's limit `found`."""
    allowed, percentage, level, remaining = judge_limit(found.value, current)
    return LimitCheck(
        allowed=allowed,
        limit=found.value,
        current=current,
        percentage=percentage,
        level=level,
        unlimited=found.value is None,
        remaining=remaining,
        plan_id=ent.plan_id,
        revision=ent.revision,
        source=source,
        as_of=as_of,
    )
