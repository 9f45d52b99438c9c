"""The plan catalog: plans, features, limits and metrics as immutable, validated data.

`default_catalog()` is the packaged `catalog.toml`; `load_catalog()` reads any other one.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import pathlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeVar

from entitlements.errors import (
    CatalogError,
    UnknownFeature,
    UnknownLimit,
    UnknownMetric,
    UnknownPlan,
)

#: How catalog.toml spells a limit with no bound; in Python it is None.
UNLIMITED: Final = "unlimited"
#: The plan of an account the service has never seen, unless the catalog names another.
DEFAULT_PLAN_ID: Final = "free"
#: The CatalogError key for a document that is not TOML at all.
DOCUMENT_KEY: Final = "<document>"

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    """A feature a plan can include; `minimum_plan_id` is the lowest plan that has it."""

    key: str
    name: str
    description: str
    minimum_plan_id: str


@dataclass(frozen=True, slots=True)
class LimitInfo:
    """A limit key; `metric` is the usage metric it bounds, None for a per-use bound."""

    key: str
    metric: str | None
    unit: str
    monthly: bool


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """A usage metric: monthly metrics count per UTC calendar month, the others are gauges."""

    name: str
    limit_key: str
    monthly: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan with its effective features and limits (inherited ones included; None = unlimited)."""

    id: str
    name: str
    tier: int
    inherits: str | None
    price_monthly_cents: int | None
    price_yearly_cents: int | None
    custom_pricing: bool
    own_features: frozenset[str]
    features: frozenset[str]
    limits: Mapping[str, int | None]

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", _frozen(self.limits))

    def __hash__(self) -> int:
        # The generated hash would fail on the read-only `limits` mapping; id and tier suffice.
        return hash((self.id, self.tier))


@dataclass(frozen=True, slots=True, eq=False)
class Catalog:
    """Every plan in tier order, with the features, limits and metrics they use.

    Compared and hashed by identity, so per-catalog caches can key on it.
    """

    plans: tuple[Plan, ...]
    features: Mapping[str, FeatureInfo]
    limits: Mapping[str, LimitInfo]
    metrics: Mapping[str, MetricInfo]
    default_plan_id: str = DEFAULT_PLAN_ID
    _plans_by_id: Mapping[str, Plan] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", _frozen(self.features))
        object.__setattr__(self, "limits", _frozen(self.limits))
        object.__setattr__(self, "metrics", _frozen(self.metrics))
        object.__setattr__(self, "_plans_by_id", MappingProxyType({p.id: p for p in self.plans}))

    @property
    def default_plan(self) -> Plan:
        return self.plan(self.default_plan_id)

    def plan(self, plan_id: str, *, field: str = "plan_id") -> Plan:
        """The plan `plan_id`; UnknownPlan naming `field` if there is none."""
        try:
            return self._plans_by_id[plan_id]
        except KeyError:
            raise UnknownPlan(field, plan_id) from None

    def feature(self, key: str, *, field: str = "feature") -> FeatureInfo:
        """The feature `key`; UnknownFeature naming `field` if there is none."""
        try:
            return self.features[key]
        except KeyError:
            raise UnknownFeature(field, key) from None

    def limit(self, key: str, *, field: str = "limit") -> LimitInfo:
        """The limit `key`; UnknownLimit naming `field` if there is none."""
        try:
            return self.limits[key]
        except KeyError:
            raise UnknownLimit(field, key) from None

    def metric(self, name: str, *, field: str = "metric") -> MetricInfo:
        """The usage metric `name`; UnknownMetric naming `field` if there is none."""
        try:
            return self.metrics[name]
        except KeyError:
            raise UnknownMetric(field, name) from None


@functools.cache
def default_catalog() -> Catalog:
    """The catalog packaged with the service, read and validated once."""
    data = importlib.resources.files(__package__).joinpath("catalog.toml").read_bytes()
    return load_catalog(data)


