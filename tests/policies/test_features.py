"""Feature rules: which plan has which feature, minimum plans and upgrade paths."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entitlements.errors import UnknownFeature, UnknownPlan
from entitlements.policies import (
    Catalog,
    FeatureInfo,
    Plan,
    default_catalog,
    get_upgrade_path,
    is_feature_allowed,
    load_catalog,
    meets_minimum_plan,
    minimum_plan_for,
)
from tests.policies.test_catalog import ALL_FEATURES, PLAN_ADDS, PLAN_FEATURES, PLAN_IDS

CATALOG = default_catalog()
EVERY_PLAN_AND_FEATURE = list(itertools.product(PLAN_IDS, sorted(ALL_FEATURES)))


def adder(feature: str) -> str:
    (plan_id,) = (p for p, adds in PLAN_ADDS.items() if feature in adds)
    return plan_id


# --- the seed's examples --------------------------------------------------------------------


def test_free_plan_has_no_api_access() -> None:
    assert is_feature_allowed(CATALOG, "free", "apiAccess") is False


def test_starter_plan_has_api_access() -> None:
    assert is_feature_allowed(CATALOG, "starter", "apiAccess") is True


def test_upgrade_path_from_free_for_custom_branding_is_starter() -> None:
    upgrade = get_upgrade_path(CATALOG, "free", "customBranding")
    assert upgrade is not None
    assert upgrade.id == "starter"


# --- the plan table -------------------------------------------------------------------------


@pytest.mark.parametrize(("plan_id", "feature"), EVERY_PLAN_AND_FEATURE)
def test_feature_allowed_matches_the_plan_table(plan_id: str, feature: str) -> None:
    assert is_feature_allowed(CATALOG, plan_id, feature) is (feature in PLAN_FEATURES[plan_id])


def test_free_plan_has_the_basic_features() -> None:
    for feature in ("messaging", "fileSharing", "voiceCalls", "videoCalls", "threads"):
        assert is_feature_allowed(CATALOG, "free", feature)


def test_business_has_every_pro_feature_and_sla_guarantee() -> None:
    business = CATALOG.plan("business").features
    assert business >= CATALOG.plan("pro").features
    assert business - CATALOG.plan("pro").features == {"slaGuarantee"}


def test_enterprise_has_every_feature() -> None:
    assert CATALOG.plan("enterprise").features == set(CATALOG.features) == ALL_FEATURES


@pytest.mark.parametrize("feature", sorted(ALL_FEATURES))
def test_minimum_plan_is_the_plan_that_adds_the_feature(feature: str) -> None:
    assert minimum_plan_for(CATALOG, feature).id == adder(feature)


@pytest.mark.parametrize(("plan_id", "feature"), EVERY_PLAN_AND_FEATURE)
def test_upgrade_path_is_the_lowest_higher_plan_with_the_feature(
    plan_id: str, feature: str
) -> None:
    upgrade = get_upgrade_path(CATALOG, plan_id, feature)
    if feature in PLAN_FEATURES[plan_id]:
        assert upgrade is None
    else:
        assert upgrade is not None
        assert upgrade.id == adder(feature)
        assert upgrade.tier > CATALOG.plan(plan_id).tier


def test_no_upgrade_path_when_the_plan_has_the_feature() -> None:
    assert get_upgrade_path(CATALOG, "pro", "customBranding") is None
    assert get_upgrade_path(CATALOG, "enterprise", "onPremise") is None


def test_no_upgrade_path_when_no_plan_has_the_feature() -> None:
    # A loaded catalog rejects a feature no plan has, so build one directly.
    free = CATALOG.plan("free")
    orphan = FeatureInfo("teleport", "Teleport", "", minimum_plan_id="enterprise")
    catalog = Catalog((free,), {"teleport": orphan}, CATALOG.limits, CATALOG.metrics)
    assert get_upgrade_path(catalog, "free", "teleport") is None


@pytest.mark.parametrize(
    ("plan_id", "minimum_plan_id"), list(itertools.product(PLAN_IDS, PLAN_IDS))
)
def test_meets_minimum_plan_compares_tiers(plan_id: str, minimum_plan_id: str) -> None:
    expected = PLAN_IDS.index(plan_id) >= PLAN_IDS.index(minimum_plan_id)
    assert meets_minimum_plan(CATALOG, plan_id, minimum_plan_id) is expected


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: is_feature_allowed(CATALOG, "gold", "apiAccess"),
        lambda: get_upgrade_path(CATALOG, "gold", "apiAccess"),
        lambda: meets_minimum_plan(CATALOG, "gold", "free"),
    ],
)
def test_unknown_plan_is_rejected_naming_plan_id(call: object) -> None:
    with pytest.raises(UnknownPlan) as info:
        call()  # type: ignore[operator]
    assert info.value.field == "plan_id"


def test_unknown_minimum_plan_is_rejected_naming_minimum_plan_id() -> None:
    with pytest.raises(UnknownPlan) as info:
        meets_minimum_plan(CATALOG, "free", "gold")
    assert info.value.field == "minimum_plan_id"


@pytest.mark.parametrize(
    "call",
    [
        lambda: is_feature_allowed(CATALOG, "free", "teleport"),
        lambda: get_upgrade_path(CATALOG, "free", "teleport"),
        lambda: get_upgrade_path(CATALOG, "enterprise", "teleport"),
        lambda: minimum_plan_for(CATALOG, "teleport"),
    ],
)
def test_unknown_feature_is_rejected_naming_feature(call: object) -> None:
    with pytest.raises(UnknownFeature) as info:
        call()  # type: ignore[operator]
    assert (info.value.field, info.value.feature) == ("feature", "teleport")


# --- properties -----------------------------------------------------------------------------

plans = st.sampled_from(CATALOG.plans)


@given(plans, plans)
def test_a_higher_plan_never_has_fewer_features_or_lower_limits(a: Plan, b: Plan) -> None:
    low, high = sorted((a, b), key=lambda p: p.tier)
    assert low.features <= high.features
    for key, value in low.limits.items():
        higher = high.limits[key]
        assert higher is None or (value is not None and value <= higher)


@st.composite
def catalog_documents(draw: st.DrawFn) -> tuple[str, list[str], dict[str, str]]:
    """A random valid catalog: its TOML, plan ids lowest first, and the plan adding each feature."""
    n = draw(st.integers(1, 5))
    plan_ids = [f"plan{i}" for i in range(n)]
    tiers = sorted(draw(st.sets(st.integers(-50, 50), min_size=n, max_size=n)))
    features = [f"feature{i}" for i in range(draw(st.integers(1, 8)))]
    adders = {f: draw(st.sampled_from(plan_ids)) for f in features}
    metrics = ("users", "bots", "aiMinutes")

    lines = [f'default_plan = "{plan_ids[0]}"']
    for feature in features:
        lines += [f"[features.{feature}]", 'name = "F"', 'description = ""']
    for metric in metrics:
        key = "max" + metric[0].upper() + metric[1:]
        lines += [f"[limits.{key}]", f'metric = "{metric}"', 'unit = "u"', "monthly = false"]
    ladders: dict[str, list[str | None]] = {}
    for metric in metrics:
        value: int | None = draw(st.integers(0, 1_000))
        ladder: list[str | None] = []
        for i in range(n):
            if i and draw(st.booleans()):
                ladder.append(None)  # inherit
                continue
            if value is not None:
                value = None if draw(st.integers(0, 5)) == 0 else value + draw(st.integers(0, 50))
            ladder.append('"unlimited"' if value is None else str(value))
        ladders["max" + metric[0].upper() + metric[1:]] = ladder

    blocks: list[list[str]] = []
    for i, plan_id in enumerate(plan_ids):
        own = [f'"{f}"' for f in features if adders[f] == plan_id]
        block = [f"[plans.{plan_id}]", f'name = "{plan_id}"', f"tier = {tiers[i]}"]
        if i == n - 1:
            block.append("custom_pricing = true")
        else:
            block += ["price_monthly_cents = 0", "price_yearly_cents = 0"]
        if i:
            block.append(f'inherits = "{plan_ids[i - 1]}"')
        block.append(f"features = [{', '.join(own)}]")
        limits = [f"{key} = {ladder[i]}" for key, ladder in ladders.items() if ladder[i]]
        block.append(f"limits = {{ {', '.join(limits)} }}")
        blocks.append(block)
    for index in draw(st.permutations(range(n))):  # declaration order does not matter
        lines += blocks[index]
    return "\n".join(lines) + "\n", plan_ids, adders


@given(catalog_documents())
def test_any_valid_catalog_loads_as_one_growing_chain(
    document: tuple[str, list[str], dict[str, str]],
) -> None:
    text, plan_ids, adders = document
    catalog = load_catalog(text)
    assert [p.id for p in catalog.plans] == plan_ids
    for low, high in itertools.pairwise(catalog.plans):
        assert high.inherits == low.id
        assert low.features <= high.features
        for key, value in low.limits.items():
            higher = high.limits[key]
            assert higher is None or (value is not None and value <= higher)
    for feature, plan_id in adders.items():
        assert minimum_plan_for(catalog, feature).id == plan_id
        for plan in catalog.plans:
            has = plan.tier >= catalog.plan(plan_id).tier
            assert is_feature_allowed(catalog, plan.id, feature) is has
            upgrade = get_upgrade_path(catalog, plan.id, feature)
            assert (upgrade is None) if has else (upgrade is catalog.plan(plan_id))
