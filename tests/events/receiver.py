"""A real HTTP receiver of events (aiohttp on a free port) that verifies each request with the
`standardwebhooks` package, and can be told to fail, time out, answer slowly or go away."""

from __future__ import annotations

import asyncio
import base64
import socket
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    def __init__(self, secret: str = SECRET) -> None:
        self._webhook = Webhook(secret)
        self.port = free_port()
        #: What the next requests do, in turn: "ok", "fail", "timeout" (hold the request past
        #: the sender's deadline) or "slow" (answer late but in time); then "ok".
        self.script: list[str] = []
        #: Accepted events: (webhook-id, parsed body), in arrival order, duplicates included.
        self.accepted: list[tuple[str, dict[str, Any]]] = []
        self.requests = 0
        self.refused_signatures = 0
        self.slow_seconds = 0.05
        self.hold_seconds = 1.0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    @property
    def ids(self) -> set[str]:
        return {i for i, _ in self.accepted}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Go away: connections are refused until `start` again."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.text()
        mode = self.script.pop(0) if self.script else "ok"
        if mode == "fail":
            return web.Response(status=503)
        if mode == "timeout":
            await asyncio.sleep(self.hold_seconds)
            return web.Response(status=500)
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        try:
            event = self._webhook.verify(body, dict(request.headers))
        except Exception:
            self.refused_signatures += 1
            return web.Response(status=400)
        self.accepted.append((request.headers["webhook-id"], event))
        return web.Response(status=204)


async def wait_for(condition: Any, within_s: float = 10.0) -> None:
    """Poll `condition()` (sync) until true; fail after `within_s` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