def load_catalog(source: str | bytes | pathlib.Path) -> Catalog:
    """Parse and validate a catalog: `str`/`bytes` are TOML text, a `Path` is a file to read.

    Raises CatalogError whose `key` is the dotted path of the first bad entry
    (`plans.pro.limits.maxUsers`); OSError from reading a path propagates unchanged.
    """
    doc = _parse(source)
    _check_keys(doc, "", allowed=_TOP_KEYS, required=("features", "limits", "plans"))
    declared_features = _parse_features(_table(doc["features"], "features"))
    limits = _parse_limits(_table(doc["limits"], "limits"))
    raw_plans = _parse_plans(_table(doc["plans"], "plans"), declared_features, limits)
    plans = _build_plans(_tier_order(raw_plans), limits)

    minimum_plan: dict[str, str] = {}
    for plan in plans:
        for key in plan.own_features:
            minimum_plan[key] = plan.id
    features: dict[str, FeatureInfo] = {}
    for key, (name, description) in declared_features.items():
        if key not in minimum_plan:
            raise CatalogError(f"features.{key}", "declared but no plan includes it")
        features[key] = FeatureInfo(key, name, description, minimum_plan[key])

    default_plan_id = _string(doc.get("default_plan", DEFAULT_PLAN_ID), "default_plan")
    if default_plan_id not in raw_plans:
        raise CatalogError("default_plan", f"the default plan {default_plan_id!r} is not defined")

    metrics = {
        info.metric: MetricInfo(info.metric, info.key, info.monthly)
        for info in limits.values()
        if info.metric is not None
    }
    return Catalog(plans, features, limits, metrics, default_plan_id)


# --- parsing and validation -------------------------------------------------------------------

_TOP_KEYS: Final = frozenset({"default_plan", "features", "limits", "plans"})
_FEATURE_KEYS: Final = frozenset({"name", "description"})
_LIMIT_KEYS: Final = frozenset({"metric", "unit", "monthly"})
_PLAN_KEYS: Final = frozenset(
    {
        "name",
        "tier",
        "inherits",
        "custom_pricing",
        "price_monthly_cents",
        "price_yearly_cents",
        "features",
        "limits",
    }
)
_PRICE_KEYS: Final = ("price_monthly_cents", "price_yearly_cents")

_PLAN_ID: Final = re.compile(r"[a-z][a-z0-9_-]*")
_FEATURE_KEY: Final = re.compile(r"[a-z][A-Za-z0-9]*")
_LIMIT_KEY: Final = re.compile(r"max[A-Z][A-Za-z0-9]*")
_METRIC_NAME: Final = re.compile(r"[a-z][A-Za-z0-9]*")


@dataclass(frozen=True, slots=True)
class _RawPlan:
    """One [plans.<id>] table after shape checks, before inheritance is applied."""

    id: str
    name: str
    tier: int
    inherits: str | None
    price_monthly_cents: int | None
    price_yearly_cents: int | None
    custom_pricing: bool
    features: tuple[str, ...]
    limits: dict[str, int | None]


def _parse(source: str | bytes | pathlib.Path) -> dict[str, Any]:
    data = source.read_bytes() if isinstance(source, pathlib.Path) else source
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CatalogError(DOCUMENT_KEY, f"not UTF-8: {exc}") from exc
    try:
        return tomllib.loads(data)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(DOCUMENT_KEY, f"not valid TOML: {exc}") from exc


def _parse_features(table: dict[str, object]) -> dict[str, tuple[str, str]]:
    features: dict[str, tuple[str, str]] = {}
    for key, value in table.items():
        path = f"features.{key}"
        _check_name(key, path, _FEATURE_KEY, "a feature key is camelCase letters and digits")
        entry = _table(value, path)
        _check_keys(entry, path, allowed=_FEATURE_KEYS, required=("name", "description"))
        name = _string(entry["name"], f"{path}.name")
        description = _string(entry["description"], f"{path}.description", allow_empty=True)
        features[key] = (name, description)
    return features


def _parse_limits(table: dict[str, object]) -> dict[str, LimitInfo]:
    limits: dict[str, LimitInfo] = {}
    for key, value in table.items():
        path = f"limits.{key}"
        _check_name(key, path, _LIMIT_KEY, "a limit key is `max` + the metric's name")
        entry = _table(value, path)
        _check_keys(entry, path, allowed=_LIMIT_KEYS, required=("unit", "monthly"))
        metric = None
        if "metric" in entry:
            metric = _string(entry["metric"], f"{path}.metric")
            _check_name(metric, f"{path}.metric", _METRIC_NAME, "a metric is camelCase")
            expected = "max" + metric[0].upper() + metric[1:]
            if key != expected:
                raise CatalogError(f"{path}.metric", f"limit for {metric!r} must be {expected!r}")
        unit = _string(entry["unit"], f"{path}.unit")
        monthly = _boolean(entry["monthly"], f"{path}.monthly")
        if monthly and metric is None:
            raise CatalogError(f"{path}.monthly", "only a limit on a metric can be monthly")
        limits[key] = LimitInfo(key, metric, unit, monthly)
    return limits


