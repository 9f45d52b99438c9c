"""Local evaluation: the entitlements of the accounts a client asked about, kept fresh by one
WatchEntitlements stream, and the feature and limit rules applied to them in memory.

`LocalStore` is shared by the sync client (its stream runs in a daemon thread) and the asyncio
one (its stream runs in a task); it holds no I/O, only state behind a lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from nchat.entitlements.client import _convert
from nchat.entitlements.client._exceptions import InvalidArgument
from nchat.entitlements.client._models import (
    Entitlements,
    FeatureCheck,
    FeatureDecisionReason,
    LimitCheck,
    LocalState,
    PlanCatalog,
    SubscriptionStatus,
    UsageLevel,
)
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb

#: The most accounts one WatchEntitlements request may name (the server's limit).
MAX_WATCHED_ACCOUNTS = 10_000

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


@dataclass(frozen=True, slots=True)
class _Entry:
    entitlements: Entitlements
    #: Epoch seconds after which the entry's answer may have changed by time alone (a grace period
    #: or a paid period ends); the server does not push such changes, so it is refreshed.
    valid_until: float
    #: Epoch seconds when the stream delivered it.
    received_at: float


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def _valid_until(ent: Entitlements, now: float) -> float:
    ends: list[datetime] = []
    if ent.subscription_status == SubscriptionStatus.PAST_DUE and ent.grace_period_end:
        ends.append(ent.grace_period_end)
    if ent.current_period_end and (ent.cancel_at_period_end or ent.payment_method == "crypto"):
        ends.append(ent.current_period_end)
    # An end already past when the state was read is part of that state (the server applied it).
    future = [end.timestamp() for end in ends if end.timestamp() > now]
    return min(future) if future else math.inf


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


class LocalStore:
    """Entitlements by account, applied from the watch stream in revision order.

    An account is answered locally only while it is *covered*: the live stream delivered its state
    and watches it. `request_reopen` (set by the driver) is called, outside the lock, when the
    stream should be opened again: new accounts to watch, or an entry whose answer may have
    changed by time alone.
    """

    def __init__(
        self,
        *,
        max_accounts: int = MAX_WATCHED_ACCOUNTS,
        resync_interval: float = 300.0,
        max_stale: float = 300.0,
    ) -> None:
        self._lock = threading.Lock()
        self._max_accounts = min(max_accounts, MAX_WATCHED_ACCOUNTS)
        self._resync_interval = resync_interval
        self._max_stale = max_stale
        self._entries: dict[str, _Entry] = {}
        self._wanted: dict[str, None] = {}  # insertion-ordered set
        self._stream_accounts: frozenset[str] = frozenset()
        self._covered: set[str] = set()
        self._initial_pending: set[str] = set()
        self._catalog: PlanCatalog | None = None
        self._feature_keys: frozenset[str] = frozenset()
        self._limit_keys: frozenset[str] = frozenset()
        self._connected = False
        self._opened_at = 0.0  # monotonic
        self._down_since: float | None = None  # monotonic; None while connected
        self._ever_connected = False
        self._last_event_at: float | None = None
        self._reopens = 0
        self._rpc_fallbacks = 0
        self._local_answers = 0
        self._last_error = ""
        self.request_reopen: Callable[[], None] = lambda: None

    # --- the driver's side ---------------------------------------------------------------

    @property
    def catalog(self) -> PlanCatalog | None:
        return self._catalog

    def set_catalog(self, catalog: PlanCatalog) -> None:
        self._feature_keys = frozenset(f.key for f in catalog.features)
        self._limit_keys = frozenset(lim.key for plan in catalog.plans for lim in plan.limits)
        self._catalog = catalog

    def accounts_to_watch(self) -> list[str]:
        with self._lock:
            return list(self._wanted)

    def stream_opened(self, accounts: Iterable[str]) -> None:
        """A new stream for `accounts` (with send_initial) was opened."""
        with self._lock:
            self._stream_accounts = frozenset(accounts)
            self._initial_pending = set(self._stream_accounts)
            # Accounts the previous stream covered stay covered during a planned reopen: the new
            # stream subscribes before it reads their state, so nothing falls in between.
            self._covered &= self._stream_accounts
            self._opened_at = time.monotonic()
            self._reopens += 1

    def on_message(self, msg: ent_pb.WatchEntitlementsResponse) -> None:
        if msg.WhichOneof("event") != "entitlements":
            with self._lock:
                self._last_event_at = time.time()
            return
        ent = _convert.entitlements(msg.entitlements)
        now = time.time()
        with self._lock:
            self._last_event_at = now
            account = ent.account_id
            current = self._entries.get(account)
            # Apply only a newer state; an equal revision replaces too, since a resync can bring
            # a state whose answer changed by time alone (revisions count writes, not time).
            if current is None or ent.revision >= current.entitlements.revision:
                self._entries[account] = _Entry(ent, _valid_until(ent, now), now)
            if account in self._stream_accounts:
                self._covered.add(account)
            self._initial_pending.discard(account)
            if not self._initial_pending and not self._connected:
                self._connected = True
                self._ever_connected = True
                self._down_since = None
                self._last_error = ""

    def stream_down(self, error: str) -> None:
        """The stream broke (not a planned reopen): nothing is answered locally until it is back."""
        with self._lock:
            if self._connected or self._down_since is None:
                self._down_since = time.monotonic()
            self._connected = False
            self._covered.clear()
            self._stream_accounts = frozenset()
            self._last_error = error

    # --- the caller's side ---------------------------------------------------------------

    def want(self, account_id: str) -> None:
        """Watch `account_id` from now on (up to the account cap; beyond it, RPC answers)."""
        with self._lock:
            if account_id in self._wanted or len(self._wanted) >= self._max_accounts:
                return
            self._wanted[account_id] = None
        self.request_reopen()

    def _usable(self, account_id: str) -> _Entry | None:
        """The entry, if it may answer locally now (caller holds the lock)."""
        if account_id not in self._covered:
            return None
        entry = self._entries.get(account_id)
        if entry is None:
            return None
        if time.time() >= entry.valid_until:
            return None
        return entry

    def _needs_resync(self, entry_expired: bool) -> bool:
        return entry_expired or (
            self._connected and time.monotonic() - self._opened_at > self._resync_interval
        )

    def feature(
        self, account_id: str, feature: str, *, stale: bool = False, min_revision: int = 0
    ) -> FeatureCheck | None:
        """The local answer, or None when the account must be asked over RPC (also when the
        local copy is older than `min_revision`).

        `stale=True` (the RPC failed as unavailable): any known state not older than `max_stale`.
        """
        catalog = self._catalog
        if catalog is None:
            return None
        if feature not in self._feature_keys:
            raise InvalidArgument(
                f"unknown feature {feature!r}",
                field="feature",
                reason="ERROR_REASON_UNKNOWN_FEATURE",
            )
        resync = False
        with self._lock:
            entry = self._stale(account_id) if stale else self._usable(account_id)
            behind = entry is not None and entry.entitlements.revision < min_revision
            if behind:
                # Not fresh enough: the server answers (reading through for it); the stream
                # pushes the newer revision here on its own, so no resync is needed.
                entry = None
            if entry is None:
                self._rpc_fallbacks += not stale
                known = self._entries.get(account_id)
                resync = (
                    not stale and not behind and known is not None and account_id in self._covered
                )
            else:
                self._local_answers += 1
                resync = self._needs_resync(False)
        if resync:
            self.request_reopen()
        if entry is None:
            return None
        ent = entry.entitlements
        allowed, upgrade, reason = evaluate_feature(catalog, ent, feature)
        message = _MESSAGES[reason].format(plan=ent.plan_id, feature=feature)
        if upgrade:
            message += f"; upgrade to {upgrade}"
        return FeatureCheck(
            allowed=allowed,
            plan_id=ent.plan_id,
            upgrade_plan_id=upgrade,
            reason=reason,
            revision=ent.revision,
            message=message,
            source="stale" if stale else "local",
            as_of=_utc(entry.received_at),
        )

    def limit(
        self,
        account_id: str,
        limit_key: str,
        current: int,
        *,
        stale: bool = False,
        min_revision: int = 0,
    ) -> LimitCheck | None:
        """The local judgement of the caller's `current` against the account's limit, or None."""
        catalog = self._catalog
        if catalog is None:
            return None
        if limit_key not in self._limit_keys:
            raise InvalidArgument(
                f"unknown limit {limit_key!r}", field="limit", reason="ERROR_REASON_UNKNOWN_LIMIT"
            )
        if current < 0:
            raise InvalidArgument(f"must be zero or more, got {current}", field="current")
        with self._lock:
            entry = self._stale(account_id) if stale else self._usable(account_id)
            if entry is not None and entry.entitlements.revision < min_revision:
                entry = None
            if entry is None:
                self._rpc_fallbacks += not stale
            else:
                self._local_answers += 1
        if entry is None:
            return None
        ent = entry.entitlements
        found = ent.limit(limit_key)
        if found is None:
            return None
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
            source="stale" if stale else "local",
            as_of=_utc(entry.received_at),
        )

    def _stale(self, account_id: str) -> _Entry | None:
        entry = self._entries.get(account_id)
        if entry is None or time.time() >= entry.valid_until:
            return None
        if self._connected and account_id in self._covered:
            return entry
        if self._down_since is None or time.monotonic() - self._down_since > self._max_stale:
            return None
        return entry

    def entitlements(self, account_id: str) -> Entitlements | None:
        with self._lock:
            entry = self._usable(account_id)
        return entry.entitlements if entry else None

    def state(self) -> LocalState:
        with self._lock:
            if self._connected:
                bound = 0.0
            elif self._down_since is None:
                bound = math.inf
            else:
                bound = time.monotonic() - self._down_since
            if not self._ever_connected:
                bound = math.inf
            return LocalState(
                enabled=True,
                connected=self._connected,
                accounts=len(self._entries),
                last_event_at=self._last_event_at,
                staleness_bound_seconds=bound,
                reconnects=max(self._reopens - 1, 0),
                rpc_fallbacks=self._rpc_fallbacks,
                local_answers=self._local_answers,
                last_error=self._last_error,
            )


DISABLED = LocalState(
    enabled=False,
    connected=False,
    accounts=0,
    last_event_at=None,
    staleness_bound_seconds=math.inf,
)
