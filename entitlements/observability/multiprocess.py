"""`/metrics` of `serve --workers N` reports the whole service, whichever worker is scraped.

prometheus-client's multiprocess mode: each worker keeps its metrics in files of its own in one
directory (PROMETHEUS_MULTIPROC_DIR, made and emptied by the parent before it forks, removed at
its exit), and a scrape of any worker merges every worker's files.

- RPC counts and latencies and the other prometheus-client metrics are written to the files as
  they change: exact at every scrape.
- The counters the code keeps anyway (cache hits, usage events, in-flight calls, chain requests,
  events...; read by custom collectors) are copied into the worker's files every
  `PUBLISH_SECONDS` and at each scrape of that worker: another worker's figure is at most that
  old.
- Counters sum over every worker that ever ran (a dead worker's count stays, so totals never go
  back); gauges say how they merge (`multiprocess_mode`, here in `_GAUGE_MODES`), and the "live"
  ones of a dead worker are dropped by the parent (`worker_exited`).
- Per-process figures (process_*, python_gc_*) are not reported: they would be one worker's.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from entitlements.observability import metrics

__all__ = ["PUBLISH_SECONDS", "multiprocess_metrics", "publish", "start_publisher", "worker_exited"]

log = logging.getLogger(__name__)

#: How often a worker copies its in-process counters into its files.
PUBLISH_SECONDS = 1.0

#: How the workers' values of a published gauge merge (default "livemax": figures every worker
#: reads from the same database, such as the events queue depth, are not to be summed).
_GAUGE_MODES = {
    "entitlements_rpc_in_flight": "livesum",
    "entitlements_cache_entries": "livesum",
    "entitlements_chain_head_age_seconds": "livemin",
}
#: Derived at scrape time from the merged counters instead.
_DERIVED = frozenset({"entitlements_cache_hit_ratio"})
_PER_PROCESS = (ProcessCollector, GCCollector, PlatformCollector)

_directory: str | None = None


class _SharedSeries(metrics._Series):
    """One (service, method, code)'s RPC count and latency, in the worker's multiprocess files."""

    __slots__ = ("_count", "_duration")

    def __init__(self, service: str, method: str, code: str) -> None:
        super().__init__()
        self._count = _RPC_REQUESTS.labels(service, method, code)
        self._duration = _RPC_DURATION.labels(service, method, code)

    def add(self, seconds: float) -> None:
        self._count.inc()
        self._duration.observe(seconds)


# Not registered anywhere: in multiprocess mode they are read from the files.
_RPC_REQUESTS = Counter(
    "entitlements_rpc_requests",
    "Unary RPCs handled, by service, method and status code.",
    ("service", "method", "code"),
    registry=None,
)
_RPC_DURATION = Histogram(
    "entitlements_rpc_duration_seconds",
    "Server-side time of unary RPCs, by service, method and status code.",
    ("service", "method", "code"),
    buckets=metrics._LATENCY_BUCKETS,
    registry=None,
)


@contextlib.contextmanager
def multiprocess_metrics(path: str | None = None) -> Iterator[str]:
    """In the `serve --workers N` parent, before it forks: put the metrics in multiprocess mode
    on `path` (emptied of old files), or on a private directory removed at the end."""
    global _directory
    own = path is None
    directory = tempfile.mkdtemp(prefix="entitlements-metrics-") if path is None else path
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)  # a previous run's files would be summed in
    # prometheus-client's files are named after this variable, read when a value is made.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _directory = directory
    metrics.new_series = _SharedSeries
    metrics.renderer = _render
    try:
        yield directory
    finally:
        if own:
            shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """The parent reaped worker `pid`: drop its live gauges (its counters stay in the sums)."""
    if _directory is not None:
        mark_process_dead(pid, _directory)  # type: ignore[no-untyped-call]


class _Published:
    """This worker's copies of its in-process counters in its multiprocess files."""

    def __init__(self) -> None:
        self._values: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def publish(self) -> None:
        with self._lock:
            for family in _local_families():
                if family.type == "counter":
                    typ, mode = "counter", ""
                elif family.type == "gauge":
                    typ, mode = "gauge", _GAUGE_MODES.get(family.name, "livemax")
                else:
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    labels = tuple(sorted(sample.labels.items()))
                    key = (typ, mode, family.name, sample.name, labels)
                    value = self._values.get(key)
                    if value is None:
                        value = self._values[key] = values.ValueClass(
                            typ,
                            family.name,
                            sample.name,
                            tuple(k for k, _ in labels),
                            tuple(v for _, v in labels),
                            family.documentation,
                            multiprocess_mode=mode,
                        )
                    value.set(sample.value)


_PUBLISHED = _Published()
_publisher_pid: int | None = None


def publish() -> None:
    """Copy this worker's in-process counters into its files now (a no-op without workers)."""
    if _directory is not None:
        _PUBLISHED.publish()


def start_publisher() -> None:
    """In a worker: copy its counters every `PUBLISH_SECONDS` (once per process; a no-op
    without workers)."""
    global _publisher_pid
    if _directory is None or _publisher_pid == os.getpid():
        return
    _publisher_pid = os.getpid()

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(PUBLISH_SECONDS):
            try:
                publish()
            except Exception:  # a scrape must never take the worker down
                log.exception("publishing metrics to %s failed", _directory)

    threading.Thread(target=loop, name="metrics-publisher", daemon=True).start()


def _local_families() -> Iterable[Metric]:
    """The families of this process's custom collectors (the prometheus-client metrics are
    in the files already; per-process ones are not reported)."""
    collectors = list(metrics.REGISTRY._collector_to_names)
    for collector in collectors:
        if isinstance(collector, (MetricWrapperBase, *_PER_PROCESS)):
            continue
        if collector is metrics._WORKER_RESTARTS:
            continue  # the supervisor's figure, the same in every worker: not to be summed
        for family in collector.collect():
            if family.name not in _DERIVED:
                yield family


class _Service(Collector):
    """Every worker's files merged, plus what is derived from the merged figures."""

    def __init__(self, directory: str) -> None:
        self._files = MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        families = list(self._files.collect())  # type: ignore[no-untyped-call]
        yield from families
        totals = {
            f.name: sum(s.value for s in f.samples if s.name == f"{f.name}_total")
            for f in families
            if f.name in ("entitlements_cache_hits", "entitlements_cache_misses")
        }
        hits = totals.get("entitlements_cache_hits", 0.0)
        misses = totals.get("entitlements_cache_misses", 0.0)
        yield GaugeMetricFamily(
            "entitlements_cache_hit_ratio",
            "hits / (hits + misses) since start, over every worker (0 before any check).",
            value=hits / (hits + misses) if hits + misses else 0.0,
        )
        yield from metrics._WORKER_RESTARTS.collect()


def _render() -> bytes:
    assert _directory is not None
    publish()  # this worker's own figures, fresh
    registry = CollectorRegistry()
    registry.register(_Service(_directory))
    return generate_latest(registry)
