"""Per-account overrides: custom limits and feature grants or revocations on top of a plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from entitlements.errors import InvalidArgument
from entitlements.policies.catalog import Catalog


def _no_limits() -> Mapping[str, int | None]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Overrides:
    """What an account gets beyond (or instead of) its plan; a limit of None is unlimited."""

    limits: Mapping[str, int | None] = field(default_factory=_no_limits)
    granted_features: frozenset[str] = frozenset()
    revoked_features: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Copies, so a caller keeping the dict or set it passed in cannot change a frozen value.
        object.__setattr__(self, "limits", MappingProxyType(dict(self.limits)))
        object.__setattr__(self, "granted_features", frozenset(self.granted_features))
        object.__setattr__(self, "revoked_features", frozenset(self.revoked_features))

    def __hash__(self) -> int:
        return hash((frozenset(self.limits.items()), self.granted_features, self.revoked_features))

    @property
    def is_empty(self) -> bool:
        return not (self.limits or self.granted_features or self.revoked_features)


def validate_overrides(catalog: Catalog, overrides: Overrides) -> None:
    """Raise InvalidArgument (or a subclass) naming the `overrides.*` field of the first problem."""
    for key, value in overrides.limits.items():
        catalog.limit(key, field="overrides.limits")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument("overrides.limits", f"{key}: must be an integer or unlimited")
        if value < 0:
            raise InvalidArgument("overrides.limits", f"{key}: must not be negative, got {value}")
    for key in sorted(overrides.granted_features):
        catalog.feature(key, field="overrides.granted_features")
    for key in sorted(overrides.revoked_features):
        catalog.feature(key, field="overrides.revoked_features")
    both = overrides.granted_features & overrides.revoked_features
    if both:
        raise InvalidArgument(
            "overrides.revoked_features", f"both granted and revoked: {', '.join(sorted(both))}"
        )
