"""The packaged plan catalog against the published plan table, and the loader's validation."""

from __future__ import annotations

import pathlib
from types import MappingProxyType

import pytest

import entitlements.policies as policies
from entitlements.errors import (
    CatalogError,
    UnknownFeature,
    UnknownLimit,
    UnknownMetric,
    UnknownPlan,
)
from entitlements.policies import Catalog, Plan, default_catalog, load_catalog
from entitlements.policies.catalog import DOCUMENT_KEY

# The published plan table (CONTRACT.md "Plans"), written out so these tests stand alone.
PLAN_IDS = ("free", "starter", "pro", "business", "enterprise")
BASIC_FEATURES = frozenset(
    {"messaging", "fileSharing", "voiceCalls", "videoCalls", "threads", "basicSearch"}
)
PLAN_ADDS: dict[str, frozenset[str]] = {
    "free": BASIC_FEATURES,
    "starter": frozenset({"customBranding", "apiAccess", "webhooks"}),
    "pro": frozenset(
        {"advancedAnalytics", "prioritySupport", "ssoIntegration", "tokenGating", "cryptoPayments"}
    ),
    "business": frozenset({"slaGuarantee"}),
    "enterprise": frozenset({"dedicatedSupport", "customIntegrations", "onPremise"}),
}
ALL_FEATURES = frozenset().union(*PLAN_ADDS.values())
# Each plan includes every feature of the plans below it.
PLAN_FEATURES: dict[str, frozenset[str]] = {
    plan_id: frozenset().union(*(PLAN_ADDS[p] for p in PLAN_IDS[: i + 1]))
    for i, plan_id in enumerate(PLAN_IDS)
}
U = None  # unlimited
PLAN_LIMITS: dict[str, dict[str, int | None]] = {
    "maxUsers": dict(zip(PLAN_IDS, (10, 50, 200, 1_000, U), strict=True)),
    "maxChannels": dict(zip(PLAN_IDS, (5, 25, 100, 500, U), strict=True)),
    "maxMessages": dict(zip(PLAN_IDS, (10_000, 100_000, 500_000, 2_000_000, U), strict=True)),
    "maxStorageGB": dict(zip(PLAN_IDS, (5, 50, 250, 1_000, U), strict=True)),
    "maxCallParticipants": dict(zip(PLAN_IDS, (4, 10, 25, 100, U), strict=True)),
    "maxIntegrations": dict(zip(PLAN_IDS, (2, 10, 50, 200, U), strict=True)),
    "maxBots": dict(zip(PLAN_IDS, (1, 5, 20, 100, U), strict=True)),
    "maxAiMinutes": dict(zip(PLAN_IDS, (60, 300, 1_500, 10_000, U), strict=True)),
    "maxAiQueries": dict(zip(PLAN_IDS, (100, 1_000, 5_000, 50_000, U), strict=True)),
    "maxCallMinutes": dict(zip(PLAN_IDS, (1_000, 5_000, 20_000, 100_000, U), strict=True)),
    "maxRecordingGB": dict(zip(PLAN_IDS, (1, 10, 50, 500, U), strict=True)),
}
# limit key -> (metric, monthly)
LIMIT_METRICS: dict[str, tuple[str | None, bool]] = {
    "maxUsers": ("users", False),
    "maxChannels": ("channels", False),
    "maxMessages": ("messages", True),
    "maxStorageGB": ("storageGB", False),
    "maxIntegrations": ("integrations", False),
    "maxBots": ("bots", False),
    "maxAiMinutes": ("aiMinutes", True),
    "maxAiQueries": ("aiQueries", True),
    "maxCallMinutes": ("callMinutes", True),
    "maxRecordingGB": ("recordingGB", False),
    "maxCallParticipants": (None, False),
}
PRICES: dict[str, tuple[int | None, int | None, bool]] = {
    "free": (0, 0, False),
    "starter": (800, 8_000, False),
    "pro": (2_500, 25_000, False),
    "business": (7_500, 75_000, False),
    "enterprise": (None, None, True),
}

CATALOG = default_catalog()


# --- the packaged catalog -------------------------------------------------------------------


def test_plans_are_in_tier_order() -> None:
    assert tuple(plan.id for plan in CATALOG.plans) == PLAN_IDS
    tiers = [plan.tier for plan in CATALOG.plans]
    assert tiers == sorted(set(tiers))


