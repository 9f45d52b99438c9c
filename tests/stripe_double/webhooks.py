"""Stripe events built and signed as Stripe does: v1 = HMAC-SHA256 of "{t}.{raw body}"."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

_ids = itertools.count(1)


def event(
    type_: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """A Stripe event envelope around `obj` (a snapshot of it, as Stripe sends)."""
    return {
        "id": event_id or f"evt_test_{next(_ids):06d}_{int(time.time() * 1000) % 10**8}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()) if created is None else created,
        "type": type_,
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": json.loads(json.dumps(obj))},
    }


def sign(payload: bytes, secrets: Sequence[str], *, timestamp: int | None = None) -> str:
    """A Stripe-Signature header with one v1 signature per secret (as during a rotation)."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    v1 = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([f"t={t}", *(f"v1={sig}" for sig in v1)])


class WebhookSender:
    """Posts signed events to the shim, like Stripe's delivery."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret

    async def post(
        self,
        body: dict[str, Any] | bytes,
        *,
        secrets: Sequence[str] | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        header = signature or sign(payload, secrets or [self.secret], timestamp=timestamp)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url,
                data=payload,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
            ) as response,
        ):
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = {}
            return response.status, answer if isinstance(answer, dict) else {}
