"""Whether Stripe answers, as this replica last saw it: every HTTP exchange the SDK makes is
recorded (`ObservedHTTPClient`), and a probe asks Stripe itself only when no call has said
anything for a probe interval (so readiness checks never hammer Stripe: at most one request per
interval per replica, none while billing calls are flowing)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import stripe

__all__ = ["ObservedHTTPClient", "Reachability", "StripeState"]

#: Statuses that mean Stripe did not serve the request (its own trouble, or our key refused).
_FAILED_STATUSES = frozenset({401}) | frozenset(range(500, 600))


@dataclass(frozen=True, slots=True)
class StripeState:
    """What /readyz?verbose shows of Stripe."""

    #: None until a call or probe has said anything.
    reachable: bool | None
    last_success_seconds_ago: float | None
    last_failure_seconds_ago: float | None
    #: Why the last failure failed (for admins only: it may name hosts).
    last_error: str


class Reachability:
    """The last success and failure of any exchange with Stripe; `probe()` refreshes them with
    one cheap request when they are older than `probe_interval_seconds` (0: never probe)."""

    def __init__(
        self,
        probe_interval_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe_interval_seconds = probe_interval_seconds
        self._clock = clock
        self._last_ok: float | None = None
        self._last_failure: float | None = None
        self._last_error = ""
        self._probing: asyncio.Lock | None = None
        #: Told True/False after each exchange (the dependency metric).
        self.observer: Callable[[bool], None] | None = None
        #: Probes sent to Stripe.
        self.probes = 0

    def succeeded(self) -> None:
        self._last_ok = self._clock()
        if self.observer is not None:
            self.observer(True)

    def failed(self, error: str) -> None:
        self._last_failure = self._clock()
        self._last_error = error[:300]
        if self.observer is not None:
            self.observer(False)

    def state(self) -> StripeState:
        now = self._clock()
        ok, failure = self._last_ok, self._last_failure
        reachable = None
        if ok is not None or failure is not None:
            reachable = failure is None or (ok is not None and ok > failure)
        return StripeState(
            reachable=reachable,
            last_success_seconds_ago=None if ok is None else now - ok,
            last_failure_seconds_ago=None if failure is None else now - failure,
            last_error=self._last_error,
        )

    async def probe(self, ask: Callable[[], Awaitable[Any]]) -> StripeState:
        """The state, after `ask()` (one request to Stripe, its outcome recorded by the HTTP
        client) if nothing was heard for a probe interval. Concurrent callers share one probe."""
        if self._probing is None:
            self._probing = asyncio.Lock()
        async with self._probing:
            if self._due():
                self.probes += 1
                # The outcome is recorded by the HTTP client (a 4xx means Stripe is there).
                with contextlib.suppress(stripe.StripeError):
                    await ask()
        return self.state()

    def _due(self) -> bool:
        if self.probe_interval_seconds <= 0:
            return False
        heard = max((t for t in (self._last_ok, self._last_failure) if t is not None), default=None)
        return heard is None or self._clock() - heard >= self.probe_interval_seconds


class ObservedHTTPClient(stripe.AIOHTTPClient):
    """The SDK's aiohttp client, recording each exchange in a `Reachability`: an answer below
    500 (other than 401) is a success, a 5xx, a 401 or a connection error a failure."""

    def __init__(self, reachability: Reachability, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reachability = reachability

    async def request_stream_async(
        self, method: str, url: str, headers: Any, post_data: Any = None
    ) -> Any:
        try:
            content, status, response_headers = await super().request_stream_async(
                method, url, headers, post_data=post_data
            )
        except Exception as exc:
            self.reachability.failed(f"{type(exc).__name__}: {exc}")
            raise
        if status in _FAILED_STATUSES:
            self.reachability.failed(f"HTTP {status} from {method.upper()} {_path(url)}")
        else:
            self.reachability.succeeded()
        return content, status, response_headers


def _path(url: str) -> str:
    # The query may carry ids; the path names the endpoint.
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
