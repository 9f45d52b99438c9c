"""Wiring of operations: RPC log settings, the counters behind /metrics, the readiness probes
and the admin dashboard's routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from entitlements.errors import Unavailable
from entitlements.observability.http import OpsRoutes, Probe, chain_probes
from entitlements.observability.logs import set_caller_resolver, set_slow_call_seconds
from entitlements.observability.metrics import (
    RuntimeSource,
    register_runtime,
    set_dependency_up,
)
from entitlements.observability.multiprocess import publish as publish_metrics
from entitlements.observability.tracing import flush as flush_traces
from entitlements.server.auth import Authenticator
from entitlements.store.engine import safe_url

if TYPE_CHECKING:
    from adapters.stripe import StripeGateway
    from entitlements.admin import AdminService
    from entitlements.config import Settings
    from entitlements.server.deps import Deps

__all__ = ["install_observability"]


def install_observability(
    settings: Settings, deps: Deps, *, admin: AdminService | None = None
) -> OpsRoutes:
    """Expose `deps`' counters to /metrics (until `deps.close()`) and build the ops routes."""
    set_slow_call_seconds(settings.slow_call_ms / 1000)
    if settings.dev_mode:
        set_caller_resolver(lambda metadata: "dev")
    else:
        auth = Authenticator(settings.callers)

        def resolve(metadata: Any) -> str:
            caller = auth.caller_for(metadata)
            return caller.name if caller is not None else "anonymous"

        set_caller_resolver(resolve)
    readers = deps.token_gate.gate.readers if deps.token_gate is not None else None
    unregister = register_runtime(
        RuntimeSource(
            cache=deps.service.cache,
            in_flight=deps.in_flight,
            ledger=deps.ledger,
            readers=readers,
            service=deps.service,
        )
    )

    async def close() -> None:
        publish_metrics()  # with workers: this worker's last figures stay in the sums
        unregister()

    deps.closers.append(close)
    # Run last (closers run in reverse): spans of the other closers' work leave too.
    deps.closers.insert(0, flush_traces)
    probes: list[Probe] = [("database", deps.store.ping)]
    optional: list[Probe] = []
    reports: dict[str, Callable[[], Mapping[str, Any]]] = {}
    if readers is not None and readers.networks:
        optional = chain_probes(readers, settings.chains.request_timeout_seconds)
    if deps.billing is not None:
        optional.append(("stripe", _stripe_probe(deps.billing.gateway)))
        reports["stripe"] = _stripe_report(deps.billing.gateway)
    return OpsRoutes(
        probes=probes,
        optional_probes=optional,
        reports=reports,
        targets={"database": safe_url(deps.store.engine.url)},
        admin=admin,
        callers=settings.callers,
        dev_mode=settings.dev_mode,
    )


def _stripe_probe(gateway: StripeGateway) -> Callable[[], Awaitable[None]]:
    """Readiness's view of Stripe: down when the last exchange failed (never makes /readyz
    503). The gateway's exchanges also set the dependency metric as they happen."""
    gateway.reachability.observer = lambda up: set_dependency_up("stripe", up)

    async def probe() -> None:
        state = await gateway.probe_reachability()
        if state.reachable is False:
            raise Unavailable(f"Stripe: {state.last_error}")

    return probe


def _stripe_report(gateway: StripeGateway) -> Callable[[], Mapping[str, Any]]:
    def report() -> Mapping[str, Any]:
        state = gateway.reachability.state()
        return {
            "last_success_seconds_ago": _rounded(state.last_success_seconds_ago),
            "last_failure_seconds_ago": _rounded(state.last_failure_seconds_ago),
            "probe_interval_seconds": gateway.reachability.probe_interval_seconds,
        }

    return report


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