def test_each_plan_inherits_the_plan_below_it() -> None:
    assert [plan.inherits for plan in CATALOG.plans] == [None, *PLAN_IDS[:-1]]


@pytest.mark.parametrize("plan_id", PLAN_IDS)
def test_plan_prices_match_the_plan_table(plan_id: str) -> None:
    plan = CATALOG.plan(plan_id)
    monthly, yearly, custom = PRICES[plan_id]
    assert (plan.price_monthly_cents, plan.price_yearly_cents, plan.custom_pricing) == (
        monthly,
        yearly,
        custom,
    )


@pytest.mark.parametrize("plan_id", PLAN_IDS)
def test_plan_lists_only_the_features_it_adds(plan_id: str) -> None:
    assert CATALOG.plan(plan_id).own_features == PLAN_ADDS[plan_id]


@pytest.mark.parametrize("plan_id", PLAN_IDS)
def test_plan_features_include_everything_below(plan_id: str) -> None:
    assert CATALOG.plan(plan_id).features == PLAN_FEATURES[plan_id]


@pytest.mark.parametrize("plan_id", PLAN_IDS)
@pytest.mark.parametrize("limit_key", PLAN_LIMITS)
def test_plan_limit_matches_the_plan_table(plan_id: str, limit_key: str) -> None:
    assert CATALOG.plan(plan_id).limits[limit_key] == PLAN_LIMITS[limit_key][plan_id]


@pytest.mark.parametrize("plan_id", PLAN_IDS)
def test_every_plan_has_every_limit_key(plan_id: str) -> None:
    assert list(CATALOG.plan(plan_id).limits) == list(CATALOG.limits)
    assert set(CATALOG.limits) == set(PLAN_LIMITS)


def test_enterprise_is_unlimited_everywhere() -> None:
    assert set(CATALOG.plan("enterprise").limits.values()) == {None}


def test_every_feature_is_declared_once_with_a_name_and_description() -> None:
    assert set(CATALOG.features) == ALL_FEATURES
    for key, info in CATALOG.features.items():
        assert info.key == key
        assert info.name
        assert info.description


@pytest.mark.parametrize("feature", sorted(ALL_FEATURES))
def test_feature_minimum_plan_is_the_plan_that_adds_it(feature: str) -> None:
    (adder,) = (plan_id for plan_id, adds in PLAN_ADDS.items() if feature in adds)
    assert CATALOG.feature(feature).minimum_plan_id == adder


@pytest.mark.parametrize(("limit_key", "expected"), LIMIT_METRICS.items())
def test_limit_declares_its_metric_and_whether_it_is_monthly(
    limit_key: str, expected: tuple[str | None, bool]
) -> None:
    info = CATALOG.limit(limit_key)
    assert (info.key, info.metric, info.monthly) == (limit_key, *expected)
    assert info.unit


def test_metrics_are_the_usage_metrics_each_with_its_limit() -> None:
    expected = {
        metric: (limit_key, monthly)
        for limit_key, (metric, monthly) in LIMIT_METRICS.items()
        if metric is not None
    }
    assert {m.name: (m.limit_key, m.monthly) for m in CATALOG.metrics.values()} == expected
    assert list(CATALOG.metrics) == [m.name for m in CATALOG.metrics.values()]


def test_monthly_metrics_are_messages_ai_minutes_ai_queries_and_call_minutes() -> None:
    monthly = {name for name, info in CATALOG.metrics.items() if info.monthly}
    assert monthly == {"messages", "aiMinutes", "aiQueries", "callMinutes"}


def test_default_plan_is_free() -> None:
    assert CATALOG.default_plan_id == "free"
    assert CATALOG.default_plan is CATALOG.plan("free")


def test_default_catalog_is_loaded_once() -> None:
    assert default_catalog() is default_catalog()


def test_packaged_file_loads_from_a_path_and_from_bytes(tmp_path: pathlib.Path) -> None:
    source = pathlib.Path(policies.catalog.__file__).with_name("catalog.toml")
    for loaded in (load_catalog(source), load_catalog(source.read_bytes())):
        assert loaded.plans == CATALOG.plans
        assert loaded.features == CATALOG.features
        assert loaded.limits == CATALOG.limits
        assert loaded.metrics == CATALOG.metrics


