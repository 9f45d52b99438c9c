"""A dispatcher killed (SIGKILL) mid-send: its claim runs out and another dispatcher delivers
the event, with the same webhook-id."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from entitlements.events.dispatcher import Dispatcher
from entitlements.events.endpoints import Endpoint
from entitlements.events.settings import EventSettings
from entitlements.events.types import new_event
from entitlements.store.events_repository import EventsRepository
from entitlements.store.repository import Store
from tests.events.receiver import SECRET, Receiver, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    r.hold_seconds = 30.0  # a send in flight until the sender dies
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.mark.slow
async def test_an_event_in_flight_when_its_dispatcher_is_killed_is_delivered_by_another(
    store: Store, database_url: str, receiver: Receiver
) -> None:
    repository = EventsRepository(store.engine)
    event = new_event("payment.failed", "ws", {}, now=datetime.now(UTC))
    await repository.append(event)
    receiver.script = ["timeout"]  # the first request is held open
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.events.dispatch_process",
        database_url,
        receiver.url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for(lambda: receiver.requests == 1, within_s=20)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
    assert receiver.accepted == []

    settings = EventSettings(poll_interval_seconds=0.02, lease_margin_seconds=0.2)
    other = Dispatcher(
        repository, settings, endpoints=[Endpoint("hook", receiver.url, SECRET, timeout_s=1.0)]
    )
    other.start()
    try:
        await wait_for(lambda: receiver.ids == {event.id})
    finally:
        await other.close()

    [row] = await repository.list_deliveries()
    assert (row.status, row.attempts) == ("delivered", 2)
