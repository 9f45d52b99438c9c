"""A dispatcher alone in a process of its own, for the kill -9 test:
``python -m tests.events.dispatch_process DATABASE_URL ENDPOINT_URL``."""

from __future__ import annotations

import asyncio
import sys

from entitlements.events.dispatcher import Dispatcher
from entitlements.events.endpoints import Endpoint
from entitlements.events.settings import EventSettings
from entitlements.store.engine import create_engine
from entitlements.store.events_repository import EventsRepository
from tests.events.receiver import SECRET


async def main(url: str, endpoint_url: str) -> None:
    settings = EventSettings(poll_interval_seconds=0.02, lease_margin_seconds=0.2)
    endpoint = Endpoint("hook", endpoint_url, SECRET, timeout_s=1.0)
    dispatcher = Dispatcher(EventsRepository(create_engine(url)), settings, endpoints=[endpoint])
    dispatcher.start()
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