# --- lookups --------------------------------------------------------------------------------


def test_unknown_plan_names_the_request_field() -> None:
    with pytest.raises(UnknownPlan) as info:
        CATALOG.plan("gold")
    assert (info.value.field, info.value.plan_id) == ("plan_id", "gold")
    with pytest.raises(UnknownPlan) as info:
        CATALOG.plan("gold", field="minimum_plan_id")
    assert info.value.field == "minimum_plan_id"


def test_unknown_feature_names_the_request_field() -> None:
    with pytest.raises(UnknownFeature) as info:
        CATALOG.feature("customBrandin")
    assert (info.value.field, info.value.feature) == ("feature", "customBrandin")
    with pytest.raises(UnknownFeature) as info:
        CATALOG.feature("x", field="checks[3].feature")
    assert info.value.field == "checks[3].feature"


def test_unknown_limit_names_the_request_field() -> None:
    with pytest.raises(UnknownLimit) as info:
        CATALOG.limit("maxUser")
    assert (info.value.field, info.value.limit) == ("limit", "maxUser")
    with pytest.raises(UnknownLimit) as info:
        CATALOG.limit("maxUser", field="limits")
    assert info.value.field == "limits"


def test_unknown_metric_names_the_request_field() -> None:
    with pytest.raises(UnknownMetric) as info:
        CATALOG.metric("maxUsers")
    assert (info.value.field, info.value.metric) == ("metric", "maxUsers")
    with pytest.raises(UnknownMetric) as info:
        CATALOG.metric("user", field="events[0].metric")
    assert info.value.field == "events[0].metric"


def test_call_participants_is_a_limit_but_not_a_metric() -> None:
    assert CATALOG.limit("maxCallParticipants").metric is None
    with pytest.raises(UnknownMetric):
        CATALOG.metric("callParticipants")


# --- immutability ---------------------------------------------------------------------------


def test_catalog_values_are_read_only() -> None:
    plan = CATALOG.plan("free")
    with pytest.raises(TypeError):
        plan.limits["maxUsers"] = 1_000  # type: ignore[index]
    with pytest.raises(TypeError):
        CATALOG.features["x"] = CATALOG.features["messaging"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        plan.tier = 9  # type: ignore[misc]


def test_plan_copies_the_limits_it_is_given() -> None:
    limits = {"maxUsers": 1}
    plan = Plan("p", "P", 0, None, 0, 0, False, frozenset(), frozenset(), limits)
    limits["maxUsers"] = 2
    assert plan.limits == {"maxUsers": 1}
    assert isinstance(plan.limits, MappingProxyType)


def test_plans_and_catalogs_are_hashable() -> None:
    assert len({*CATALOG.plans, *CATALOG.plans}) == len(PLAN_IDS)
    assert {CATALOG: 1}[CATALOG] == 1


def test_package_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(policies).items()
        if not name.startswith("_") and not isinstance(value, type(policies))
    } - {"annotations"}
    assert set(policies.__all__) == public
    assert len(policies.__all__) == len(set(policies.__all__))
    for name in policies.__all__:
        assert getattr(policies, name) is not None


# --- loader validation ----------------------------------------------------------------------

VALID = """\
[features.chat]
name = "Chat"
description = "Talk."

[features.branding]
name = "Branding"
description = "Logos."

[features.sso]
name = "SSO"
description = "Single sign-on."

[limits.maxUsers]
metric = "users"
unit = "users"
monthly = false

[limits.maxMessages]
metric = "messages"
unit = "messages"
monthly = true

[limits.maxCallParticipants]
unit = "participants"
monthly = false

[plans.free]
name = "Free"
tier = 0
price_monthly_cents = 0
price_yearly_cents = 0
features = ["chat"]
limits = { maxUsers = 10, maxMessages = 1000, maxCallParticipants = 4 }

[plans.pro]
name = "Pro"
tier = 1
inherits = "free"
price_monthly_cents = 2500
price_yearly_cents = 25000
features = ["branding"]
limits = { maxUsers = 200 }

[plans.enterprise]
name = "Enterprise"
tier = 2
inherits = "pro"
custom_pricing = true
features = ["sso"]
limits = { maxUsers = "unlimited", maxMessages = "unlimited", maxCallParticipants = "unlimited" }
"""
BEFORE_LIMITS = VALID[: VALID.index("[limits.maxUsers]")]
BEFORE_PLANS = VALID[: VALID.index("[plans.free]")]


