"""`EntitlementsClient`: the blocking client, on grpc's sync channel.

With `local_evaluation=True` a daemon thread keeps one WatchEntitlements stream open and feature
and limit checks of watched accounts are answered from memory (see `_local.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from nchat.entitlements.client import _convert, _requests
from nchat.entitlements.client._exceptions import EntitlementsError, Unavailable, error_from_rpc
from nchat.entitlements.client._local import DISABLED, LocalEntry, LocalStore
from nchat.entitlements.client._models import (
    Entitlements,
    FeatureCheck,
    LimitCheck,
    LocalState,
    MetricUsage,
    MinimumPlanCheck,
    PlanCatalog,
    UpgradePath,
    Usage,
    UsageEventResult,
)
from nchat.entitlements.client._options import ClientOptions, channel_options
from nchat.entitlements.client._requests import UsageEvent, valid_account_id
from nchat.entitlements.client._retry import RetryPolicy
from nchat.entitlements.client._rules import limit_check
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as usage_grpc

__all__ = ["EntitlementsClient"]

log = logging.getLogger("nchat.entitlements.client")

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class EntitlementsClient:
    """A blocking client of EntitlementsService and UsageService.

    `target` is "host:port"; `token` is sent as `authorization: Bearer <token>`; without
    `credentials` the channel is plaintext. Checks use `timeout` (0.5 s) per attempt, writes
    `write_timeout`; a call failing with UNAVAILABLE is retried per `retry`. Thread-safe.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 0.5,
        write_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        local_evaluation: bool = False,
        local: ClientOptions | None = None,
        interceptors: Sequence[Any] = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self._timeout = timeout
        self._write_timeout = write_timeout
        self._retry = retry or RetryPolicy()
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        opts = channel_options(options)
        raw = (
            grpc.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else grpc.insecure_channel(target, options=opts)
        )
        self._raw_channel = raw
        self._channel = grpc.intercept_channel(raw, *interceptors) if interceptors else raw
        self._ent = ent_grpc.EntitlementsServiceStub(self._channel)
        self._usage = usage_grpc.UsageServiceStub(self._channel)
        self._closed = False
        self._store: LocalStore | None = None
        self._watcher: _Watcher | None = None
        if local_evaluation:
            settings = local or ClientOptions()
            self._store = LocalStore(
                max_accounts=settings.max_accounts,
                resync_interval=settings.resync_interval,
                max_stale=settings.max_stale,
            )
            self._watcher = _Watcher(self, self._store, settings)
            self._store.request_reopen = self._watcher.request_reopen
            self._watcher.start()

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the watch thread and close the channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.stop()
        self._raw_channel.close()

    def __enter__(self) -> EntitlementsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def local_state(self) -> LocalState:
        """How fresh local evaluation is (`enabled=False` without it)."""
        return self._store.state() if self._store is not None else DISABLED

    # --- calls ---------------------------------------------------------------------------

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        timeout: float,
    ) -> _Resp:
        attempt = 1
        while True:
            try:
                return method(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                if (
                    error.code is grpc.StatusCode.UNAVAILABLE
                    and attempt < self._retry.max_attempts
                    and not self._closed
                ):
                    time.sleep(self._retry.backoff(attempt))
                    attempt += 1
                    continue
                raise error from None

    def can_use_feature(
        self,
        account_id: str,
        feature: str,
        *,
        min_revision: int = 0,
        timeout: float | None = None,
    ) -> FeatureCheck:
        """May `account_id` use `feature`? A denial is an answer, not an error.

        `min_revision` (a `revision` a write or an earlier answer returned): the answer reflects
        at least that revision; a local copy older than it is not used.
        """
        store = self._store
        if store is not None:
            answer = store.feature(account_id, feature, min_revision=min_revision)
            if answer is not None:
                return answer
            return self._feature_on_miss(store, account_id, feature, min_revision, timeout)
        return self._can_use_feature(account_id, feature, min_revision, timeout)

    def _feature_on_miss(
        self,
        store: LocalStore,
        account_id: str,
        feature: str,
        min_revision: int,
        timeout: float | None,
    ) -> FeatureCheck:
        """Not answerable locally: the account's state by RPC answers this call and the next ones
        (the stream is reopened for it); beyond the account cap, CanUseFeature answers."""
        try:
            entry = self._fetch_for_local(store, account_id, min_revision, timeout)
            if entry is None:
                return self._can_use_feature(account_id, feature, min_revision, timeout)
        except Unavailable:
            stale = store.feature(account_id, feature, stale=True, min_revision=min_revision)
            if stale is None:
                raise
            return stale
        return store.answer(entry, feature)

    def _fetch_for_local(
        self, store: LocalStore, account_id: str, min_revision: int, timeout: float | None
    ) -> LocalEntry | None:
        """The account's state (at least `min_revision`: the server reads through for it),
        fetched and kept for local answers (None: not to be watched)."""
        if not valid_account_id(account_id) or not store.want(account_id):
            return None
        if store.catalog is None:  # the first check of this client: the watcher may be loading it
            store.set_catalog(self.list_plans())
        request = ent_pb.GetEntitlementsRequest(account_id=account_id, min_revision=min_revision)
        response = self._call(self._ent.GetEntitlements, request, timeout or self._timeout)
        return store.adopt(_convert.entitlements(response.entitlements))

    def _can_use_feature(
        self, account_id: str, feature: str, min_revision: int, timeout: float | None
    ) -> FeatureCheck:
        request = ent_pb.CanUseFeatureRequest(
            account_id=account_id, feature=feature, min_revision=min_revision
        )
        response = self._call(self._ent.CanUseFeature, request, timeout or self._timeout)
        return _convert.feature_check(response)

    def check_features(
        self, checks: Iterable[tuple[str, str]], *, timeout: float | None = None
    ) -> list[FeatureCheck | EntitlementsError]:
        """Many (account_id, feature) checks in one call; a bad item gets its own error."""
        request = _requests.check_features(checks)
        response = self._call(self._ent.CheckFeatures, request, timeout or self._timeout)
        return _requests.check_features_results(response)

    def check_minimum_plan(
        self,
        account_id: str,
        minimum_plan_id: str,
        *,
        min_revision: int = 0,
        timeout: float | None = None,
    ) -> MinimumPlanCheck:
        request = ent_pb.CheckMinimumPlanRequest(
            account_id=account_id, minimum_plan_id=minimum_plan_id, min_revision=min_revision
        )
        response = self._call(self._ent.CheckMinimumPlan, request, timeout or self._timeout)
        return _convert.minimum_plan_check(response)

    def get_entitlements(
        self, account_id: str, *, min_revision: int = 0, timeout: float | None = None
    ) -> Entitlements:
        request = ent_pb.GetEntitlementsRequest(account_id=account_id, min_revision=min_revision)
        response = self._call(self._ent.GetEntitlements, request, timeout or self._timeout)
        return _convert.entitlements(response.entitlements)

    def get_upgrade_path(
        self, plan_id: str, feature: str, *, timeout: float | None = None
    ) -> UpgradePath:
        request = ent_pb.GetUpgradePathRequest(plan_id=plan_id, feature=feature)
        response = self._call(self._ent.GetUpgradePath, request, timeout or self._timeout)
        return _convert.upgrade_path(response)

    def list_plans(self, *, timeout: float | None = None) -> PlanCatalog:
        response = self._call(
            self._ent.ListPlans, ent_pb.ListPlansRequest(), timeout or self._write_timeout
        )
        return _convert.catalog(response)

    def check_limit(
        self,
        account_id: str,
        limit: str,
        current: int | None = None,
        *,
        min_revision: int = 0,
        timeout: float | None = None,
    ) -> LimitCheck:
        """Room for one more under `limit`? Judges `current` when given, else tracked usage.

        With local evaluation and `current` given, it is answered from memory.
        """
        store = self._store
        if store is None or current is None:
            return self._check_limit(account_id, limit, current, min_revision, timeout)
        answer = store.limit(account_id, limit, current, min_revision=min_revision)
        if answer is not None:
            return answer
        try:
            entry = self._fetch_for_local(store, account_id, min_revision, timeout)
        except Unavailable:
            stale = store.limit(account_id, limit, current, stale=True, min_revision=min_revision)
            if stale is None:
                raise
            return stale
        fetched = entry.limits.get(limit) if entry is not None else None
        if entry is None or fetched is None or current < 0:  # the server names the bad field
            return self._check_limit(account_id, limit, current, min_revision, timeout)
        return limit_check(entry.entitlements, fetched, current, "rpc")

    def _check_limit(
        self,
        account_id: str,
        limit: str,
        current: int | None,
        min_revision: int,
        timeout: float | None,
    ) -> LimitCheck:
        request = _requests.check_limit(account_id, limit, current, min_revision)
        response = self._call(self._usage.CheckLimit, request, timeout or self._timeout)
        return _convert.limit_check(response)

    def report_usage(
        self, events: Sequence[UsageEvent], *, timeout: float | None = None
    ) -> list[UsageEventResult]:
        """Add usage increments; a repeated idempotency key is counted once (DUPLICATE)."""
        request = _requests.report_usage(events)
        response = self._call(self._usage.ReportUsage, request, timeout or self._write_timeout)
        return [_convert.event_result(r) for r in response.results]

    def set_usage(
        self, account_id: str, metric: str, value: int, *, timeout: float | None = None
    ) -> MetricUsage:
        """Set a gauge metric (users, channels, storageGB, ...) to `value`."""
        request = usage_pb.SetUsageRequest(account_id=account_id, metric=metric, value=value)
        response = self._call(self._usage.SetUsage, request, timeout or self._write_timeout)
        return _convert.metric_usage(response.usage)

    def get_usage(
        self, account_id: str, period: str = "", *, timeout: float | None = None
    ) -> Usage:
        """Every metric of the account for `period` ("YYYY-MM"; "" for this month)."""
        request = usage_pb.GetUsageRequest(account_id=account_id, period=period)
        response = self._call(self._usage.GetUsage, request, timeout or self._write_timeout)
        return _convert.usage(response)


class _Watcher:
    """The daemon thread that keeps one WatchEntitlements stream open for the watched accounts."""

    def __init__(self, client: EntitlementsClient, store: LocalStore, opts: ClientOptions) -> None:
        self._client = client
        self._store = store
        self._opts = opts
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._call: Any = None  # the live grpc call (a _MultiThreadedRendezvous)
        self._planned = False
        self._reopen_pending = False
        self._opened_at = 0.0
        self._idle = False  # waiting for a first account to watch
        self._timer: threading.Timer | None = None
        self._thread = threading.Thread(target=self._run, name="entitlements-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            call, timer = self._call, self._timer
        if timer is not None:
            timer.cancel()
        if call is not None:
            call.cancel()
        self._wake.set()
        self._thread.join(timeout=5)

    def request_reopen(self) -> None:
        """Reopen the stream (debounced) so it covers every wanted account with fresh state."""
        with self._lock:
            if self._reopen_pending or self._closed:
                return
            self._reopen_pending = True
            live, idle = self._call is not None, self._idle
            delay = max(0.0, self._opened_at + self._opts.min_reopen_interval - time.monotonic())
            if live:
                self._timer = threading.Timer(delay, self._reopen_now)
                self._timer.daemon = True
                self._timer.start()
        if idle:
            self._wake.set()  # a stream that is down picks the new accounts up when it reopens

    def _reopen_now(self) -> None:
        with self._lock:
            call = self._call
            if call is None or self._closed:
                return
            self._planned = True
        call.cancel()

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _run(self) -> None:
        client, store, opts = self._client, self._store, self._opts
        stub, metadata = client._ent, client._metadata
        failures = 0
        while not self._closed:
            try:
                if store.catalog is None:
                    plans = stub.ListPlans(
                        ent_pb.ListPlansRequest(),
                        timeout=opts.stream_open_timeout,
                        metadata=metadata,
                    )
                    store.set_catalog(_convert.catalog(plans))
                self._idle = True  # before reading: a want() from now on wakes the sleep below
                accounts = store.accounts_to_watch()
                if not accounts:
                    self._sleep(1.0)
                    continue
                self._idle = False
                with self._lock:
                    if self._closed:
                        return
                    self._reopen_pending = False
                    self._planned = False
                    call = stub.WatchEntitlements(_requests.watch(accounts), metadata=metadata)
                    self._call = call
                    self._opened_at = time.monotonic()
                store.stream_opened(accounts)
                for message in call:
                    store.on_message(message)
                    failures = 0
                raise _StreamEnded
            except (grpc.RpcError, _StreamEnded) as exc:
                with self._lock:
                    planned, self._planned = self._planned, False
                    self._call = None
                if self._closed:
                    return
                if planned and isinstance(exc, grpc.RpcError) and _cancelled(exc):
                    wait = self._opened_at + opts.min_reopen_interval - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    continue
                failures += 1
                store.stream_down(_describe(exc))
                self._sleep(opts.reconnect.backoff(failures))
            except Exception as exc:  # a bug must not kill local evaluation for good
                log.exception("entitlements watch stream failed")
                with self._lock:
                    call, self._call = self._call, None
                if call is not None:
                    call.cancel()
                failures += 1
                store.stream_down(repr(exc))
                self._sleep(opts.reconnect.backoff(failures))


class _StreamEnded(Exception):
    """The server ended the stream without an error status (it should not)."""


def _cancelled(exc: grpc.RpcError) -> bool:
    return isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.CANCELLED


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        error = error_from_rpc(exc)
        return f"{error.code.name}: {error.message}"
    return "the server ended the watch stream"
