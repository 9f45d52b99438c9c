"""Settings shared by both clients: channel options and local-evaluation tuning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nchat.entitlements.client._retry import RetryPolicy

__all__ = ["ClientOptions"]

#: Reconnect fast after a server restart: grpc's default backoff (1 s, growing to 120 s) would keep
#: a hot-path caller on failures long after the server is back.
_CHANNEL_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


def channel_options(extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The defaults above, overridden by the caller's `options` of the same name."""
    given = {name for name, _ in extra}
    return [*(o for o in _CHANNEL_DEFAULTS if o[0] not in given), *extra]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How local evaluation behaves (only used with `local_evaluation=True`).

    - `max_accounts`: how many accounts are watched and answered locally (the server's cap per
      watch is 10,000); further accounts are answered over RPC.
    - `min_reopen_interval`: the stream is reopened at most this often when new accounts appear.
    - `resync_interval`: a connected stream is reopened (full fresh state) after this long, to
      pick up changes the server does not push (override expiries, writes on other replicas).
    - `max_stale`: while the stream is down and the RPC fails too, a cached answer up to this old
      (seconds since the stream went down) is returned with `source="stale"`; older: the error.
    - `reconnect`: backoff between attempts to reopen a broken stream (attempts never stop).
    - `stream_open_timeout`: deadline of the ListPlans call made before the stream opens.
    """

    max_accounts: int = 10_000
    min_reopen_interval: float = 0.05
    resync_interval: float = 300.0
    max_stale: float = 300.0
    reconnect: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=1, initial_backoff=0.1, max_backoff=5.0)
    )
    stream_open_timeout: float = 5.0
