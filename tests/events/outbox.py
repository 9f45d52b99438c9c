"""What the producer tests share: the outbox as written, and its delivery to a real receiver."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from entitlements.events.dispatcher import Dispatcher
from entitlements.events.endpoints import Endpoint
from entitlements.events.settings import EventSettings
from entitlements.store.events_repository import EventsRepository
from entitlements.store.models import OutboxEvent
from tests.events.receiver import SECRET, Receiver, wait_for

_FAST = EventSettings(poll_interval_seconds=0.02, retry_base_seconds=0.01, retry_max_seconds=0.05)
_DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


async def outbox(engine: AsyncEngine, prefix: str = "") -> list[dict[str, Any]]:
    """The bodies of the events written (whose type starts with `prefix`), oldest first."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(OutboxEvent.type, OutboxEvent.body).order_by(OutboxEvent.seq)
        )
        return [json.loads(body) for type_, body in rows if type_.startswith(prefix)]


async def deliver(
    engine: AsyncEngine, receiver: Receiver, within_s: float = 15.0
) -> list[dict[str, Any]]:
    """Run a dispatcher until the receiver has every event of the outbox; their bodies as
    received (verified by `standardwebhooks`), in outbox order, each once."""
    written = await outbox(engine)
    dispatcher = Dispatcher(
        EventsRepository(engine),
        _FAST,
        endpoints=[Endpoint("hook", receiver.url, SECRET, timeout_s=5.0)],
    )
    dispatcher.start()
    try:
        await wait_for(lambda: {e["id"] for e in written} <= receiver.ids, within_s)
    finally:
        await dispatcher.close()
    received = {webhook_id: body for webhook_id, body in receiver.accepted}
    return [received[e["id"]] for e in written]


def documented_fields(event_type: str) -> set[str]:
    """The payload fields docs/events.md gives the type: the backticked names of the `data`
    column of its catalogue row."""
    for line in _DOCS.read_text().splitlines():
        if line.startswith(f"| `{event_type}` |"):
            data = line.rstrip(" |").rsplit(" | ", 1)[1]
            return set(re.findall(r"`([a-z_]+)`", data))
    raise AssertionError(f"{event_type} is not in the catalogue of docs/events.md")


def check_documented(body: dict[str, Any]) -> None:
    """Every field of the event's payload is documented in its catalogue row."""
    assert set(body["data"]) <= documented_fields(body["type"]), body
