"""Effective entitlements: a plan with per-account overrides, as the hot path sees it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entitlements.errors import InvalidArgument, UnknownFeature, UnknownLimit, UnknownPlan
from entitlements.policies import (
    FEATURE_NOT_IN_PLAN,
    GRANTED_BY_OVERRIDE,
    INCLUDED_IN_PLAN,
    REVOKED_BY_OVERRIDE,
    FeatureDecision,
    Overrides,
    UsageLevel,
    default_catalog,
    get_upgrade_path,
    resolve,
    validate_overrides,
)
from tests.policies.test_catalog import ALL_FEATURES, PLAN_FEATURES, PLAN_IDS, PLAN_LIMITS

CATALOG = default_catalog()


# --- without overrides ----------------------------------------------------------------------


def test_free_account_cannot_use_api_access_and_is_pointed_at_starter() -> None:
    decision = resolve(CATALOG, "free").can_use("apiAccess")
    assert decision == FeatureDecision(
        allowed=False, plan_id="free", upgrade_plan_id="starter", reason=FEATURE_NOT_IN_PLAN
    )


def test_starter_account_can_use_api_access() -> None:
    decision = resolve(CATALOG, "starter").can_use("apiAccess")
    assert decision == FeatureDecision(
        allowed=True, plan_id="starter", upgrade_plan_id="", reason=INCLUDED_IN_PLAN
    )


@pytest.mark.parametrize(
    ("plan_id", "feature"), list(itertools.product(PLAN_IDS, sorted(ALL_FEATURES)))
)
def test_decision_matches_the_plan_table_and_upgrade_path(plan_id: str, feature: str) -> None:
    decision = resolve(CATALOG, plan_id).can_use(feature)
    assert decision.plan_id == plan_id
    if feature in PLAN_FEATURES[plan_id]:
        assert (decision.allowed, decision.upgrade_plan_id, decision.reason) == (
            True,
            "",
            INCLUDED_IN_PLAN,
        )
    else:
        upgrade = get_upgrade_path(CATALOG, plan_id, feature)
        assert upgrade is not None
        assert (decision.allowed, decision.upgrade_plan_id, decision.reason) == (
            False,
            upgrade.id,
            FEATURE_NOT_IN_PLAN,
        )


@pytest.mark.parametrize("plan_id", PLAN_IDS)
def test_plan_entitlements_are_the_plans_features_and_limits(plan_id: str) -> None:
    entitlements = resolve(CATALOG, plan_id)
    assert entitlements.plan is CATALOG.plan(plan_id)
    assert entitlements.features == PLAN_FEATURES[plan_id]
    assert dict(entitlements.limits) == {
        key: by_plan[plan_id] for key, by_plan in PLAN_LIMITS.items()
    }
    assert entitlements.overrides.is_empty


def test_free_max_users_at_8_is_allowed_with_a_warning() -> None:
    check = resolve(CATALOG, "free").check_limit("maxUsers", 8)
    assert (check.allowed, check.percentage, check.level) == (True, 80.0, UsageLevel.WARNING)


def test_enterprise_limits_are_unlimited() -> None:
    check = resolve(CATALOG, "enterprise").check_limit("maxMessages", 10**9)
    assert (check.allowed, check.unlimited, check.limit, check.level) == (
        True,
        True,
        None,
        UsageLevel.OK,
    )


def test_resolve_without_overrides_shares_one_object_per_plan() -> None:
    first = resolve(CATALOG, "pro")
    assert resolve(CATALOG, "pro") is first
    assert resolve(CATALOG, "pro", Overrides()) is first
    assert first.can_use("tokenGating") is resolve(CATALOG, "pro").can_use("tokenGating")


def test_entitlements_with_equal_overrides_are_shared_equal_and_hash_alike() -> None:
    a = resolve(CATALOG, "pro", Overrides(limits={"maxUsers": 1}))
    b = resolve(CATALOG, "pro", Overrides(limits={"maxUsers": 1}))
    assert a is b  # accounts with the same overrides share one value in the cache
    assert a == b
    assert a.decisions is resolve(CATALOG, "pro").decisions  # limits only: plan's decisions
    assert len({a, b, resolve(CATALOG, "pro")}) == 2


def test_unknown_plan_is_rejected_naming_plan_id() -> None:
    with pytest.raises(UnknownPlan) as info:
        resolve(CATALOG, "gold")
    assert (info.value.field, info.value.plan_id) == ("plan_id", "gold")


def test_unknown_feature_is_rejected_naming_feature() -> None:
    with pytest.raises(UnknownFeature) as info:
        resolve(CATALOG, "pro").can_use("teleport")
    assert info.value.field == "feature"


def test_unknown_limit_is_rejected_naming_limit() -> None:
    with pytest.raises(UnknownLimit) as info:
        resolve(CATALOG, "pro").check_limit("maxTeleports", 1)
    assert info.value.field == "limit"


def test_negative_current_is_rejected_naming_current() -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve(CATALOG, "pro").check_limit("maxUsers", -1)
    assert info.value.field == "current"


# --- overrides ------------------------------------------------------------------------------


def test_granted_feature_is_allowed_by_override() -> None:
    entitlements = resolve(CATALOG, "free", Overrides(granted_features=frozenset({"apiAccess"})))
    assert entitlements.can_use("apiAccess") == FeatureDecision(
        allowed=True, plan_id="free", upgrade_plan_id="", reason=GRANTED_BY_OVERRIDE
    )
    assert "apiAccess" in entitlements.features
    assert entitlements.can_use("webhooks").reason == FEATURE_NOT_IN_PLAN


def test_granting_a_feature_the_plan_has_keeps_it_included_in_plan() -> None:
    entitlements = resolve(CATALOG, "pro", Overrides(granted_features=frozenset({"apiAccess"})))
    assert entitlements.can_use("apiAccess").reason == INCLUDED_IN_PLAN


def test_revoked_feature_is_denied_without_an_upgrade_path() -> None:
    overrides = Overrides(revoked_features=frozenset({"messaging", "onPremise"}))
    entitlements = resolve(CATALOG, "pro", overrides)
    for feature in ("messaging", "onPremise"):
        assert entitlements.can_use(feature) == FeatureDecision(
            allowed=False, plan_id="pro", upgrade_plan_id="", reason=REVOKED_BY_OVERRIDE
        )
        assert feature not in entitlements.features
    assert entitlements.can_use("threads").allowed


def test_custom_limits_replace_only_the_named_limits() -> None:
    overrides = Overrides(limits={"maxUsers": 5_000, "maxMessages": None})
    entitlements = resolve(CATALOG, "business", overrides)
    assert entitlements.limits["maxUsers"] == 5_000
    assert entitlements.limits["maxMessages"] is None
    assert entitlements.limits["maxChannels"] == 500
    assert list(entitlements.limits) == list(CATALOG.limits)
    check = entitlements.check_limit("maxUsers", 4_500)
    assert (check.allowed, check.percentage, check.level) == (True, 90.0, UsageLevel.UPGRADE_PROMPT)
    assert entitlements.check_limit("maxMessages", 10**10).unlimited


def test_custom_limit_may_be_below_the_plan() -> None:
    entitlements = resolve(CATALOG, "enterprise", Overrides(limits={"maxUsers": 0}))
    check = entitlements.check_limit("maxUsers", 0)
    assert (check.allowed, check.level) == (False, UsageLevel.EXCEEDED)


def test_overrides_do_not_change_the_shared_plan_entitlements() -> None:
    resolve(
        CATALOG,
        "free",
        Overrides(limits={"maxUsers": 99}, revoked_features=frozenset({"messaging"})),
    )
    plain = resolve(CATALOG, "free")
    assert plain.limits["maxUsers"] == 10
    assert plain.can_use("messaging").allowed


def test_overrides_copy_what_they_are_given() -> None:
    limits: dict[str, int | None] = {"maxUsers": 1}
    overrides = Overrides(limits=limits)
    limits["maxUsers"] = 2
    assert overrides.limits == {"maxUsers": 1}
    with pytest.raises(TypeError):
        overrides.limits["maxUsers"] = 3  # type: ignore[index]


def test_equal_overrides_are_equal_and_hash_alike() -> None:
    a = Overrides(limits={"maxUsers": 1}, granted_features=frozenset({"apiAccess"}))
    b = Overrides(limits={"maxUsers": 1}, granted_features=frozenset({"apiAccess"}))
    assert a == b
    assert hash(a) == hash(b)
    assert Overrides().is_empty
    assert not a.is_empty


@pytest.mark.parametrize(
    ("overrides", "error", "field"),
    [
        (Overrides(limits={"maxUser": 1}), UnknownLimit, "overrides.limits"),
        (Overrides(limits={"maxUsers": -1}), InvalidArgument, "overrides.limits"),
        (Overrides(limits={"maxUsers": True}), InvalidArgument, "overrides.limits"),
        (Overrides(limits={"maxUsers": "9"}), InvalidArgument, "overrides.limits"),  # type: ignore[dict-item]
        (
            Overrides(granted_features=frozenset({"teleport"})),
            UnknownFeature,
            "overrides.granted_features",
        ),
        (
            Overrides(revoked_features=frozenset({"teleport"})),
            UnknownFeature,
            "overrides.revoked_features",
        ),
        (
            Overrides(
                granted_features=frozenset({"apiAccess"}),
                revoked_features=frozenset({"apiAccess"}),
            ),
            InvalidArgument,
            "overrides.revoked_features",
        ),
    ],
)
def test_invalid_overrides_are_rejected_naming_the_field(
    overrides: Overrides, error: type[InvalidArgument], field: str
) -> None:
    with pytest.raises(error) as info:
        validate_overrides(CATALOG, overrides)
    assert type(info.value) is error
    assert info.value.field == field
    with pytest.raises(error):
        resolve(CATALOG, "enterprise", overrides)


def test_valid_overrides_pass_validation() -> None:
    validate_overrides(
        CATALOG,
        Overrides(
            limits={"maxUsers": 0, "maxBots": None},
            granted_features=frozenset({"onPremise"}),
            revoked_features=frozenset({"messaging"}),
        ),
    )


# --- properties -----------------------------------------------------------------------------

features = sorted(ALL_FEATURES)
limit_values = st.none() | st.integers(0, 10**6)


@st.composite
def overrides(draw: st.DrawFn) -> Overrides:
    granted = draw(st.frozensets(st.sampled_from(features)))
    revoked = draw(st.frozensets(st.sampled_from(features))) - granted
    limits = draw(st.dictionaries(st.sampled_from(sorted(CATALOG.limits)), limit_values))
    return Overrides(limits=limits, granted_features=granted, revoked_features=revoked)


@given(st.sampled_from(PLAN_IDS), overrides())
def test_overrides_grant_revoke_and_replace_limits(plan_id: str, extra: Overrides) -> None:
    entitlements = resolve(CATALOG, plan_id, extra)
    plan = CATALOG.plan(plan_id)
    expected = (plan.features | extra.granted_features) - extra.revoked_features
    assert entitlements.features == expected
    for feature in features:
        decision = entitlements.can_use(feature)
        assert decision.allowed is (feature in expected)
        assert decision.plan_id == plan_id
        if decision.allowed:
            assert decision.upgrade_plan_id == ""
    for key, value in entitlements.limits.items():
        assert value == extra.limits.get(key, plan.limits[key])
