"""A restart warms the cache in bulk before serving; watchers hear each revision once."""

from __future__ import annotations

from entitlements.policies import default_catalog
from entitlements.service import EntitlementService
from entitlements.store.repository import Store
from entitlements.watch import WatchHub
from tests.server.conftest import subscription


async def test_warm_up_loads_the_most_recently_changed_accounts(store: Store) -> None:
    for i in range(12):
        await store.save_subscription(subscription(f"ws-{i}", "pro" if i % 2 else "starter"))
    recent = await store.recently_changed_accounts(5)
    assert recent == [f"ws-{i}" for i in range(11, 6, -1)]

    service = EntitlementService(store, default_catalog(), WatchHub())
    assert await service.warm(recent) == 5
    for i in range(7, 12):
        cached = service.cache.peek(f"ws-{i}")
        assert cached is not None
        assert cached.plan_id == ("pro" if i % 2 else "starter")
    assert service.cache.peek("ws-0") is None


async def test_a_change_reported_twice_is_pushed_to_watchers_once(store: Store) -> None:
    hub = WatchHub()
    service = EntitlementService(store, default_catalog(), hub)
    watcher = hub.subscribe(["ws"])
    await service.save_subscription(subscription("ws", "pro"))
    await service.changed("ws")  # the change feed reporting the same revision again
    first = await watcher.next()
    assert watcher.queue.empty()
    assert first.revision == 1  # type: ignore[union-attr]
