"""Operations: Prometheus metrics, structured logs, health and readiness probes."""

from __future__ import annotations
