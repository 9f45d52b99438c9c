"""Fan-out of entitlement changes and threshold events to WatchEntitlements subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from cachetools import LRUCache

from entitlements.state import AccountEntitlements


@dataclass(frozen=True, slots=True)
class ThresholdCrossed:
    """An account's usage of a metric reached a threshold level in a period."""

    account_id: str
    metric: str
    limit_key: str
    period: str
    level: int
    current: int
    limit: int


@dataclass(frozen=True, slots=True)
class TokenAccessChanged:
    """A token-gated channel access changed (granted -> revoked by re-verification, or back).

    Delivered to WatchEntitlements subscribers of the channel (and `all_accounts` ones) as
    `token_access_changed`, and to in-process listeners through `TokenAccessFeed`.
    """

    channel_id: str
    #: "" when the access was checked for wallets only.
    user_id: str
    wallet_addresses: tuple[str, ...]
    granted: bool
    #: Ids of the enabled requirements that were not met (empty when granted).
    unmet_requirement_ids: tuple[str, ...] = ()


WatchEvent = AccountEntitlements | ThresholdCrossed | TokenAccessChanged

_WAKE: WatchEvent = ThresholdCrossed("", "", "", "", 0, 0, 0)


class SubscriberOverflow(Exception):
    """A subscriber fell so far behind that events were dropped; it must resubscribe."""


class WatchClosed(Exception):
    """The hub is closed (the server is shutting down)."""


@dataclass(eq=False)
class Subscription:
    """One watch stream's queue. ``accounts`` None means every account (and every channel)."""

    accounts: frozenset[str] | None
    channels: frozenset[str] = frozenset()
    queue: asyncio.Queue[WatchEvent] = field(default_factory=lambda: asyncio.Queue(1024))
    overflowed: bool = False
    closed: bool = False

    async def next(self) -> WatchEvent:
        """The next event; raises when the subscriber overflowed or the hub closed."""
        if self.overflowed:
            raise SubscriberOverflow
        if self.closed:
            raise WatchClosed
        event = await self.queue.get()
        if self.overflowed:
            raise SubscriberOverflow
        if self.closed:
            raise WatchClosed
        return event

    def _wake(self) -> None:
        # make a waiting reader return, so it notices the new flag
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(_WAKE)


class WatchHub:
    """Delivers each published event to the subscriptions that watch its account.

    Publishing never blocks: a subscriber whose queue is full is marked overflowed and its stream
    ends, so the caller resubscribes with ``send_initial`` instead of silently missing a change.
    """

    def __init__(self, queue_size: int = 1024) -> None:
        self._queue_size = queue_size
        self._by_account: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._by_channel: dict[str, set[Subscription]] = {}
        self._thresholds_seen: LRUCache[tuple[str, str, str, int], None] = LRUCache(100_000)

    def subscribe(
        self, accounts: Iterable[str] | None, channels: Iterable[str] = ()
    ) -> Subscription:
        sub = Subscription(
            accounts=None if accounts is None else frozenset(accounts),
            channels=frozenset(channels),
            queue=asyncio.Queue(self._queue_size),
        )
        if sub.accounts is None:
            self._all.add(sub)
        else:
            for account in sub.accounts:
                self._by_account.setdefault(account, set()).add(sub)
        for channel in sub.channels:
            self._by_channel.setdefault(channel, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        for channel in sub.channels:
            channel_subs = self._by_channel.get(channel)
            if channel_subs is not None:
                channel_subs.discard(sub)
                if not channel_subs:
                    del self._by_channel[channel]
        if sub.accounts is None:
            self._all.discard(sub)
            return
        for account in sub.accounts:
            subs = self._by_account.get(account)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_account[account]

    def watched(self, account_id: str) -> bool:
        return bool(self._all) or account_id in self._by_account

    @property
    def subscriber_count(self) -> int:
        listed = {s for subs in self._by_account.values() for s in subs}
        listed.update(s for subs in self._by_channel.values() for s in subs)
        return len(self._all) + len(listed)

    def publish(self, event: WatchEvent) -> None:
        if isinstance(event, ThresholdCrossed):
            # Each level is reported once, whether this process recorded it or the change feed
            # brought it from another replica.
            key = (event.account_id, event.metric, event.period, event.level)
            if key in self._thresholds_seen:
                return
            self._thresholds_seen[key] = None
        if isinstance(event, TokenAccessChanged):
            targets = {*self._all, *self._by_channel.get(event.channel_id, ())}
        else:
            targets = {*self._all, *self._by_account.get(event.account_id, ())}
        for sub in targets:
            if sub.overflowed:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.overflowed = True
                sub._wake()

    def close(self) -> None:
        """End every subscription (on shutdown), so streams finish before the grace period."""
        everyone = {*self._all, *(s for subs in self._by_account.values() for s in subs)}
        everyone.update(s for subs in self._by_channel.values() for s in subs)
        for sub in everyone:
            sub.closed = True
            sub._wake()


# --- token gating ---


class TokenAccessFeed:
    """Fan-out of `TokenAccessChanged` to listeners; like `WatchHub`, publishing never blocks and
    a listener that falls behind loses the oldest events rather than stalling the publisher."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._queue_size = queue_size
        self._listeners: set[asyncio.Queue[TokenAccessChanged]] = set()

    def subscribe(self) -> asyncio.Queue[TokenAccessChanged]:
        queue: asyncio.Queue[TokenAccessChanged] = asyncio.Queue(self._queue_size)
        self._listeners.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[TokenAccessChanged]) -> None:
        self._listeners.discard(queue)

    async def announce(self, event: TokenAccessChanged) -> None:
        """A change found by this process: the server's feed also shares it with the other
        replicas (through the change feed); this one only publishes it here."""
        self.publish(event)

    def publish(self, event: TokenAccessChanged) -> None:
        for queue in self._listeners:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
