"""The configured networks' chain readers, by network name and by chain id."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from adapters.chains.config import ChainSettings
from adapters.chains.errors import ChainUnavailable, NetworkNotConfigured
from adapters.chains.reader import ChainReader

__all__ = ["ChainReaders"]

log = logging.getLogger(__name__)


class ChainReaders:
    """The configured networks' readers, by network name."""

    def __init__(self, readers: Iterable[ChainReader]) -> None:
        self._by_network = {r.network: r for r in readers}

    @classmethod
    def from_settings(cls, settings: ChainSettings) -> ChainReaders:
        readers = []
        for network, url in settings.rpc_urls.items():
            chain_id = settings.chain_id(network)
            if chain_id is None:  # pragma: no cover - from_env only reads known networks
                continue
            readers.append(
                ChainReader(
                    network,
                    chain_id,
                    url,
                    timeout_seconds=settings.request_timeout_seconds,
                    # A dev chain mines only on demand: its head is old by design.
                    max_head_age_seconds=0 if network == "local" else settings.max_head_age_seconds,
                )
            )
        return cls(readers)

    def get(self, network: str) -> ChainReader:
        reader = self._by_network.get(network)
        if reader is None:
            raise NetworkNotConfigured(network, "no JSON-RPC node is configured for this network")
        return reader

    def by_chain_id(self, chain_id: int) -> ChainReader | None:
        for reader in self._by_network.values():
            if reader.chain_id == chain_id:
                return reader
        return None

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(self._by_network)

    @property
    def requests(self) -> int:
        """Read round trips over every network."""
        return sum(r.requests for r in self._by_network.values())

    async def connect(self) -> None:
        """Check every node's chain id. A node serving the wrong chain raises ChainMismatch;
        one that cannot be reached is logged and checked again before its first read."""
        for reader in self._by_network.values():
            try:
                await reader.connect()
            except ChainUnavailable as exc:
                log.warning("chain node not reachable at start (checked again on use): %s", exc)

    async def close(self) -> None:
        for reader in self._by_network.values():
            await reader.close()
