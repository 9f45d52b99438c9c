"""Prometheus metrics of the service, on one registry served at `GET /metrics`.

Cheap on the hot path: RPC metrics are plain integers per method and status code (`RpcMetrics`,
about 0.5 us a call), and the counters the code already keeps (cache hits and misses, usage
events, in-flight calls, chain reads) are read only when scraped (`RuntimeCollector`).

Chain metrics are defined here for the chain adapters and the crypto payment watcher to call:
`observe_chain_read` (or the `chain_read` context manager) around each JSON-RPC round trip, and
`set_watcher_lag` after each poll of the watcher.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from adapters.chains import ChainReaders
    from entitlements.cache import EntitlementCache
    from entitlements.observability.in_flight import Budgets
    from entitlements.service import EntitlementService
    from entitlements.usage.ledger import UsageLedger

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "RpcMetrics",
    "RuntimeSource",
    "chain_heads",
    "chain_read",
    "expose_worker_restarts",
    "observe_chain_head",
    "observe_chain_read",
    "observe_webhook",
    "register_runtime",
    "render",
    "rpc_metrics",
    "set_dependency_up",
    "set_watcher_lag",
]

#: The service's own registry (not the library's global one, which other code may fill).
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

WEBHOOK_EVENTS = Counter(
    "entitlements_webhook_events",
    "Webhook events received, by source, event type and outcome (processed, duplicate, "
    "ignored, failed, invalid, unavailable, error).",
    ("source", "type", "outcome"),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "entitlements_http_requests",
    "HTTP requests to the shim, by route and status (bad webhook signatures show here as 400).",
    ("route", "status"),
    registry=REGISTRY,
)
CHAIN_READ_DURATION = Histogram(
    "entitlements_chain_read_duration_seconds",
    "Time of one JSON-RPC round trip to a chain node, by network and method.",
    ("network", "method"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CHAIN_READ_ERRORS = Counter(
    "entitlements_chain_read_errors",
    "Chain reads that failed (timeout, unreachable, RPC error, lagging node), by network and kind.",
    ("network", "kind"),
    registry=REGISTRY,
)
CHAIN_WATCHER_LAG = Gauge(
    "entitlements_chain_watcher_lag_blocks",
    "How many blocks the payment watcher's processed height is behind the node's head.",
    ("network",),
    registry=REGISTRY,
    multiprocess_mode="livemax",  # with workers: the worst lag of a live worker
)
CHAIN_HEAD = Gauge(
    "entitlements_chain_head_block",
    "The latest block number seen on each network (payment watcher or readiness probe).",
    ("network",),
    registry=REGISTRY,
    multiprocess_mode="livemax",
)


class _Series:
    """One (method, code)'s count, sum and per-bucket counts (not cumulative)."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)  # the last one is +Inf


class RpcMetrics:
    """One RPC's request count and latency histogram per status code.

    Plain integers read at scrape time, updated from gRPC's handler threads (the hot path) and
    the event loop (calls bridged to it) under one lock per RPC: still a fraction of the cost of
    prometheus_client's Counter and Histogram children (a lock and a label lookup each).
    """

    __slots__ = ("_by_code", "_lock", "method", "service")

    def __init__(self, service: str, method: str) -> None:
        self.service = service
        self.method = method
        self._by_code: dict[str, _Series] = {}
        self._lock = threading.Lock()

    def observe(self, code: str, seconds: float) -> None:
        bucket = bisect_left(_LATENCY_BUCKETS, seconds)
        with self._lock:
            series = self._by_code.get(code)
            if series is None:
                series = self._by_code[code] = _Series()
            series.buckets[bucket] += 1
            series.count += 1
            series.total += seconds

    def series(self) -> list[tuple[str, _Series]]:
        with self._lock:
            return list(self._by_code.items())


_RPCS: dict[tuple[str, str], RpcMetrics] = {}


def rpc_metrics(qualname: str) -> RpcMetrics:
    """The metrics of a servicer method named like "EntitlementsServicer.CanUseFeature"."""
    owner, _, method = qualname.rpartition(".")
    service = owner.removesuffix("r") if owner.endswith("Servicer") else owner
    return rpc_metrics_for(service or "unknown", method)


def rpc_metrics_for(service: str, method: str) -> RpcMetrics:
    """The one RpcMetrics of (service, method): the servicer's wrapper, the auth interceptor's
    refusals and the streams all count into it."""
    metrics = _RPCS.get((service, method))
    if metrics is None:  # setdefault: two threads asking at once get the same one
        metrics = _RPCS.setdefault((service, method), RpcMetrics(service, method))
    return metrics


def rpc_metrics_for_path(path: str) -> RpcMetrics:
    """The RpcMetrics of a full method path like "/nchat.entitlements.v1.UsageService/GetUsage"."""
    qualified, _, method = path.rpartition("/")
    return rpc_metrics_for(qualified.rsplit(".", 1)[-1] or "unknown", method)


