"""The README's receiver, run as written (with a real secret) behind a real HTTP server, takes
what the dispatcher sends."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from entitlements.events.dispatcher import Dispatcher
from entitlements.events.endpoints import Endpoint
from entitlements.events.settings import EventSettings
from entitlements.events.types import new_event
from entitlements.store.events_repository import EventsRepository
from entitlements.store.repository import Store
from tests.events.receiver import SECRET, free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_receiver() -> Any:
    section = README.read_text().split("## Outbound events", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1).replace('"whsec_..."', repr(SECRET)), namespace)
    return namespace["receive"]


async def test_the_readme_receiver_verifies_a_delivered_event(store: Store, capsys: Any) -> None:
    app = web.Application()
    app.router.add_post("/events", readme_receiver())
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    repository = EventsRepository(store.engine)
    event = new_event("usage.threshold_crossed", "ws-readme", {"level": 75}, now=datetime.now(UTC))
    await repository.append(event)
    endpoint = Endpoint("readme", f"http://127.0.0.1:{port}/events", SECRET, timeout_s=2.0)
    dispatcher = Dispatcher(
        repository, EventSettings(poll_interval_seconds=0.02), endpoints=[endpoint]
    )
    dispatcher.start()
    try:
        delivered: list[Any] = []
        for _ in range(250):
            delivered = await repository.list_deliveries(status="delivered")
            if delivered:
                break
            await asyncio.sleep(0.02)
        assert len(delivered) == 1
    finally:
        await dispatcher.close()
        await runner.cleanup()
    assert "usage.threshold_crossed ws-readme {'level': 75}" in capsys.readouterr().out
