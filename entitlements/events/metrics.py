"""Outbound events in /metrics: queue depth, age of the oldest undelivered event, failures per
endpoint. Read from what each dispatcher last saw (it refreshes every few seconds), so a scrape
never waits on the database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from entitlements.events.dispatcher import Dispatcher
from entitlements.observability.metrics import REGISTRY

__all__ = ["register_dispatcher"]


class _EventsCollector(Collector):
    def __init__(self) -> None:
        self._dispatchers: list[Dispatcher] = []
        self._lock = threading.Lock()

    def add(self, dispatcher: Dispatcher) -> Callable[[], None]:
        with self._lock:
            self._dispatchers.append(dispatcher)

        def remove() -> None:
            with self._lock:
                if dispatcher in self._dispatchers:
                    self._dispatchers.remove(dispatcher)

        return remove

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            dispatchers = list(self._dispatchers)
        depth = GaugeMetricFamily(
            "entitlements_events_queue_depth",
            "Event deliveries not yet delivered or failed (plus events not yet fanned out).",
        )
        age = GaugeMetricFamily(
            "entitlements_events_oldest_undelivered_age_seconds",
            "Age of the oldest event with a delivery still pending.",
        )
        failed = GaugeMetricFamily(
            "entitlements_events_failed_deliveries",
            "Deliveries that gave up (3 days of retries), by endpoint; replay them via admin.",
            labels=["endpoint"],
        )
        attempts = CounterMetricFamily(
            "entitlements_events_attempt_failures",
            "Failed delivery attempts by endpoint, since this process started.",
            labels=["endpoint"],
        )
        breaker = GaugeMetricFamily(
            "entitlements_events_circuit_open",
            "1 while an endpoint's circuit breaker is open on this process.",
            labels=["endpoint"],
        )
        stats = next((d.stats for d in dispatchers if d.stats is not None), None)
        if stats is not None:
            depth.add_metric([], stats.depth)
            age.add_metric([], stats.oldest_age_s)
        totals: dict[str, int] = {}
        for d in dispatchers:
            for name, count in d.attempt_failures.items():
                totals[name] = totals.get(name, 0) + count
            for e in d.endpoints:
                breaker.add_metric([e.name], 1.0 if d.breaker_open(e.name) else 0.0)
                if stats is not None:
                    failed.add_metric([e.name], stats.failed.get(e.name, 0))
        for name, count in sorted(totals.items()):
            attempts.add_metric([name], count)
        yield from (depth, age, failed, attempts, breaker)


_COLLECTOR = _EventsCollector()
REGISTRY.register(_COLLECTOR)


def register_dispatcher(dispatcher: Dispatcher) -> Callable[[], None]:
    """Expose a dispatcher's figures until the returned function is called."""
    return _COLLECTOR.add(dispatcher)
