"""Wiring crypto payments into the server: the domain on the shared engine, chain readers from
settings, the servicer, one watcher per configured network, and their shutdown."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from adapters.chains import ChainReaders
from adapters.chains.heads import HeadUpdate
from adapters.chains.payments import PaymentReads
from entitlements.crypto import CryptoPayments, PaymentWatcher
from entitlements.observability.metrics import observe_chain_read, set_watcher_lag
from entitlements.observability.tracing import chain_read_observer
from entitlements.server.crypto_runtime import CryptoRuntime
from entitlements.server.crypto_servicer import CryptoPaymentServicer
from entitlements.store.crypto_repository import CryptoStore

if TYPE_CHECKING:
    from entitlements.config import Settings
    from entitlements.server.deps import Deps

__all__ = ["CryptoRuntime", "install_crypto"]

log = logging.getLogger(__name__)


def _waker(watcher: PaymentWatcher) -> Callable[[HeadUpdate], None]:
    return lambda _update: watcher.wake()


def install_crypto(
    settings: Settings, deps: Deps, *, readers: ChainReaders | None = None
) -> CryptoRuntime:
    """Build crypto payments on `deps.store`'s engine and register the servicer and closer.
    Watchers exist for the configured networks when a receiving address is set."""
    readers = readers or ChainReaders.from_settings(settings.chains)
    for network in readers.networks:
        readers.get(network).observer = chain_read_observer(
            observe_chain_read
        )  # chain reads in /metrics
    reads = {network: PaymentReads(readers.get(network)) for network in readers.networks}
    payments = CryptoPayments(
        CryptoStore(deps.store.engine),
        deps.service,
        deps.catalog,
        settings.chains,
        settings.crypto,
        reads,
    )
    watchers = []
    if settings.crypto.pay_to_address is not None:
        stall = settings.chains.max_head_age_seconds
        watchers = [
            PaymentWatcher(
                payments,
                network,
                stall_alert_seconds=0 if network == "local" else stall,
                on_poll=set_watcher_lag,
            )
            for network in readers.networks
        ]
    for watcher in watchers:
        follower = deps.heads.get(watcher.network) if deps.heads is not None else None
        if follower is not None:  # a new head wakes the watcher; its interval is the backstop
            follower.subscribe(_waker(watcher))
    runtime = CryptoRuntime(payments, readers, watchers)
    deps.servicers["CryptoPaymentService"] = CryptoPaymentServicer(payments)
    deps.closers.append(runtime.close)
    return runtime