def edit(old: str, new: str, *, count: int = 1) -> str:
    """VALID with `old` replaced by `new`; `old` must occur exactly `count` times."""
    assert VALID.count(old) == count, old
    return VALID.replace(old, new)


def test_small_catalog_loads_with_inheritance_applied() -> None:
    catalog = load_catalog(VALID)
    pro = catalog.plan("pro")
    assert pro.own_features == {"branding"}
    assert pro.features == {"chat", "branding"}
    assert dict(pro.limits) == {"maxUsers": 200, "maxMessages": 1000, "maxCallParticipants": 4}
    assert catalog.feature("sso").minimum_plan_id == "enterprise"
    assert catalog.default_plan_id == "free"
    assert list(catalog.metrics) == ["users", "messages"]


def test_plans_are_ordered_by_tier_not_by_declaration() -> None:
    text = (
        BEFORE_PLANS
        + VALID[VALID.index("[plans.enterprise]") :]
        + VALID[VALID.index("[plans.free]") : VALID.index("[plans.enterprise]")]
    )
    assert [p.id for p in load_catalog(text).plans] == ["free", "pro", "enterprise"]


def test_a_plan_without_limits_inherits_them_all() -> None:
    catalog = load_catalog(edit("limits = { maxUsers = 200 }\n", ""))
    assert catalog.plan("pro").limits == catalog.plan("free").limits


def test_a_plan_without_features_adds_none() -> None:
    text = edit('features = ["sso"]\n', "").replace(
        '[features.sso]\nname = "SSO"\ndescription = "Single sign-on."\n', ""
    )
    assert load_catalog(text).plan("enterprise").features == {"chat", "branding"}


def test_default_plan_can_be_named_explicitly() -> None:
    assert load_catalog('default_plan = "pro"\n' + VALID).default_plan_id == "pro"


def test_unlimited_may_stay_unlimited_in_a_higher_plan() -> None:
    text = edit("maxCallParticipants = 4 }", 'maxCallParticipants = "unlimited" }')
    assert load_catalog(text).plan("pro").limits["maxCallParticipants"] is None


