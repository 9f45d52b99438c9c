"""Operations routes on the HTTP shim: `GET /metrics`, `GET /readyz`, `GET /admin`.

- `/metrics`: Prometheus text format, no authentication (bind the HTTP port to a private
  network, as for any scrape target).
- `/readyz`: 200 when this replica can answer cached checks and reach its database, else 503.
  Other dependencies (each chain node, with its head's age) are reported apart and never make it
  503: checks keep answering while a node is down. `/readyz?verbose` adds each dependency's
  state; its details (where the database is, error texts) only for a caller with the `admin`
  scope (open in dev mode). Stripe's reachability comes from the billing calls, with a probe at
  most once per `STRIPE_PROBE_INTERVAL_SECONDS` (60) when none was made. `/healthz` (the
  shim's) only says the process is alive.
- `/admin`: the read-only revenue dashboard, for a caller with the `admin` scope: the token as
  `Authorization: Bearer <token>`, or `?token=<token>` for a browser; 401 without a known
  token, 403 without the scope. Open in dev mode. `?as_of=` and `?churn_window_days=` as in
  GetRevenueMetrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from entitlements.admin.dashboard import FAVICON_SVG, FundsLine, render_html
from entitlements.config import Caller, token_digest
from entitlements.crypto.amounts import format_amount
from entitlements.errors import EntitlementsError, InvalidArgument
from entitlements.observability.metrics import (
    CONTENT_TYPE,
    HTTP_REQUESTS,
    chain_heads,
    observe_chain_head,
    observe_webhook,
    render,
    set_dependency_up,
)

if TYPE_CHECKING:
    from adapters.chains import ChainReaders
    from entitlements.admin import AdminService
    from entitlements.billing.events import WebhookOutcome

__all__ = ["OpsRoutes", "Probe", "chain_probes", "install_routes", "observed_sink"]

log = logging.getLogger(__name__)

#: A named dependency check: returns when the dependency answers, raises when it does not.
Probe = tuple[str, Callable[[], Awaitable[None]]]

ADMIN_SCOPE = "admin"


@dataclass
class OpsRoutes:
    """What the operations routes need; built by `install_observability`."""

    #: Dependencies readiness requires (the database): any down makes /readyz 503.
    probes: Sequence[Probe] = ()
    #: Dependencies reported apart (chain nodes): down or stalled, /readyz stays 200.
    optional_probes: Sequence[Probe] = ()
    #: What an admin may see of each dependency beyond its state (e.g. the database's URL
    #: without its password), by dependency name.
    targets: Mapping[str, str] = field(default_factory=dict)
    #: A chain whose head has not moved for this long is reported "stalled" (None: never; the
    #: local dev chain mines only when sent a transaction).
    stall_after_seconds: Mapping[str, float | None] = field(default_factory=dict)
    admin: AdminService | None = None
    callers: Mapping[bytes, Caller] = field(default_factory=dict)
    dev_mode: bool = False
    probe_timeout_seconds: float = 2.0
    #: More sections of the /admin page (HTML), e.g. outbound events; rendered in order.
    sections: list[Callable[[], Awaitable[str]]] = field(default_factory=list)
    #: More public fields of a dependency in /readyz?verbose (e.g. Stripe's last success), by
    #: dependency name; read after its probe ran.
    reports: Mapping[str, Callable[[], Mapping[str, Any]]] = field(default_factory=dict)


#: How long a public chain's head may stand still before it is reported "stalled".
DEFAULT_STALL_SECONDS = 300.0


def chain_probes(readers: ChainReaders, timeout_seconds: float) -> list[Probe]:
    """One probe per configured network: the node answers `eth_blockNumber` for the right
    chain (a node serving another chain id is down: `ChainReader.ping`), and the head it
    names is recorded, so a node whose head stops moving shows as stalled."""
    probes: list[Probe] = []
    for network in readers.networks:
        reader = readers.get(network)

        async def probe(reader: Any = reader, network: str = network) -> None:
            async with asyncio.timeout(timeout_seconds):
                observe_chain_head(network, await reader.ping())

        probes.append((f"chain:{network}", probe))
    return probes


EventSink = Callable[[Mapping[str, Any]], Awaitable["WebhookOutcome"]]


def observed_sink(sink: EventSink, source: str = "stripe") -> EventSink:
    """`sink` counting each event by type and outcome (`entitlements_webhook_events_total`)."""

    async def observed(event: Mapping[str, Any]) -> WebhookOutcome:
        event_type = str(event.get("type") or "unknown")[:100]
        try:
            outcome = await sink(event)
        except EntitlementsError:
            observe_webhook(source, event_type, "unavailable")
            raise
        except ValueError:
            observe_webhook(source, event_type, "invalid")
            raise
        except Exception:
            observe_webhook(source, event_type, "error")
            raise
        observe_webhook(source, event_type, outcome.outcome)
        return outcome

    return observed


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def _count_requests(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        HTTP_REQUESTS.labels(_route_name(request), str(exc.status)).inc()
        raise
    HTTP_REQUESTS.labels(_route_name(request), str(response.status)).inc()
    return response


def install_routes(app: web.Application, ops: OpsRoutes) -> None:
    """Add the operations routes (and request counting) to the shim's app before it starts."""

    async def metrics(request: web.Request) -> web.Response:
        body = render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def readyz(request: web.Request) -> web.Response:
        timeout = ops.probe_timeout_seconds
        required, optional = await asyncio.gather(
            asyncio.gather(*(_check(p, timeout) for p in ops.probes)),
            asyncio.gather(*(_check(p, timeout) for p in ops.optional_probes)),
        )
        states = {name: _state(name, error, ops) for name, error in (*required, *optional)}
        for name, state in states.items():
            set_dependency_up(name, state == "ok")
        down = sorted(name for name, error in required if error is not None)
        body: dict[str, Any] = {
            "status": "unavailable" if down else "ready",
            "checks": states,
        }
        if down:
            body["down"] = down
        if "verbose" in request.query:
            details = _authorize(request, ops) is None
            errors = dict((*required, *optional))
            required_names = {name for name, _ in required}
            heads = chain_heads()
            dependencies: dict[str, dict[str, Any]] = {}
            for name, state in states.items():
                entry: dict[str, Any] = {"state": state, "required": name in required_names}
                network = name.removeprefix("chain:")
                if name.startswith("chain:") and network in heads:
                    block, age = heads[network]
                    entry["head_block"] = block
                    entry["head_age_seconds"] = round(age, 3)
                if name in ops.reports:
                    entry.update(ops.reports[name]())
                if details:
                    if errors[name] is not None:
                        entry["detail"] = errors[name]
                    if name in ops.targets:
                        entry["target"] = ops.targets[name]
                dependencies[name] = entry
            body["dependencies"] = dependencies
        return web.json_response(body, status=503 if down else 200)

    async def admin(request: web.Request) -> web.Response:
        refusal = _authorize(request, ops)
        if refusal is not None:
            return refusal
        if ops.admin is None:
            return web.json_response({"error": "the admin dashboard is not configured"}, status=503)
        try:
            as_of, window = _dashboard_params(request)
            figures = await ops.admin.revenue_metrics(as_of=as_of, churn_window_days=window)
            funds, more = await _unsettled_funds(ops.admin)
            extra = "".join([await section() for section in ops.sections])
        except InvalidArgument as exc:
            return web.json_response({"error": exc.message}, status=400)
        except EntitlementsError as exc:
            log.warning("admin dashboard: %s", exc)
            return web.json_response({"error": exc.message}, status=503)
        return web.Response(
            text=render_html(figures, funds, more_funds=more, extra=extra),
            content_type="text/html",
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    async def favicon(request: web.Request) -> web.Response:
        return web.Response(
            text=FAVICON_SVG,
            content_type="image/svg+xml",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.middlewares.append(_count_requests)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/admin", admin)


async def _unsettled_funds(admin: AdminService) -> tuple[list[FundsLine] | None, bool]:
    """The first page of crypto money received without access, for the dashboard's panel."""
    if admin.funds is None:
        return None, False
    rows, token = await admin.funds.list(page_size=20)
    lines = []
    for r in rows:
        if r.payment is not None:
            p = r.payment
            amount = format_amount(int(p.received_base_units), p.decimals)
            lines.append(
                FundsLine(r.item_id, r.kind, amount, p.currency, p.account_id, p.tx_hash or "")
            )
        elif r.transfer is not None:
            t = r.transfer
            decimals = await admin.funds.decimals(r)
            amount = (
                format_amount(int(t.value_base_units), decimals)
                if decimals is not None
                else (f"{t.value_base_units} base units")
            )
            lines.append(FundsLine(r.item_id, r.kind, amount, t.currency, "", t.tx_hash))
    return lines, bool(token)


async def _check(probe: Probe, timeout_seconds: float) -> tuple[str, str | None]:
    """(name, None) when the dependency answered, else (name, why not). The why may name hosts
    and users (a database URL in an error): only admins see it."""
    name, check = probe
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds):
            await check()
    except TimeoutError:
        return name, f"no answer within {timeout_seconds:g} s"
    except Exception as exc:
        detail = str(exc) if isinstance(exc, EntitlementsError) else type(exc).__name__
        return name, detail[:300]
    log.debug("probe %s answered in %.1f ms", name, (time.perf_counter() - started) * 1000)
    return name, None


def _state(name: str, error: str | None, ops: OpsRoutes) -> str:
    """The generic state anyone may see: ok, down, or stalled (a chain head standing still)."""
    if error is not None:
        return "down"
    if name.startswith("chain:"):
        network = name.removeprefix("chain:")
        limit = ops.stall_after_seconds.get(
            network, None if network == "local" else DEFAULT_STALL_SECONDS
        )
        head = chain_heads().get(network)
        if limit is not None and head is not None and head[1] > limit:
            return "stalled"
    return "ok"


def _dashboard_params(request: web.Request) -> tuple[datetime | None, int]:
    """`?as_of=<ISO 8601>` (UTC without an offset) and `?churn_window_days=<n>`."""
    as_of: datetime | None = None
    raw = request.query.get("as_of")
    if raw:
        try:
            as_of = datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidArgument("as_of", "must be an ISO 8601 time") from None
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
    window = request.query.get("churn_window_days", "0")
    if not window.isdigit():
        raise InvalidArgument("churn_window_days", "must be a whole number of days")
    return as_of, int(window)


def _authorize(request: web.Request, ops: OpsRoutes) -> web.Response | None:
    if ops.dev_mode:
        return None
    token = request.query.get("token", "")
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    caller = ops.callers.get(token_digest(token)) if token else None
    if caller is None:
        return web.json_response(
            {"error": "send 'Authorization: Bearer <token>' or '?token=' of an admin caller"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="entitlements-admin"'},
        )
    if ADMIN_SCOPE not in caller.scopes:
        return web.json_response(
            {"error": f"caller {caller.name!r} lacks the scope 'admin'"}, status=403
        )
    return None
