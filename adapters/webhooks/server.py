"""The HTTP shim: `POST /webhooks/stripe` (also at `POST /api/billing/webhook`, the path nchat's
seed used) and `GET /healthz`, an aiohttp server on the same loop.

Answers (Stripe retries anything but a 2xx, for up to three days):
- 200 once the event is durably recorded: applied, a duplicate, or a type not used (ignored);
- 400 for a bad or old signature, or a body that is not a Stripe event;
- 422 when the event cannot be applied (an unknown price, an unknown account): recorded with
  its error, and applied when a retry comes after the configuration is fixed;
- 503 when the database or Stripe cannot be reached, or Stripe is not configured: nothing was
  applied, the retry will be.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.webhooks.signature import BadSignature, verify_signature
from entitlements.billing.events import InvalidEvent, WebhookOutcome
from entitlements.errors import Unavailable

__all__ = ["StripeWebhookConfig", "WebhookServer", "create_app"]

log = logging.getLogger(__name__)

EventSink = Callable[[Mapping[str, Any]], Awaitable[WebhookOutcome]]

#: Where Stripe's events are received: the documented path and the seed's.
STRIPE_WEBHOOK_PATHS = ("/webhooks/stripe", "/api/billing/webhook")

_STATUS = {"processed": 200, "duplicate": 200, "ignored": 200, "failed": 422}


@dataclass(frozen=True)
class StripeWebhookConfig:
    """What the Stripe endpoint needs; `sink` None means Stripe is not configured."""

    secrets: Sequence[str]
    sink: EventSink | None
    tolerance_seconds: int = 300


def _json(status: int, **body: object) -> web.Response:
    return web.json_response(body, status=status)


def create_app(stripe: StripeWebhookConfig) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def stripe_webhook(request: web.Request) -> web.Response:
        if stripe.sink is None or not stripe.secrets:
            return _json(503, error="Stripe webhooks are not configured on this server")
        payload = await request.read()  # the raw bytes: a re-serialized body would not verify
        try:
            verify_signature(
                payload,
                request.headers.get("Stripe-Signature"),
                stripe.secrets,
                tolerance_seconds=stripe.tolerance_seconds,
            )
        except BadSignature as exc:
            log.warning("refused a Stripe webhook: %s", exc)
            return _json(400, error=f"bad signature: {exc}")
        try:
            event = json.loads(payload)
        except ValueError:
            return _json(400, error="the body is not JSON")
        if not isinstance(event, dict):
            return _json(400, error="the body is not a Stripe event")
        try:
            outcome = await stripe.sink(event)
        except InvalidEvent as exc:
            return _json(400, error=str(exc))
        except Unavailable as exc:
            log.warning("Stripe event %s not recorded, Stripe will retry: %s", event.get("id"), exc)
            return web.json_response(
                {"error": "temporarily unavailable; retry"},
                status=503,
                headers={"Retry-After": "30"},
            )
        except Exception:
            log.exception("Stripe event %s failed", event.get("id"))
            return _json(500, error="internal error; it has been logged")
        status = _STATUS[outcome.outcome]
        if status != 200:
            return _json(status, error=outcome.detail, outcome=outcome.outcome)
        body: dict[str, object] = {
            "received": True,
            "outcome": outcome.outcome,
            "detail": outcome.detail,
        }
        if outcome.revision is not None:  # a consistency token (min_revision) for a check
            body["revision"] = outcome.revision
        return _json(200, **body)

    app = web.Application(client_max_size=512 * 1024)
    app.router.add_get("/healthz", healthz)
    for path in STRIPE_WEBHOOK_PATHS:
        app.router.add_post(path, stripe_webhook)
    return app


class WebhookServer:
    """The shim on `addr` ("host:port"; port 0 picks a free one), on the running loop."""

    def __init__(self, app: web.Application, addr: str, *, reuse_port: bool = False) -> None:
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"ENTITLEMENTS_HTTP_ADDR: expected host:port, got {addr!r}")
        self._host = host.strip("[]")
        self._port = int(port)
        # Set by `serve --workers N`, whose workers all serve the same HTTP port.
        self._reuse_port = reuse_port
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        self.port = 0

    async def start(self) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_port=self._reuse_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(f"cannot listen on {self._host}:{self._port}: {exc}") from exc
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()