INVALID: list[tuple[str, str, str]] = [
    # (case, document, expected key)
    ("not TOML", "plans = [", DOCUMENT_KEY),
    ("unknown top-level key", 'colour = "blue"\n' + VALID, "colour"),
    ("missing features", VALID[VALID.index("[limits.maxUsers]") :], "features"),
    ("missing limits", BEFORE_LIMITS + VALID[VALID.index("[plans.free]") :], "limits"),
    ("missing plans", BEFORE_PLANS, "plans"),
    ("plans not a table", BEFORE_PLANS + "plans = 3\n", "plans"),
    ("no plans", BEFORE_PLANS + "[plans]\n", "plans"),
    ("plan not a table", BEFORE_PLANS + "[plans]\nfree = 1\n", "plans.free"),
    ("default plan undefined", 'default_plan = "basic"\n' + VALID, "default_plan"),
    ("default plan not a string", "default_plan = 1\n" + VALID, "default_plan"),
    (
        "implicit default plan free missing",
        VALID.replace("[plans.free]", "[plans.basic]").replace('"free"', '"basic"'),
        "default_plan",
    ),
    # features
    (
        "feature not a table",
        edit('[features.chat]\nname = "Chat"\n', '[features]\nchat = "Chat"\n'),
        "features.chat",
    ),
    (
        "unknown feature field",
        edit('name = "Chat"\n', 'name = "Chat"\nicon = "x"\n'),
        "features.chat.icon",
    ),
    ("feature without name", edit('name = "Chat"\n', ""), "features.chat.name"),
    ("feature with empty name", edit('name = "Chat"\n', 'name = ""\n'), "features.chat.name"),
    (
        "feature description not a string",
        edit('description = "Talk."', "description = 1"),
        "features.chat.description",
    ),
    ("feature key not camelCase", edit("[features.chat]", "[features.Chat]"), "features.Chat"),
    ("feature no plan has", edit('features = ["sso"]', "features = []"), "features.sso"),
    # limits
    (
        "limit not a table",
        edit(
            '[limits.maxCallParticipants]\nunit = "participants"\nmonthly = false\n',
            "[limits]\nmaxCallParticipants = 4\n",
        ),
        "limits.maxCallParticipants",
    ),
    (
        "unknown limit field",
        edit('unit = "users"\n', 'unit = "users"\ndefault = 3\n'),
        "limits.maxUsers.default",
    ),
    ("limit without unit", edit('unit = "users"\n', ""), "limits.maxUsers.unit"),
    (
        "limit without monthly",
        edit('unit = "messages"\nmonthly = true\n', 'unit = "messages"\n'),
        "limits.maxMessages.monthly",
    ),
    (
        "monthly not a boolean",
        edit("monthly = true", 'monthly = "yes"'),
        "limits.maxMessages.monthly",
    ),
    ("metric not a string", edit('metric = "users"', "metric = 1"), "limits.maxUsers.metric"),
    (
        "limit key not max + metric",
        edit('metric = "users"', 'metric = "members"'),
        "limits.maxUsers.metric",
    ),
    ("limit key without max", edit("[limits.maxUsers]", "[limits.users]"), "limits.users"),
    (
        "monthly limit without a metric",
        edit('unit = "participants"\nmonthly = false', 'unit = "participants"\nmonthly = true'),
        "limits.maxCallParticipants.monthly",
    ),
    # plan fields
    (
        "unknown plan field",
        edit('name = "Pro"\n', 'name = "Pro"\ncolour = "x"\n'),
        "plans.pro.colour",
    ),
    (
        "plan id not lower-case",
        VALID + '[plans."Gold Plan"]\nname = "Gold"\ntier = 9\n',
        "plans.Gold Plan",
    ),
    ("plan without name", edit('name = "Pro"\n', ""), "plans.pro.name"),
    ("plan without tier", edit("tier = 1\n", ""), "plans.pro.tier"),
    ("tier not an integer", edit("tier = 1\n", 'tier = "1"\n'), "plans.pro.tier"),
    ("tier a boolean", edit("tier = 1\n", "tier = true\n"), "plans.pro.tier"),
    ("tier a float", edit("tier = 1\n", "tier = 1.5\n"), "plans.pro.tier"),
    (
        "missing monthly price",
        edit("price_monthly_cents = 2500\n", ""),
        "plans.pro.price_monthly_cents",
    ),
    (
        "missing yearly price",
        edit("price_yearly_cents = 25000\n", ""),
        "plans.pro.price_yearly_cents",
    ),
    (
        "negative price",
        edit("price_monthly_cents = 2500", "price_monthly_cents = -1"),
        "plans.pro.price_monthly_cents",
    ),
    (
        "price not an integer",
        edit("price_yearly_cents = 25000", "price_yearly_cents = 250.0"),
        "plans.pro.price_yearly_cents",
    ),
    (
        "custom pricing with a price",
        edit("custom_pricing = true\n", "custom_pricing = true\nprice_yearly_cents = 1\n"),
        "plans.enterprise.price_yearly_cents",
    ),
    (
        "custom pricing not a boolean",
        edit("custom_pricing = true", 'custom_pricing = "yes"'),
        "plans.enterprise.custom_pricing",
    ),
    # inheritance and tiers
    ("unknown parent", edit('inherits = "free"', 'inherits = "fre"'), "plans.pro.inherits"),
    ("parent not a string", edit('inherits = "free"', "inherits = 0"), "plans.pro.inherits"),
    ("plan inherits itself", edit('inherits = "free"', 'inherits = "pro"'), "plans.pro.inherits"),
    (
        "inheritance cycle",
        edit("tier = 0\n", 'tier = 0\ninherits = "enterprise"\n'),
        "plans.free.inherits",
    ),
    ("duplicate tier", edit("tier = 1\n", "tier = 2\n"), "plans.enterprise.tier"),
    ("tier not above the parent's", edit("tier = 1\n", "tier = 5\n"), "plans.enterprise.tier"),
    ("second plan without a parent", edit('inherits = "pro"\n', ""), "plans.enterprise.inherits"),
    (
        "parent not directly below",
        edit('inherits = "pro"', 'inherits = "free"'),
        "plans.enterprise.inherits",
    ),
    # plan features
    (
        "features not an array",
        edit('features = ["branding"]', 'features = "branding"'),
        "plans.pro.features",
    ),
    (
        "feature entry not a string",
        edit('features = ["branding"]', 'features = ["branding", 1]'),
        "plans.pro.features",
    ),
    (
        "undeclared feature",
        edit('features = ["branding"]', 'features = ["brandin"]'),
        "plans.pro.features.brandin",
    ),
    (
        "feature listed twice",
        edit('features = ["branding"]', 'features = ["branding", "branding"]'),
        "plans.pro.features.branding",
    ),
    (
        "feature already inherited",
        edit('features = ["branding"]', 'features = ["branding", "chat"]'),
        "plans.pro.features.chat",
    ),
    # plan limits
    ("limits not a table", edit("limits = { maxUsers = 200 }", "limits = 200"), "plans.pro.limits"),
    (
        "undeclared limit",
        edit("limits = { maxUsers = 200 }", "limits = { maxUzers = 200 }"),
        "plans.pro.limits.maxUzers",
    ),
    (
        "negative limit",
        edit("limits = { maxUsers = 200 }", "limits = { maxUsers = -200 }"),
        "plans.pro.limits.maxUsers",
    ),
    (
        "limit a word other than unlimited",
        edit("limits = { maxUsers = 200 }", 'limits = { maxUsers = "lots" }'),
        "plans.pro.limits.maxUsers",
    ),
    (
        "limit a float",
        edit("limits = { maxUsers = 200 }", "limits = { maxUsers = 200.0 }"),
        "plans.pro.limits.maxUsers",
    ),
    (
        "limit an array",
        edit("limits = { maxUsers = 200 }", "limits = { maxUsers = [200] }"),
        "plans.pro.limits.maxUsers",
    ),
    (
        "limit a table",
        edit("limits = { maxUsers = 200 }", "limits = { maxUsers = { value = 200 } }"),
        "plans.pro.limits.maxUsers",
    ),
    (
        "limit a date",
        edit("limits = { maxUsers = 200 }", "limits = { maxUsers = 2025-01-01 }"),
        "plans.pro.limits.maxUsers",
    ),
    (
        "limit a boolean",
        edit("limits = { maxUsers = 200 }", "limits = { maxUsers = true }"),
        "plans.pro.limits.maxUsers",
    ),
    (
        "limit lower than the parent's",
        edit("limits = { maxUsers = 200 }", "limits = { maxUsers = 5 }"),
        "plans.pro.limits.maxUsers",
    ),
    (
        "finite limit below an unlimited parent",
        edit("maxUsers = 10,", 'maxUsers = "unlimited",'),
        "plans.pro.limits.maxUsers",
    ),
    (
        "lowest plan missing a limit",
        edit(", maxCallParticipants = 4 }", " }"),
        "plans.free.limits.maxCallParticipants",
    ),
]


@pytest.mark.parametrize(("document", "key"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_catalog_names_the_bad_key(document: str, key: str) -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog(document)
    assert info.value.key == key
    assert key in str(info.value)


def test_invalid_utf8_is_a_catalog_error() -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog(b"\xff\xfe")
    assert info.value.key == DOCUMENT_KEY


def test_inheritance_cycle_message_shows_the_cycle() -> None:
    with pytest.raises(CatalogError, match="free -> enterprise -> pro -> free"):
        load_catalog(edit("tier = 0\n", 'tier = 0\ninherits = "enterprise"\n'))


def test_lower_limit_message_names_the_parent_plan() -> None:
    with pytest.raises(CatalogError, match="5 is lower than 10 in 'free'"):
        load_catalog(edit("limits = { maxUsers = 200 }", "limits = { maxUsers = 5 }"))


def test_missing_catalog_file_raises_os_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_catalog(tmp_path / "missing.toml")


def test_catalog_can_be_built_directly() -> None:
    plan = CATALOG.plan("free")
    catalog = Catalog((plan,), {}, {}, {})
    assert catalog.plan("free") is plan
    assert catalog.default_plan is plan