class RpcCollector(Collector):
    """`entitlements_rpc_requests_total` and `entitlements_rpc_duration_seconds` from every
    decorated RPC's `RpcMetrics`."""

    def collect(self) -> Iterable[Metric]:
        labels = ("service", "method", "code")
        requests = CounterMetricFamily(
            "entitlements_rpc_requests",
            "Unary RPCs handled, by service, method and status code.",
            labels=labels,
        )
        duration = HistogramMetricFamily(
            "entitlements_rpc_duration_seconds",
            "Server-side time of unary RPCs, by service, method and status code.",
            labels=labels,
        )
        bounds = [*(repr(float(b)) for b in _LATENCY_BUCKETS), "+Inf"]
        for rpc in list(_RPCS.values()):
            for code, series in rpc.series():
                values = (rpc.service, rpc.method, code)
                requests.add_metric(values, series.count)
                cumulative = list(accumulate(series.buckets))
                duration.add_metric(
                    values, list(zip(bounds, cumulative, strict=True)), sum_value=series.total
                )
        yield requests
        head_age = GaugeMetricFamily(
            "entitlements_chain_head_age_seconds",
            "Seconds since each network's head last moved (as seen by the payment watcher or "
            "the readiness probe); a growing value on a public chain is a stalled node.",
            labels=("network",),
        )
        for network, (_, age) in sorted(chain_heads().items()):
            head_age.add_metric((network,), age)
        yield head_age
        yield duration


REGISTRY.register(RpcCollector())


def observe_webhook(source: str, event_type: str, outcome: str) -> None:
    WEBHOOK_EVENTS.labels(source, event_type or "unknown", outcome).inc()


def observe_chain_read(network: str, method: str, seconds: float, error: str | None = None) -> None:
    """Record one chain read: its time, and `error` (a short kind such as "timeout",
    "unreachable", "rpc_error", "lagging") when it failed."""
    CHAIN_READ_DURATION.labels(network, method).observe(seconds)
    if error is not None:
        CHAIN_READ_ERRORS.labels(network, error).inc()


@contextmanager
def chain_read(network: str, method: str) -> Iterator[None]:
    """Time the block as one chain read; an exception counts as an error of its class's name."""
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        observe_chain_read(network, method, time.perf_counter() - start, type(exc).__name__)
        raise
    observe_chain_read(network, method, time.perf_counter() - start)


DEPENDENCY_UP = Gauge(
    "entitlements_dependency_up",
    "1 when the dependency answered the last readiness probe (/readyz), else 0; by dependency "
    "(database, chain:<network>). Only the database decides readiness.",
    ("dependency",),
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",  # with workers: the last probe of any live worker
)

#: network -> (head block, monotonic time the head last moved): fed by the payment watcher and
#: the readiness probes, read by /readyz and `entitlements_chain_head_age_seconds`.
_HEADS: dict[str, tuple[int, float]] = {}
_heads_lock = threading.Lock()


def set_watcher_lag(network: str, head_block: int, processed_block: int) -> None:
    """The payment watcher's position: the node's head and the last block it has processed."""
    CHAIN_WATCHER_LAG.labels(network).set(max(head_block - processed_block, 0))
    observe_chain_head(network, head_block)


def observe_chain_head(network: str, head_block: int) -> None:
    """A node named its head: remember when it last moved (a head standing still is a stalled
    node, or a chain that mines only on demand, as the local dev chain does)."""
    CHAIN_HEAD.labels(network).set(head_block)
    now = time.monotonic()
    with _heads_lock:
        known = _HEADS.get(network)
        if known is None or known[0] != head_block:
            _HEADS[network] = (head_block, now)


def chain_heads() -> dict[str, tuple[int, float]]:
    """network -> (the last head seen, seconds since it last moved)."""
    now = time.monotonic()
    with _heads_lock:
        return {network: (block, now - moved) for network, (block, moved) in _HEADS.items()}


def set_dependency_up(dependency: str, up: bool) -> None:
    DEPENDENCY_UP.labels(dependency).set(1 if up else 0)


@dataclass(eq=False)
class RuntimeSource:
    """Counters one server's parts already keep; read at scrape time."""

    cache: EntitlementCache
    in_flight: Budgets
    ledger: UsageLedger | None = None
    readers: ChainReaders | None = None
    service: EntitlementService | None = None


