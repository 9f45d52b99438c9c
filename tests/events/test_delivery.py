"""Delivery to a real HTTP receiver that fails, times out, answers slowly and goes away: every
committed event arrives, signed per Standard Webhooks (checked by the `standardwebhooks`
package), duplicates carrying the same webhook-id; nothing for a rolled-back change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from entitlements.events.dispatcher import Dispatcher
from entitlements.events.endpoints import Endpoint
from entitlements.events.settings import EventSettings
from entitlements.events.types import new_event
from entitlements.store.events_repository import DeliveryRow, EventsRepository, append_event
from entitlements.store.repository import Store
from tests.events.receiver import SECRET, Receiver, wait_for

NOW = datetime.now(UTC)

#: Tiny timings: retries after a few ms, a 0.3 s send deadline.
FAST = EventSettings(
    poll_interval_seconds=0.02,
    retry_base_seconds=0.01,
    retry_max_seconds=0.05,
    breaker_failures=1000,
    breaker_cooldown_seconds=0.05,
    lease_margin_seconds=0.2,
)


def endpoint(receiver: Receiver, **kw: object) -> Endpoint:
    return Endpoint("hook", receiver.url, SECRET, timeout_s=0.3, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.close()


async def append(repository: EventsRepository, account: str, n: int = 0) -> str:
    event = new_event("payment.failed", account, {"n": n}, now=NOW)
    await repository.append(event)
    return event.id


async def test_every_committed_event_arrives_through_failures_timeouts_slowness_and_an_outage(
    store: Store, receiver: Receiver
) -> None:
    repository = EventsRepository(store.engine)
    receiver.script = ["fail", "timeout", "slow", "fail", "slow", "timeout"]
    ids = [await append(repository, f"ws{i % 4}", i) for i in range(12)]

    class Boom(Exception):
        pass

    with pytest.raises(Boom):  # a change that rolled back: its event never goes out
        async with store._transaction(write=True) as session:
            await append_event(session, new_event("payment.failed", "ghost", {}, now=NOW))
            raise Boom

    async with running(Dispatcher(repository, FAST, endpoints=[endpoint(receiver)])):
        await wait_for(lambda: receiver.ids >= set(ids[:6]))
        await receiver.stop()  # the receiver goes away for a while
        ids += [await append(repository, "ws9", i) for i in range(6)]
        await asyncio.sleep(0.3)
        await receiver.start()
        await wait_for(lambda: receiver.ids >= set(ids))

    assert receiver.ids == set(ids)
    assert receiver.refused_signatures == 0
    assert all(event["id"] == webhook_id for webhook_id, event in receiver.accepted)
    assert "ghost" not in {event["account_id"] for _, event in receiver.accepted}
    rows = await repository.list_deliveries(limit=100)
    assert {r.status for r in rows} == {"delivered"}
    assert max(r.attempts for r in rows) > 1


async def test_a_delivery_past_its_time_fails_and_a_replay_sends_it_again(
    store: Store, receiver: Receiver
) -> None:
    repository = EventsRepository(store.engine)
    event_id = await append(repository, "ws")
    receiver.script = ["fail"] * 3
    settings = replace(FAST, give_up_seconds=0.0)  # the event is already old enough to give up

    async with running(Dispatcher(repository, settings, endpoints=[endpoint(receiver)])):
        failed: list[DeliveryRow] = []
        for _ in range(250):  # until the dispatcher recorded the outcome
            if failed := await repository.list_deliveries(status="failed"):
                break
            await asyncio.sleep(0.02)
        [row] = failed
        assert (row.event_id, row.attempts, row.last_error) == (event_id, 1, "HTTP 503")
        assert receiver.accepted == []

        receiver.script = []
        assert await repository.replay_failed("hook") == 1
        await wait_for(lambda: receiver.ids == {event_id})

    [row] = await repository.list_deliveries()
    assert row.status == "delivered"


async def test_an_ordered_endpoint_gets_an_accounts_events_in_order(
    store: Store, receiver: Receiver
) -> None:
    repository = EventsRepository(store.engine)
    ids = [await append(repository, "ws", i) for i in range(8)]
    receiver.script = ["fail", "slow", "timeout", "fail", "slow"]

    ordered = endpoint(receiver, ordered=True)
    async with running(Dispatcher(repository, FAST, endpoints=[ordered])):
        await wait_for(lambda: receiver.ids == set(ids))

    arrival = [event["data"]["n"] for _, event in receiver.accepted]
    assert arrival == sorted(arrival) == list(range(8))


async def test_an_open_circuit_leaves_a_failing_endpoint_alone(
    store: Store, receiver: Receiver
) -> None:
    repository = EventsRepository(store.engine)
    for i in range(20):
        await append(repository, f"ws{i}")
    receiver.script = ["fail"] * 100
    settings = replace(FAST, breaker_failures=3, breaker_cooldown_seconds=60.0, batch_size=1)

    async with running(Dispatcher(repository, settings, endpoints=[endpoint(receiver)])) as d:
        await wait_for(lambda: receiver.requests >= 3)
        await asyncio.sleep(0.3)
        assert d.breaker_open("hook")

    assert receiver.requests == 3  # then nothing while open


async def test_an_endpoint_gets_only_the_event_types_it_asked_for(
    store: Store, receiver: Receiver
) -> None:
    repository = EventsRepository(store.engine)
    wanted = new_event("usage.threshold_crossed", "ws", {}, now=NOW)
    await repository.append(wanted)
    await append(repository, "ws")
    only = endpoint(receiver, event_types=frozenset({"usage.threshold_crossed"}))

    async with running(Dispatcher(repository, FAST, endpoints=[only])):
        await wait_for(lambda: receiver.ids == {wanted.id})
        await asyncio.sleep(0.1)

    assert receiver.ids == {wanted.id}
