"""`/metrics` of `serve --workers N` reports the whole service, whichever worker is scraped.

prometheus-client's multiprocess mode: each worker keeps its metrics in files of its own in one
directory (PROMETHEUS_MULTIPROC_DIR, made and emptied by the parent before it forks, removed at
its exit), and a scrape of any worker merges every worker's files.

- The prometheus-client metrics (webhooks, HTTP requests, chain reads, gauges) are written to
  the files as they change: exact at every scrape.
- The figures kept as plain integers for their cost (RPC counts and latencies, about 1 us a call
  against about 10 us for three writes to the files) and the counters the code keeps anyway
  (cache, usage events, in-flight calls, chain requests, events...) are copied into the worker's
  files every `PUBLISH_SECONDS`, when that worker is scraped and when it stops: another worker's
  part is at most that old (a worker killed with SIGKILL loses at most its last second).
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

from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from entitlements.observability import metrics

__all__ = ["PUBLISH_SECONDS", "multiprocess_metrics", "publish", "start_publisher", "worker_exited"]

log = logging.getLogger(__name__)

#: How often a worker copies its in-process figures into its files.
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
_RPC_REQUESTS = "entitlements_rpc_requests"
_RPC_DURATION = "entitlements_rpc_duration_seconds"
#: Published from the RPC series themselves (their buckets as the files keep them).
_FROM_SERIES = frozenset({_RPC_REQUESTS, _RPC_DURATION})
_RPC_LABELS = ("service", "method", "code")
_BOUNDS = (*(floatToGoString(b) for b in metrics._LATENCY_BUCKETS), "+Inf")  # type: ignore[no-untyped-call]

_directory: str | None = None


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
    """This worker's copies of its in-process figures in its multiprocess files."""

    def __init__(self) -> None:
        self._values: dict[tuple[Any, ...], Any] = {}
        self._last: dict[tuple[Any, ...], float] = {}
        self._lock = threading.Lock()

    def _set(
        self,
        typ: str,
        mode: str,
        family: str,
        sample: str,
        labels: tuple[tuple[str, str], ...],
        documentation: str,
        value: float,
    ) -> None:
        key = (typ, mode, family, sample, labels)
        if self._last.get(key) == value:
            return  # unchanged since the last copy: no write
        written = self._values.get(key)
        if written is None:
            written = self._values[key] = values.ValueClass(
                typ,
                family,
                sample,
                tuple(k for k, _ in labels),
                tuple(v for _, v in labels),
                documentation,
                multiprocess_mode=mode,
            )
        written.set(value)
        self._last[key] = value

    def publish(self) -> None:
        with self._lock:
            self._publish_rpcs()
            for family in _local_families():
                if family.type == "counter":
                    typ, mode = "counter", ""
                elif family.type == "gauge":
                    typ, mode = "gauge", _GAUGE_MODES.get(family.name, "livemax")
                else:
                    continue
                for sample in family.samples:
                    if not sample.name.endswith("_created"):
                        labels = tuple(sorted(sample.labels.items()))
                        self._set(
                            typ,
                            mode,
                            family.name,
                            sample.name,
                            labels,
                            family.documentation,
                            sample.value,
                        )

    def _publish_rpcs(self) -> None:
        """The RPC series as prometheus-client's histogram files keep them: a count per bucket
        (not cumulative) and the sum; the merge adds them up."""
        for rpc in list(metrics._RPCS.values()):
            for code, series in rpc.series():
                labels = tuple(zip(_RPC_LABELS, (rpc.service, rpc.method, code), strict=True))
                self._set(
                    "counter",
                    "",
                    _RPC_REQUESTS,
                    f"{_RPC_REQUESTS}_total",
                    labels,
                    "Unary RPCs handled, by service, method and status code.",
                    series.count,
                )
                doc = "Server-side time of unary RPCs, by service, method and status code."
                self._set(
                    "histogram",
                    "",
                    _RPC_DURATION,
                    f"{_RPC_DURATION}_sum",
                    labels,
                    doc,
                    series.total,
                )
                for bound, count in zip(_BOUNDS, list(series.buckets), strict=True):
                    self._set(
                        "histogram",
                        "",
                        _RPC_DURATION,
                        f"{_RPC_DURATION}_bucket",
                        (*labels, ("le", bound)),
                        doc,
                        count,
                    )


_PUBLISHED = _Published()
_publisher_pid: int | None = None


def publish() -> None:
    """Copy this worker's in-process figures into its files now (a no-op without workers)."""
    if _directory is not None:
        _PUBLISHED.publish()


def start_publisher() -> None:
    """In a worker: copy its figures every `PUBLISH_SECONDS` (once per process; a no-op
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
            if family.name not in _DERIVED and family.name not in _FROM_SERIES:
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