class RuntimeCollector(Collector):
    """Sums the registered sources' counters (tests run several servers in one process)."""

    def __init__(self) -> None:
        self._sources: list[RuntimeSource] = []
        self._lock = threading.Lock()

    def add(self, source: RuntimeSource) -> Callable[[], None]:
        with self._lock:
            self._sources.append(source)

        def remove() -> None:
            with self._lock:
                if source in self._sources:
                    self._sources.remove(source)

        return remove

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            sources = list(self._sources)
        hits = sum(s.cache.hits for s in sources)
        misses = sum(s.cache.misses for s in sources)
        yield _counter("entitlements_cache_hits", "Checks answered from the cache.", hits)
        yield _counter("entitlements_cache_misses", "Checks that had to load the account.", misses)
        yield _counter(
            "entitlements_cache_stale_served",
            "Checks answered from an expired entry because the database was down.",
            sum(s.cache.stale_served for s in sources),
        )
        yield _gauge(
            "entitlements_cache_hit_ratio",
            "hits / (hits + misses) since start (0 before any check).",
            hits / (hits + misses) if hits + misses else 0.0,
        )
        yield _gauge(
            "entitlements_cache_entries",
            "Accounts in the cache.",
            sum(len(s.cache) for s in sources),
        )
        in_flight = GaugeMetricFamily(
            "entitlements_rpc_in_flight",
            "Unary calls being handled, by budget (reads, writes).",
            labels=("budget",),
        )
        shed = CounterMetricFamily(
            "entitlements_rpc_shed",
            "Calls refused with RESOURCE_EXHAUSTED because their budget (reads, writes) was full.",
            labels=("budget",),
        )
        for kind in ("reads", "writes"):
            budgets = [getattr(s.in_flight, kind) for s in sources]
            in_flight.add_metric((kind,), sum(b.current for b in budgets))
            shed.add_metric((kind,), sum(b.shed for b in budgets))
        yield in_flight
        yield shed
        services = [s.service for s in sources if s.service is not None]
        yield _counter(
            "entitlements_min_revision_read_throughs",
            "Checks whose min_revision was newer than the cache: read through to the database.",
            sum(x.read_throughs for x in services),
        )
        yield _counter(
            "entitlements_min_revision_stale",
            "Checks refused with STALE_REVISION: the database had not reached their min_revision.",
            sum(x.stale_revisions for x in services),
        )
        ledgers = [s.ledger for s in sources if s.ledger is not None]
        yield _counter(
            "entitlements_usage_events_applied",
            "Usage events counted.",
            sum(x.events_applied for x in ledgers),
        )
        yield _counter(
            "entitlements_usage_events_duplicate",
            "Usage events whose idempotency key was seen before (not counted again).",
            sum(x.events_duplicate for x in ledgers),
        )
        yield _counter(
            "entitlements_usage_commits",
            "Group commits of the usage writer.",
            sum(x.commits for x in ledgers),
        )
        requests = CounterMetricFamily(
            "entitlements_chain_requests",
            "JSON-RPC round trips made for chain reads, by network.",
            labels=("network",),
        )
        per_network: dict[str, int] = {}
        for s in sources:
            if s.readers is None:
                continue
            for network in s.readers.networks:
                reader = s.readers.get(network)
                per_network[network] = per_network.get(network, 0) + reader.requests
        for network, count in sorted(per_network.items()):
            requests.add_metric((network,), count)
        yield requests
        head_age = GaugeMetricFamily(
            "entitlements_chain_head_age_seconds",
            "Seconds since each network's head last moved (as seen by the payment watcher or "
            "the readiness probe); a growing value on a public chain is a stalled node.",
            labels=("network",),
        )
        for network, (_, age) in sorted(chain_heads().items()):
            head_age.add_metric((network,), age)
        yield head_age


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


RUNTIME = RuntimeCollector()
REGISTRY.register(RUNTIME)


def register_runtime(source: RuntimeSource) -> Callable[[], None]:
    """Expose a server's counters until the returned function is called."""
    return RUNTIME.add(source)


class _WorkerRestarts(Collector):
    """`entitlements_worker_restarts_total`, read from the `serve --workers N` supervisor."""

    def __init__(self) -> None:
        self.read: Callable[[], int] | None = None

    def collect(self) -> Iterable[Metric]:
        if self.read is not None:
            yield _counter(
                "entitlements_worker_restarts",
                "Workers the `serve --workers N` parent replaced after they died, since it "
                "started (the service's figure: every worker reports the same).",
                self.read(),
            )


_WORKER_RESTARTS = _WorkerRestarts()
REGISTRY.register(_WORKER_RESTARTS)


def expose_worker_restarts(read: Callable[[], int]) -> None:
    """Report the supervisor's count of replaced workers (called in each forked worker)."""
    _WORKER_RESTARTS.read = read


#: Renders /metrics; `serve --workers N` swaps in the whole service's view.
renderer: Callable[[], bytes] | None = None


def render() -> bytes:
    """The registry in Prometheus' text format."""
    if renderer is not None:
        return renderer()
    return generate_latest(REGISTRY)
