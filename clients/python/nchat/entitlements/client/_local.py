"""Local evaluation: the entitlements of the accounts a client asked about, kept fresh by one
WatchEntitlements stream, and the feature and limit rules applied to them in memory.

`LocalStore` is shared by the sync client (its stream runs in a daemon thread) and the asyncio
one (its stream runs in a task); it holds no I/O, only state behind a lock.

The hot path allocates nothing and takes no lock: when an account's entitlements arrive, every
feature's answer is prepared as an immutable `FeatureCheck` (`LocalEntry.features`), and the entries
allowed to answer now sit in one dict (`LocalStore._answers`) that is replaced per account, never
mutated in place. A check is two dict lookups and one clock comparison (`LocalEntry.deadline`);
anything unusual (a miss, an expired entry, a resync due) takes the locked slow path.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from nchat.entitlements.client import _convert
from nchat.entitlements.client._exceptions import InvalidArgument
from nchat.entitlements.client._models import (
    Entitlements,
    FeatureCheck,
    Limit,
    LimitCheck,
    LocalState,
    PlanCatalog,
    SubscriptionStatus,
)
from nchat.entitlements.client._rules import limit_check, prepare_features
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb

#: The most accounts one WatchEntitlements request may name (the server's limit).
MAX_WATCHED_ACCOUNTS = 10_000

#: How long a state fetched by RPC after a miss answers locally before the stream delivers it.
#: The stream (reopened for the account at once) subscribes before it reads the account's state,
#: so a change made after the fetch reaches the client in that state or right after it; this
#: bound only matters when the stream does not come up, and then the RPC answers again.
PROVISIONAL_SECONDS = 0.5

_now = time.time


@dataclass(frozen=True, slots=True)
class LocalEntry:
    """One account's state and its prepared answers.

    A revision gate (`min_revision`) is one comparison on a prepared answer: every
    `FeatureCheck` in `features` carries the entry's `revision`.
    """

    entitlements: Entitlements
    #: Epoch seconds after which the entry's answer may have changed by time alone (a grace period
    #: or a paid period ends); the server does not push such changes, so it is refreshed.
    valid_until: float
    #: Epoch seconds when it arrived (stream or RPC).
    received_at: float
    #: Every catalog feature's answer, source="local".
    features: Mapping[str, FeatureCheck]
    #: The account's limits by key.
    limits: Mapping[str, Limit]
    #: Epoch seconds until which the hot path may answer from it: `valid_until`, capped by the
    #: stream's resync time or, for a provisional entry, by PROVISIONAL_SECONDS after the fetch.
    deadline: float
    #: Fetched by RPC after a miss; not (yet) delivered by the live stream.
    provisional: bool = False

    @property
    def revision(self) -> int:
        return self.entitlements.revision


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


class LocalStore:
    """Entitlements by account, applied from the watch stream in revision order.

    An account is answered locally only while it is *covered* (the live stream delivered its
    state and watches it) or, for PROVISIONAL_SECONDS, after a miss fetched its state by RPC
    while the stream is being reopened for it. `request_reopen` (set by the driver) is called,
    outside the lock, when the stream should be opened again: new accounts to watch, or an entry
    whose answer may have changed by time alone.
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
        #: The latest state of every account ever delivered (stale answers come from here).
        self._entries: dict[str, LocalEntry] = {}
        #: The entries that may answer now; read without the lock by the hot path, so only ever
        #: changed by assigning or removing a whole entry.
        self._answers: dict[str, LocalEntry] = {}
        self._wanted: dict[str, None] = {}  # insertion-ordered set
        self._stream_accounts: frozenset[str] = frozenset()
        self._covered: set[str] = set()
        self._initial_pending: set[str] = set()
        self._catalog: PlanCatalog | None = None
        self._feature_keys: frozenset[str] = frozenset()
        self._limit_keys: frozenset[str] = frozenset()
        self._connected = False
        self._resync_at = math.inf  # epoch seconds: when the live stream should be reopened
        self._down_since: float | None = None  # monotonic; None while connected
        self._ever_connected = False
        self._last_event_at: float | None = None
        self._reopens = 0
        self._rpc_fallbacks = 0
        # Counted without the lock on the hot path: exact from one thread, may miss a few
        # increments when several threads check at once.
        self._local_answers = 0
        self._last_error = ""
        self.request_reopen: Callable[[], None] = lambda: None

    # --- the driver's side ---------------------------------------------------------------

    @property
    def catalog(self) -> PlanCatalog | None:
        return self._catalog

    def set_catalog(self, catalog: PlanCatalog) -> None:
        with self._lock:
            self._feature_keys = frozenset(f.key for f in catalog.features)
            self._limit_keys = frozenset(lim.key for plan in catalog.plans for lim in plan.limits)
            self._catalog = catalog
            for account, entry in list(self._entries.items()):
                prepared = replace(
                    entry,
                    features=prepare_features(catalog, entry.entitlements, _utc(entry.received_at)),
                )
                self._entries[account] = prepared
                if account in self._answers:
                    self._answers[account] = prepared

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
            for account, entry in list(self._answers.items()):
                if account not in self._covered and not entry.provisional:
                    del self._answers[account]
            self._resync_at = _now() + self._resync_interval
            self._reopens += 1

    def _entry(
        self,
        ent: Entitlements,
        features: dict[str, FeatureCheck],
        now: float,
        *,
        provisional: bool,
    ) -> LocalEntry:
        cap = now + PROVISIONAL_SECONDS if provisional else self._resync_at
        valid_until = _valid_until(ent, now)
        return LocalEntry(
            entitlements=ent,
            valid_until=valid_until,
            received_at=now,
            features=features,
            limits={lim.key: lim for lim in ent.limits},
            deadline=min(valid_until, cap),
            provisional=provisional,
        )

    def on_message(self, msg: ent_pb.WatchEntitlementsResponse) -> None:
        if msg.WhichOneof("event") != "entitlements":
            with self._lock:
                self._last_event_at = _now()
            return
        ent = _convert.entitlements(msg.entitlements)
        catalog = self._catalog
        # Prepared outside the lock: the slow path of other threads does not wait for it.
        now = _now()
        features = prepare_features(catalog, ent, _utc(now)) if catalog is not None else {}
        with self._lock:
            self._last_event_at = now
            account = ent.account_id
            entry = self._entries.get(account)
            # Apply only a newer state; an equal revision replaces too, since a resync can bring
            # a state whose answer changed by time alone (revisions count writes, not time).
            if entry is None or ent.revision >= entry.revision:
                entry = self._entries[account] = self._entry(ent, features, now, provisional=False)
            elif entry.provisional:  # fetched after the stream read it: newer, now covered
                entry = self._entries[account] = replace(
                    entry, deadline=min(entry.valid_until, self._resync_at), provisional=False
                )
            if account in self._stream_accounts:
                self._covered.add(account)
                self._answers[account] = entry
            else:
                self._answers.pop(account, None)
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
            self._answers.clear()
            self._stream_accounts = frozenset()
            self._last_error = error

    # --- the caller's side ---------------------------------------------------------------

    def want(self, account_id: str) -> bool:
        """Watch `account_id` from now on; False beyond the account cap (RPC answers it)."""
        with self._lock:
            if account_id in self._wanted:
                return True
            if len(self._wanted) >= self._max_accounts:
                return False
            self._wanted[account_id] = None
        self.request_reopen()
        return True

    def adopt(self, ent: Entitlements) -> LocalEntry:
        """A wanted account's state fetched by RPC after a miss: it answers this call and, while
        the stream is not down, the next ones until the stream delivers the account."""
        catalog = self._catalog
        now = _now()
        features = prepare_features(catalog, ent, _utc(now)) if catalog is not None else {}
        with self._lock:
            account = ent.account_id
            entry = self._entry(ent, features, now, provisional=account not in self._covered)
            current = self._entries.get(account)
            if (
                account in self._wanted
                and self._down_since is None
                and (current is None or ent.revision >= current.revision)
            ):
                self._entries[account] = self._answers[account] = entry
            return entry

    def answer(self, entry: LocalEntry, feature: str) -> FeatureCheck:
        """`feature`'s answer from an entry `adopt` returned, as the RPC's (source="rpc")."""
        if feature not in self._feature_keys:
            raise InvalidArgument(
                f"unknown feature {feature!r}",
                field="feature",
                reason="ERROR_REASON_UNKNOWN_FEATURE",
            )
        return replace(entry.features[feature], source="rpc")

    def _lookup(self, account_id: str, stale: bool) -> tuple[LocalEntry | None, bool]:
        """The slow path: (the entry that may answer, whether the stream should be reopened)."""
        with self._lock:
            if stale:
                return self._stale(account_id), False
            entry = self._answers.get(account_id)
            now = _now()
            if entry is None:
                self._rpc_fallbacks += 1
                return None, False
            if now >= entry.valid_until:  # changed by time alone: ask, and refresh the stream
                self._rpc_fallbacks += 1
                return None, not entry.provisional
            if entry.provisional and now >= entry.deadline:  # the stream never delivered it
                del self._answers[account_id]
                self._rpc_fallbacks += 1
                return None, False
            self._local_answers += 1
            # Past the entry's deadline, not provisional: the stream's resync time has come
            # (a stream opened since has its own, later one: no second reopen for it).
            return entry, now >= self._resync_at

    def feature(
        self, account_id: str, feature: str, *, stale: bool = False, min_revision: int = 0
    ) -> FeatureCheck | None:
        """The local answer, or None when the account must be asked over RPC (also when the
        local copy is older than `min_revision`).

        `stale=True` (the RPC failed as unavailable): any known state not older than `max_stale`.
        """
        if not stale:
            entry = self._answers.get(account_id)
            if entry is not None and _now() < entry.deadline:
                check = entry.features.get(feature)
                if check is not None and check.revision >= min_revision:
                    self._local_answers += 1
                    return check
        if self._catalog is None:
            return None
        if feature not in self._feature_keys:
            raise InvalidArgument(
                f"unknown feature {feature!r}",
                field="feature",
                reason="ERROR_REASON_UNKNOWN_FEATURE",
            )
        found, resync = self._lookup(account_id, stale)
        if resync:
            self.request_reopen()
        if found is None:
            return None
        if found.revision < min_revision:
            # Not fresh enough: the server answers (reading through for it); the stream
            # pushes the newer revision here on its own, so no resync is needed.
            return None
        check = found.features.get(feature)
        if check is None or not stale:
            return check
        return replace(check, source="stale")

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
        if self._catalog is None:
            return None
        if limit_key not in self._limit_keys:
            raise InvalidArgument(
                f"unknown limit {limit_key!r}", field="limit", reason="ERROR_REASON_UNKNOWN_LIMIT"
            )
        if current < 0:
            raise InvalidArgument(f"must be zero or more, got {current}", field="current")
        entry = None if stale else self._answers.get(account_id)
        if entry is not None and _now() < entry.deadline and entry.revision >= min_revision:
            self._local_answers += 1
        else:
            entry, resync = self._lookup(account_id, stale)
            if resync:
                self.request_reopen()
            if entry is None:
                return None
        found = entry.limits.get(limit_key)
        if found is None:
            return None
        if entry.revision < min_revision:
            return None
        return limit_check(
            entry.entitlements,
            found,
            current,
            "stale" if stale else "local",
            _utc(entry.received_at),
        )

    def _stale(self, account_id: str) -> LocalEntry | None:
        entry = self._entries.get(account_id)
        if entry is None or _now() >= entry.valid_until:
            return None
        if self._connected and account_id in self._covered:
            return entry
        if self._down_since is None or time.monotonic() - self._down_since > self._max_stale:
            return None
        return entry

    def entitlements(self, account_id: str) -> Entitlements | None:
        entry = self._answers.get(account_id)
        return entry.entitlements if entry is not None and _now() < entry.deadline else None

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