def _parse_plans(
    table: dict[str, object],
    declared_features: Mapping[str, object],
    limits: Mapping[str, LimitInfo],
) -> dict[str, _RawPlan]:
    if not table:
        raise CatalogError("plans", "no plans defined")
    plans: dict[str, _RawPlan] = {}
    for plan_id, value in table.items():
        path = f"plans.{plan_id}"
        _check_name(plan_id, path, _PLAN_ID, "a plan id is lower-case letters, digits, - and _")
        entry = _table(value, path)
        _check_keys(entry, path, allowed=_PLAN_KEYS, required=("name", "tier"))

        custom_pricing = _boolean(entry.get("custom_pricing", False), f"{path}.custom_pricing")
        prices: list[int | None] = []
        for key in _PRICE_KEYS:
            if custom_pricing:
                if key in entry:
                    raise CatalogError(f"{path}.{key}", "a custom-priced plan has no list price")
                prices.append(None)
            elif key not in entry:
                raise CatalogError(f"{path}.{key}", "missing (or set custom_pricing = true)")
            else:
                prices.append(_non_negative(entry[key], f"{path}.{key}"))

        features: list[str] = []
        for item in _array(entry.get("features", []), f"{path}.features"):
            if not isinstance(item, str):
                raise CatalogError(
                    f"{path}.features", f"entries must be strings, not {_kind(item)}"
                )
            if item not in declared_features:
                raise CatalogError(
                    f"{path}.features.{item}", "undeclared feature (add [features.*])"
                )
            if item in features:
                raise CatalogError(f"{path}.features.{item}", "listed twice")
            features.append(item)

        plan_limits: dict[str, int | None] = {}
        for key, limit in _table(entry.get("limits", {}), f"{path}.limits").items():
            if key not in limits:
                raise CatalogError(f"{path}.limits.{key}", "undeclared limit (add [limits.*])")
            plan_limits[key] = _limit_value(limit, f"{path}.limits.{key}")

        inherits = entry.get("inherits")
        plans[plan_id] = _RawPlan(
            id=plan_id,
            name=_string(entry["name"], f"{path}.name"),
            tier=_integer(entry["tier"], f"{path}.tier"),
            inherits=None if inherits is None else _string(inherits, f"{path}.inherits"),
            price_monthly_cents=prices[0],
            price_yearly_cents=prices[1],
            custom_pricing=custom_pricing,
            features=tuple(features),
            limits=plan_limits,
        )
    return plans


def _tier_order(plans: Mapping[str, _RawPlan]) -> list[_RawPlan]:
    """Check that the plans form one inheritance chain in tier order; return it lowest first."""
    for plan in plans.values():
        if plan.inherits is not None and plan.inherits not in plans:
            raise CatalogError(f"plans.{plan.id}.inherits", f"unknown plan {plan.inherits!r}")

    for plan in plans.values():
        walk: list[str] = []
        current: str | None = plan.id
        while current is not None:
            if current in walk:
                cycle = [*walk[walk.index(current) :], current]
                raise CatalogError(
                    f"plans.{current}.inherits", "inheritance cycle: " + " -> ".join(cycle)
                )
            walk.append(current)
            current = plans[current].inherits

    holders: dict[int, str] = {}
    for plan in plans.values():
        if plan.tier in holders:
            raise CatalogError(
                f"plans.{plan.id}.tier", f"tier {plan.tier} is also plan {holders[plan.tier]!r}'s"
            )
        holders[plan.tier] = plan.id

    for plan in plans.values():
        if plan.inherits is not None and plans[plan.inherits].tier >= plan.tier:
            parent = plans[plan.inherits]
            raise CatalogError(
                f"plans.{plan.id}.tier",
                f"tier {plan.tier} is not above its parent {parent.id!r}'s tier {parent.tier}",
            )

    ordered = sorted(plans.values(), key=lambda p: p.tier)
    # The lowest plan cannot inherit: its parent would have a lower tier, rejected above.
    for below, plan in itertools.pairwise(ordered):
        if plan.inherits is None:
            raise CatalogError(
                f"plans.{plan.id}.inherits",
                f"missing: every plan but the lowest inherits the plan below it ({below.id!r})",
            )
        if plan.inherits != below.id:
            raise CatalogError(
                f"plans.{plan.id}.inherits",
                f"must be the plan directly below it ({below.id!r}), not {plan.inherits!r}",
            )
    return ordered


