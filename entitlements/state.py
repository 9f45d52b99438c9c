"""An account's entitlements at one revision, derived from its stored subscription and overrides.

The status rules (documented in the README):
- ``active`` and ``trialing`` grant the subscribed plan;
- ``past_due`` keeps the plan for the grace period (``ENTITLEMENTS_PAST_DUE_GRACE_DAYS``, counted
  from when the subscription became past due), then the account falls back to free;
- ``canceled``, ``unpaid``, ``incomplete``, ``incomplete_expired`` and ``paused`` mean free;
- ``cancel_at_period_end`` keeps the plan until the period ends, then free;
- a subscription paid in crypto has no automatic renewal: it grants the plan until its period ends;
  so does a manual (sales-led) one, until its term ends (an open-ended term never lapses).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from entitlements.policies import Catalog, EffectiveEntitlements, Overrides, resolve
from entitlements.store.records import AccountSnapshot, OverrideRecord, SubscriptionRecord

GRANTING_STATUSES = frozenset({"active", "trialing"})
#: Payment methods that never renew by themselves: the plan lapses at `current_period_end`.
FIXED_TERM_METHODS = frozenset({"crypto", "manual"})
KNOWN_STATUSES = frozenset(
    {
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "canceled",
        "unpaid",
        "paused",
    }
)


class SubscriptionView(NamedTuple):
    """What the cache keeps of an account's subscription: only what answers need, with the
    repeated short strings interned, so 100,000 cached accounts fit well under 100 MB."""

    id: str
    plan_id: str
    status: str
    interval: str
    payment_method: str
    current_period_end: datetime | None
    cancel_at_period_end: bool

    @classmethod
    def of(cls, record: SubscriptionRecord) -> SubscriptionView:
        return cls(
            record.id,
            sys.intern(record.plan_id),
            sys.intern(record.status),
            sys.intern(record.interval),
            sys.intern(record.payment_method),
            record.current_period_end,
            record.cancel_at_period_end,
        )


@dataclass(frozen=True, slots=True)
class AccountEntitlements:
    """What one account may do, and until when that answer holds without a reload."""

    account_id: str
    revision: int
    effective: EffectiveEntitlements
    subscription: SubscriptionView | None
    #: The subscription's status, or "none" when the account has no subscription.
    status: str
    grace_period_end: datetime | None
    #: The next moment the answer changes by time alone (a grace period or paid period ends, an
    #: override expires); None when nothing is scheduled.
    valid_until: datetime | None
    #: When the state was read from the database: every change committed before it is included
    #: (answers report it as `as_of`). None for a value not read from a database.
    as_of: datetime | None = None
    #: `as_of` as a protobuf Timestamp's (seconds, nanos), computed once here: every answer
    #: carries it, and converting a datetime costs more than the rest of a cached answer.
    as_of_parts: tuple[int, int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "as_of_parts", timestamp_parts(self.as_of))

    @property
    def plan_id(self) -> str:
        return self.effective.plan.id


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_parts(value: datetime | None) -> tuple[int, int] | None:
    """(seconds, nanos) since the epoch, as google.protobuf.Timestamp.FromDatetime computes them
    (a naive datetime is taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    return seconds, delta.microseconds * 1000


def derive(
    catalog: Catalog,
    account_id: str,
    snapshot: AccountSnapshot | None,
    *,
    now: datetime,
    past_due_grace: timedelta,
    as_of: datetime | None = None,
) -> AccountEntitlements:
    """Compute an account's entitlements at ``now`` from what the store holds (read from the
    database at ``as_of``, default ``now``)."""
    if as_of is None:
        as_of = now
    if snapshot is None:
        return AccountEntitlements(
            account_id=account_id,
            revision=0,
            effective=resolve(catalog, catalog.default_plan_id),
            subscription=None,
            status="none",
            grace_period_end=None,
            valid_until=None,
            as_of=as_of,
        )
    subscription = snapshot.subscription
    plan_id, grace_end, plan_until = _granted_plan(catalog, subscription, now, past_due_grace)
    overrides, overrides_until = _active_overrides(snapshot.overrides, now)
    changes = [t for t in (plan_until, overrides_until) if t is not None]
    return AccountEntitlements(
        account_id=account_id,
        revision=snapshot.revision,
        effective=resolve(catalog, plan_id, overrides),
        subscription=SubscriptionView.of(subscription) if subscription is not None else None,
        status=sys.intern(subscription.status) if subscription is not None else "none",
        grace_period_end=grace_end,
        valid_until=min(changes) if changes else None,
        as_of=as_of,
    )


def grants_plan(
    catalog: Catalog, sub: SubscriptionRecord, *, now: datetime, past_due_grace: timedelta
) -> bool:
    """True if `sub` grants its plan at `now` by the rules above (revenue analytics use it)."""
    free = catalog.default_plan_id
    return sub.plan_id != free and _granted_plan(catalog, sub, now, past_due_grace)[0] != free


def _granted_plan(
    catalog: Catalog,
    sub: SubscriptionRecord | None,
    now: datetime,
    past_due_grace: timedelta,
) -> tuple[str, datetime | None, datetime | None]:
    """(plan granted now, grace period end, when that grant lapses by time alone)."""
    free = catalog.default_plan_id
    if sub is None or sub.plan_id not in {p.id for p in catalog.plans}:
        return free, None, None
    lapses_at: datetime | None = None
    if sub.cancel_at_period_end or sub.payment_method in FIXED_TERM_METHODS:
        lapses_at = sub.current_period_end
    grace_end: datetime | None = None
    if sub.status in GRANTING_STATUSES:
        granted = True
    elif sub.status == "past_due":
        grace_end = (sub.past_due_since or sub.updated_at) + past_due_grace
        granted = now < grace_end
        lapses_at = grace_end if lapses_at is None else min(lapses_at, grace_end)
    else:
        granted = False
    if granted and lapses_at is not None and now >= lapses_at:
        granted = False
    if not granted:
        return free, grace_end, None
    return sub.plan_id, grace_end, lapses_at


def _active_overrides(
    records: tuple[OverrideRecord, ...], now: datetime
) -> tuple[Overrides | None, datetime | None]:
    limits: dict[str, int | None] = {}
    granted: set[str] = set()
    revoked: set[str] = set()
    expiries: list[datetime] = []
    for record in records:
        if record.expires_at is not None:
            if record.expires_at <= now:
                continue
            expiries.append(record.expires_at)
        if record.kind == "limit":
            limits[record.key] = record.value
        elif record.kind == "feature_grant":
            granted.add(record.key)
        elif record.kind == "feature_revoke":
            revoked.add(record.key)
    if not (limits or granted or revoked):
        return None, None
    overrides = Overrides(
        limits=_frozen(limits),
        granted_features=frozenset(granted),
        revoked_features=frozenset(revoked),
    )
    return overrides, min(expiries) if expiries else None


def _frozen(mapping: dict[str, int | None]) -> Mapping[str, int | None]:
    from types import MappingProxyType

    return MappingProxyType(mapping)
