"""Operations routes on the HTTP shim: `GET /metrics`, `GET /readyz`, `GET /admin`.

- `/metrics`: Prometheus text format, no authentication (bind the HTTP port to a private
  network, as for any scrape target).
- `/readyz`: 200 when every dependency answers (the database; the chain nodes when token gating
  is configured), else 503 with a JSON body naming what is down. `/healthz` (the shim's) only
  says the process is alive.
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

from entitlements.admin.dashboard import render_html
from entitlements.config import Caller, token_digest
from entitlements.errors import EntitlementsError, InvalidArgument
from entitlements.observability.metrics import CONTENT_TYPE, HTTP_REQUESTS, observe_webhook, render

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

    probes: Sequence[Probe] = ()
    admin: AdminService | None = None
    callers: Mapping[bytes, Caller] = field(default_factory=dict)
    dev_mode: bool = False
    probe_timeout_seconds: float = 2.0
    #: More sections of the /admin page (HTML), e.g. outbound events; rendered in order.
    sections: list[Callable[[], Awaitable[str]]] = field(default_factory=list)


def chain_probes(readers: ChainReaders, timeout_seconds: float) -> list[Probe]:
    """One probe per configured network: the node answers `eth_blockNumber`."""
    probes: list[Probe] = []
    for network in readers.networks:
        reader = readers.get(network)

        async def probe(reader: Any = reader) -> None:
            async with asyncio.timeout(timeout_seconds):
                await reader.w3.eth.block_number

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
        results = await asyncio.gather(*(_check(p, ops.probe_timeout_seconds) for p in ops.probes))
        checks = dict(results)
        down = sorted(name for name, state in checks.items() if state != "ok")
        if down:
            return web.json_response(
                {"status": "unavailable", "down": down, "checks": checks}, status=503
            )
        return web.json_response({"status": "ready", "checks": checks})

    async def admin(request: web.Request) -> web.Response:
        refusal = _authorize(request, ops)
        if refusal is not None:
            return refusal
        if ops.admin is None:
            return web.json_response({"error": "the admin dashboard is not configured"}, status=503)
        try:
            as_of, window = _dashboard_params(request)
            figures = await ops.admin.revenue_metrics(as_of=as_of, churn_window_days=window)
            extra = "".join([await section() for section in ops.sections])
        except InvalidArgument as exc:
            return web.json_response({"error": exc.message}, status=400)
        except EntitlementsError as exc:
            log.warning("admin dashboard: %s", exc)
            return web.json_response({"error": exc.message}, status=503)
        return web.Response(
            text=render_html(figures, extra),
            content_type="text/html",
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    app.middlewares.append(_count_requests)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/admin", admin)


async def _check(probe: Probe, timeout_seconds: float) -> tuple[str, str]:
    name, check = probe
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds):
            await check()
    except TimeoutError:
        return name, f"down: no answer within {timeout_seconds:g} s"
    except Exception as exc:
        detail = exc.message if isinstance(exc, EntitlementsError) else type(exc).__name__
        return name, f"down: {detail}"[:300]
    log.debug("probe %s answered in %.1f ms", name, (time.perf_counter() - started) * 1000)
    return name, "ok"


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
