"""A small Stripe-shaped HTTP server for tests: the real SDK talks to it through STRIPE_API_BASE.

Stateful (customers, prices, checkout and portal sessions, subscriptions with their item's
price and `current_period_*` on the item as in recent API versions, invoices), with paginated
lists (`has_more`, `starting_after`), idempotency keys honoured like Stripe's (same key and
parameters: the first answer again; same key, other parameters: a 400 idempotency_error), and
an outage switch (every request answers 500), and delayed answers (`delay`: the state is read
when the request arrives, the answer leaves later). Tests drive what happens on Stripe's side
(a checkout completing, a renewal failing) with its Python methods.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["StripeDouble"]

_KEY_PART = re.compile(r"\[([^\]]*)\]")


def decode_form(pairs: Mapping[str, str] | list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`items[0][price]=x`) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    for key, value in items:
        head = key.split("[", 1)[0]
        parts = [head, *_KEY_PART.findall(key[len(head) :])]
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt_is_index = not last and parts[i + 1].isdigit()
            if isinstance(node, list):
                index = int(part)
                while len(node) <= index:
                    node.append(None)
                if last:
                    node[index] = value
                else:
                    if node[index] is None:
                        node[index] = [] if nxt_is_index else {}
                    node = node[index]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if nxt_is_index else {})
    return root


@dataclass
class Delay:
    """One delayed answer: the state is read when the request arrives (`arrived` is set), the
    answer leaves after `seconds`, or when `release` is set if `seconds` is None."""

    method: str
    path: str
    seconds: float | None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, method: str, path: str) -> bool:
        return self.method == method and path.startswith(self.path)

    async def wait(self) -> None:
        self.arrived.set()
        if self.seconds is None:
            await self.release.wait()
        else:
            await asyncio.sleep(self.seconds)


def _error(status: int, type_: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message, **extra}}, status=status)


class StripeDouble:
    """The double's state and its HTTP face; `url` is the STRIPE_API_BASE to configure."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.prices: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.checkout_sessions: dict[str, dict[str, Any]] = {}
        self.portal_sessions: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self._idempotency: dict[str, tuple[str, str, dict[str, Any], int, dict[str, Any]]] = {}
        #: Every request as (method, path, params, idempotency key).
        self.requests: list[tuple[str, str, dict[str, Any], str | None]] = []
        #: True: every request answers 500 (Stripe down).
        self.outage = False
        #: Stripe's clock (`created`, `canceled_at`, ...); a simulation sets its own.
        self.clock: Callable[[], float] = time.time
        #: Pending delays, used by the first matching request each (see `delay`).
        self._delays: list[Delay] = []
        #: Called with (method, path) for every request without a pending delay: a delay in
        #: seconds for its answer, or None (the simulation draws them from its seed).
        self.delay_for: Callable[[str, str], float | None] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/v1/{path:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in self._runner.addresses if isinstance(a, tuple))
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def delay(self, method: str, path: str, seconds: float | None = None) -> Delay:
        """Delay the answer to the next `method` request whose path (after /v1/) starts with
        `path`: Stripe reads its state when the request arrives, and the answer arrives after
        `seconds`, or when the returned Delay's `release` is set (seconds None)."""
        pending = Delay(method, path, seconds)
        self._delays.append(pending)
        return pending

    def clear_delays(self) -> None:
        """Forget the delays no request has used yet."""
        self._delays.clear()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_test_{next(self._ids):06d}"

    # --- what tests set up or make happen on Stripe's side ------------------------------------

    def add_price(self, price_id: str, *, amount: int, interval: str) -> dict[str, Any]:
        price = {
            "id": price_id,
            "object": "price",
            "active": True,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": interval, "interval_count": 1},
            "type": "recurring",
            "product": f"prod_{price_id}",
        }
        self.prices[price_id] = price
        return price

    def add_customer(self, email: str | None = None) -> dict[str, Any]:
        customer = {"id": self.new_id("cus"), "object": "customer", "email": email}
        self.customers[customer["id"]] = customer
        return customer

    def add_subscription(
        self,
        customer_id: str,
        price_id: str,
        *,
        status: str = "active",
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        now = int(self.clock())
        sub_id = self.new_id("sub")
        sub = {
            "id": sub_id,
            "object": "subscription",
            "customer": customer_id,
            "status": status,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "ended_at": None,
            "trial_end": None,
            "created": now,
            "start_date": now,
            "metadata": dict(metadata or {}),
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": self.new_id("si"),
                        "object": "subscription_item",
                        "price": self.prices[price_id],
                        "quantity": 1,
                        "subscription": sub_id,
                        "current_period_start": now,
                        "current_period_end": now + 30 * 86400,
                    }
                ],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
        }
        self.subscriptions[sub_id] = sub
        return sub

    def complete_checkout(
        self, session_id: str, *, payment_status: str = "paid", status: str = "active"
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The customer finishes the Checkout page: (session, subscription) as Stripe has them."""
        session = self.checkout_sessions[session_id]
        customer_id = session["customer"] or self.add_customer(session["customer_email"])["id"]
        metadata = session.get("subscription_data", {}).get("metadata", {})
        sub = self.add_subscription(
            customer_id, session["_price"], status=status, metadata=metadata
        )
        session.update(
            status="complete",
            payment_status=payment_status,
            customer=customer_id,
            subscription=sub["id"],
        )
        return self.public(session), sub

    def pay_checkout(self, session_id: str) -> dict[str, Any]:
        """A delayed payment method succeeds."""
        session = self.checkout_sessions[session_id]
        session["payment_status"] = "paid"
        return self.public(session)

    def update_subscription(self, sub_id: str, **changes: Any) -> dict[str, Any]:
        sub = self.subscriptions[sub_id]
        if "price" in changes:
            sub["items"]["data"][0]["price"] = self.prices[changes.pop("price")]
        sub.update(changes)
        return sub

    def invoice(
        self, sub_id: str, *, paid: bool, attempt_count: int = 1, next_attempt: int | None = None
    ) -> dict[str, Any]:
        sub = self.subscriptions[sub_id]
        price = sub["items"]["data"][0]["price"]
        now = int(self.clock())
        invoice = {
            "id": self.new_id("in"),
            "object": "invoice",
            "customer": sub["customer"],
            "currency": price["currency"],
            "amount_due": price["unit_amount"],
            "amount_paid": price["unit_amount"] if paid else 0,
            "attempt_count": attempt_count,
            "next_payment_attempt": None if paid else next_attempt,
            "status": "paid" if paid else "open",
            "created": now,
            "status_transitions": {"paid_at": now if paid else None},
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": sub_id, "metadata": {}},
            },
        }
        self.invoices[invoice["id"]] = invoice
        return invoice

    @staticmethod
    def public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    # --- HTTP --------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if request.method in ("POST", "DELETE"):
            params = decode_form(list((await request.post()).items()))  # type: ignore[arg-type]
        else:
            params = decode_form(list(request.query.items()))
        key = request.headers.get("Idempotency-Key")
        self.requests.append((request.method, path, params, key))
        if self.outage:
            return _error(500, "api_error", "Stripe is having a bad day (test outage)")
        if key and request.method in ("POST", "DELETE"):
            seen = self._idempotency.get(key)
            if seen is not None:
                method, seen_path, seen_params, status, body = seen
                if (method, seen_path, seen_params) != (request.method, path, params):
                    return _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                return web.json_response(
                    body, status=status, headers={"Idempotent-Replayed": "true"}
                )
        status, body = self._route(request.method, path, params)
        if key and request.method in ("POST", "DELETE") and status < 500:
            self._idempotency[key] = (request.method, path, params, status, body)
        # The state was read above, on arrival; only the answer is late.
        body = json.loads(json.dumps(body))
        pending = next((d for d in self._delays if d.matches(request.method, path)), None)
        if pending is not None:
            self._delays.remove(pending)
            await pending.wait()
        elif self.delay_for is not None:
            seconds = self.delay_for(request.method, path)
            if seconds:
                await asyncio.sleep(seconds)
        return web.json_response(body, status=status)

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        try:
            if parts == ["checkout", "sessions"] and method == "POST":
                return self._create_checkout(params)
            if parts[:2] == ["checkout", "sessions"] and len(parts) == 3 and method == "GET":
                return 200, self.public(self._get(self.checkout_sessions, parts[2], "id"))
            if parts == ["billing_portal", "sessions"] and method == "POST":
                return self._create_portal(params)
            if parts == ["customers"] and method == "POST":
                return 200, self.add_customer(params.get("email"))
            if parts == ["subscriptions"] and method == "GET":
                return self._list_subscriptions(params)
            if parts[0] == "subscriptions" and len(parts) == 2:
                sub = self._get(self.subscriptions, parts[1], "id")
                if method == "GET":
                    return 200, self.public(sub)
                if method == "POST":
                    return self._update_subscription(sub, params)
                if method == "DELETE":
                    now = int(self.clock())
                    sub.update(status="canceled", canceled_at=now, ended_at=now)
                    return 200, self.public(sub)
        except _Missing as missing:
            return 404, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "message": f"No such object: '{missing.id}'",
                    "param": missing.param,
                }
            }
        return 404, {
            "error": {
                "type": "invalid_request_error",
                "message": f"Unrecognized request URL ({method}: /v1/{path})",
            }
        }

    def _get(self, table: dict[str, dict[str, Any]], obj_id: str, param: str) -> dict[str, Any]:
        if obj_id not in table:
            raise _Missing(obj_id, param)
        return table[obj_id]

    def _create_checkout(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for url_param in ("success_url", "cancel_url"):
            url = params.get(url_param, "")
            if not url.startswith(("http://", "https://")):
                return 400, _invalid(url_param, f"Not a valid URL: {url_param}")
        price_id = (params.get("line_items") or [{}])[0].get("price")
        if price_id not in self.prices:
            return 400, _invalid("line_items[0][price]", f"No such price: '{price_id}'")
        customer = params.get("customer")
        if customer and customer not in self.customers:
            return 400, _invalid("customer", f"No such customer: '{customer}'")
        session_id = self.new_id("cs")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": params.get("mode"),
            "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            "customer": customer,
            "customer_email": params.get("customer_email"),
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}),
            "subscription_data": params.get("subscription_data", {}),
            "status": "open",
            "payment_status": "unpaid",
            "subscription": None,
            "success_url": params["success_url"],
            "cancel_url": params["cancel_url"],
            "_price": price_id,
        }
        self.checkout_sessions[session_id] = session
        return 200, self.public(session)

    def _create_portal(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        customer = params.get("customer")
        if customer not in self.customers:
            return 400, _invalid("customer", f"No such customer: '{customer}'")
        portal_id = self.new_id("bps")
        portal = {
            "id": portal_id,
            "object": "billing_portal.session",
            "customer": customer,
            "return_url": params.get("return_url"),
            "url": f"https://billing.stripe.test/p/session/{portal_id}",
        }
        self.portal_sessions[portal_id] = portal
        return 200, portal

    def _update_subscription(
        self, sub: dict[str, Any], params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if sub["status"] == "canceled":
            return 400, _invalid(None, "A canceled subscription can only update its metadata")
        for item in params.get("items") or []:
            price_id = item.get("price")
            if price_id not in self.prices:
                return 400, _invalid("items[0][price]", f"No such price: '{price_id}'")
            if item.get("id") != sub["items"]["data"][0]["id"]:
                return 400, _invalid("items[0][id]", "No such subscription item")
            sub["items"]["data"][0]["price"] = self.prices[price_id]
            sub["_last_proration"] = params.get("proration_behavior")
        if "cancel_at_period_end" in params:
            flag = params["cancel_at_period_end"] == "true"
            sub["cancel_at_period_end"] = flag
            sub["canceled_at"] = int(self.clock()) if flag else None
        if "metadata" in params:
            sub["metadata"].update(params["metadata"])
        return 200, self.public(sub)

    def _list_subscriptions(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        limit = int(params.get("limit", 10))
        ordered = sorted(self.subscriptions.values(), key=lambda s: s["id"])
        if params.get("status", "active") != "all":
            ordered = [s for s in ordered if s["status"] == params.get("status", "active")]
        after = params.get("starting_after")
        if after:
            ordered = [s for s in ordered if s["id"] > after]
        page = ordered[:limit]
        return 200, {
            "object": "list",
            "url": "/v1/subscriptions",
            "has_more": len(ordered) > limit,
            "data": [self.public(s) for s in page],
        }

    def list_requests(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _, _ in self.requests]

    def dump(self) -> str:
        return json.dumps({"subscriptions": self.subscriptions}, indent=1, default=str)


class _Missing(Exception):
    def __init__(self, obj_id: str, param: str) -> None:
        super().__init__(obj_id)
        self.id = obj_id
        self.param = param


def _invalid(param: str | None, message: str) -> dict[str, Any]:
    return {"error": {"type": "invalid_request_error", "message": message, "param": param}}
