"""Outbound event settings, read once from the environment (see docs/events.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from entitlements.events.endpoints import Endpoint, EndpointsError, load_endpoints
from entitlements.events.retry import Backoff

__all__ = ["EventSettings", "EventSettingsError"]


class EventSettingsError(ValueError):
    """An event setting is invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class EventSettings:
    #: Receivers, from the TOML file named by ENTITLEMENTS_EVENT_ENDPOINTS (none: no dispatch).
    endpoints: tuple[Endpoint, ...] = ()
    endpoints_file: Path | None = None
    #: How often each replica's dispatcher looks for due deliveries.
    poll_interval_seconds: float = 1.0
    #: Retry n waits about base * 2**(n-1) (with jitter), at most `retry_max_seconds`.
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 6 * 3600.0
    #: A delivery is failed once its event is this old (3 days).
    give_up_seconds: float = 3 * 86400.0
    #: Failures in a row that open an endpoint's circuit, and how long it stays open.
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    #: A claim outlives a send by this margin; a dispatcher that died mid-send is retried then.
    lease_margin_seconds: float = 30.0
    #: Deliveries sent at once per endpoint.
    batch_size: int = 50
    #: Events are deleted this long after they happened, once no delivery is pending.
    retention_seconds: float = 30 * 86400.0
    #: `subscription.renewal_upcoming` is written this many days before a period ends.
    renewal_notice_days: float = 7.0
    renewal_scan_interval_seconds: float = 3600.0

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.retry_base_seconds, self.retry_max_seconds, self.give_up_seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EventSettings:
        file = env.get("ENTITLEMENTS_EVENT_ENDPOINTS") or None
        try:
            endpoints = load_endpoints(Path(file)) if file else ()
        except EndpointsError as exc:
            raise EventSettingsError(str(exc)) from exc
        return cls(
            endpoints=endpoints,
            endpoints_file=Path(file) if file else None,
            poll_interval_seconds=_number(env, "ENTITLEMENTS_EVENT_POLL_INTERVAL_SECONDS", 1.0),
            retry_base_seconds=_number(env, "ENTITLEMENTS_EVENT_RETRY_BASE_SECONDS", 5.0),
            retry_max_seconds=_number(env, "ENTITLEMENTS_EVENT_RETRY_MAX_SECONDS", 21600.0),
            give_up_seconds=86400.0 * _number(env, "ENTITLEMENTS_EVENT_GIVE_UP_DAYS", 3.0),
            breaker_failures=int(_number(env, "ENTITLEMENTS_EVENT_BREAKER_FAILURES", 5, 1)),
            breaker_cooldown_seconds=_number(
                env, "ENTITLEMENTS_EVENT_BREAKER_COOLDOWN_SECONDS", 30.0
            ),
            lease_margin_seconds=_number(env, "ENTITLEMENTS_EVENT_LEASE_MARGIN_SECONDS", 30.0),
            batch_size=int(_number(env, "ENTITLEMENTS_EVENT_BATCH_SIZE", 50, 1)),
            retention_seconds=86400.0 * _number(env, "ENTITLEMENTS_EVENT_RETENTION_DAYS", 30.0),
            renewal_notice_days=_number(env, "ENTITLEMENTS_RENEWAL_NOTICE_DAYS", 7.0),
            renewal_scan_interval_seconds=_number(
                env, "ENTITLEMENTS_RENEWAL_SCAN_INTERVAL_SECONDS", 3600.0
            ),
        )


def _number(env: Mapping[str, str], name: str, default: float, minimum: float = 0.001) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise EventSettingsError(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise EventSettingsError(f"{name}: must be at least {minimum:g}, got {raw!r}")
    return value