def _build_plans(ordered: Iterable[_RawPlan], limits: Mapping[str, LimitInfo]) -> tuple[Plan, ...]:
    """Apply inheritance down the chain, checking that no plan loses anything its parent has."""
    built: list[Plan] = []
    parent: Plan | None = None
    for raw in ordered:
        path = f"plans.{raw.id}"
        inherited = parent.features if parent is not None else frozenset[str]()
        for key in raw.features:
            if key in inherited:
                raise CatalogError(f"{path}.features.{key}", "already inherited from a lower plan")

        effective: dict[str, int | None] = {}
        for key in limits:
            if key in raw.limits:
                value = raw.limits[key]
                if parent is not None and _is_lower(value, parent.limits[key]):
                    raise CatalogError(
                        f"{path}.limits.{key}",
                        f"{_show(value)} is lower than {_show(parent.limits[key])} in "
                        f"{parent.id!r}: a higher plan never gets less",
                    )
                effective[key] = value
            elif parent is not None:
                effective[key] = parent.limits[key]
            else:
                raise CatalogError(
                    f"{path}.limits.{key}", "missing: the lowest plan sets every limit"
                )

        plan = Plan(
            id=raw.id,
            name=raw.name,
            tier=raw.tier,
            inherits=raw.inherits,
            price_monthly_cents=raw.price_monthly_cents,
            price_yearly_cents=raw.price_yearly_cents,
            custom_pricing=raw.custom_pricing,
            own_features=frozenset(raw.features),
            features=inherited | frozenset(raw.features),
            limits=MappingProxyType(effective),
        )
        built.append(plan)
        parent = plan
    return tuple(built)


def _is_lower(value: int | None, parent_value: int | None) -> bool:
    if value is None:
        return False
    return parent_value is None or value < parent_value


def _show(value: int | None) -> str:
    return UNLIMITED if value is None else str(value)


def _check_keys(
    table: Mapping[str, object], path: str, *, allowed: frozenset[str], required: Iterable[str]
) -> None:
    prefix = f"{path}." if path else ""
    for key in table:
        if key not in allowed:
            raise CatalogError(
                f"{prefix}{key}", f"unknown key (expected one of {', '.join(sorted(allowed))})"
            )
    for key in required:
        if key not in table:
            raise CatalogError(f"{prefix}{key}", "missing")


def _check_name(name: str, path: str, pattern: re.Pattern[str], rule: str) -> None:
    if not pattern.fullmatch(name):
        raise CatalogError(path, f"invalid name {name!r}: {rule}")


def _kind(value: object) -> str:
    # TOML's names for the types tomllib returns.
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _table(value: object, path: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise CatalogError(path, f"must be a table, not {_kind(value)}")
    return value


def _array(value: object, path: str) -> list[object]:
    if not isinstance(value, list):
        raise CatalogError(path, f"must be an array, not {_kind(value)}")
    return value


def _string(value: object, path: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise CatalogError(path, f"must be a string, not {_kind(value)}")
    if not value and not allow_empty:
        raise CatalogError(path, "must not be empty")
    return value


def _boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise CatalogError(path, f"must be a boolean, not {_kind(value)}")
    return value


def _integer(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(path, f"must be an integer, not {_kind(value)}")
    return value


def _non_negative(value: object, path: str) -> int:
    number = _integer(value, path)
    if number < 0:
        raise CatalogError(path, f"must not be negative, got {number}")
    return number


def _limit_value(value: object, path: str) -> int | None:
    if value == UNLIMITED:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(
            path, f'must be a non-negative integer or "{UNLIMITED}", not {_kind(value)}'
        )
    return _non_negative(value, path)


def _frozen(mapping: Mapping[_K, _V]) -> Mapping[_K, _V]:
    # A copy, so a caller keeping the dict it passed in cannot change a frozen value.
    return MappingProxyType(dict(mapping))
