"""Checking one wallet against one requirement on chain, with a short cache, single-flight reads
and a bounded stale grace for positive results when the node is down.

Why these three:
- The cache (default 60 s) absorbs the bursts a chat produces (everyone opening a channel), and
  a minute is shorter than a token transfer takes to matter to people.
- Single-flight: identical concurrent checks share one chain read, so 1,000 at once cost one
  round trip, not 1,000 (and no provider rate limit is hit).
- Stale grace (default 10 min): when the node is down, a holder verified in the last minutes
  keeps access rather than being locked out by the outage; a wallet never verified (or last
  seen without the token) gets UNAVAILABLE, never a grant. The window is short so a token sold
  during an outage cannot keep a channel open for long.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from cachetools import LRUCache

from adapters.chains import (
    ChainMismatch,
    ChainReaders,
    ChainUnavailable,
    ContractMismatch,
    NetworkNotConfigured,
)
from entitlements.errors import TokenContractMismatch, Unavailable
from entitlements.store.records import utcnow
from entitlements.store.tokengate_records import RequirementRecord
from entitlements.tokengate.requirements import base_units, format_units

__all__ = ["TokenVerifier", "Verification", "not_the_token", "wrong_chain"]

log = logging.getLogger(__name__)

CacheKey = tuple[str, str, str, str, tuple[str, ...], int, str]


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of one (wallet, requirement) check."""

    verified: bool
    #: ERC-20: the balance in tokens ("1.5"); ERC-721/1155: the count of tokens that count.
    balance: str
    #: Why the wallet does not meet the requirement ("" when it does).
    error: str
    #: When the chain was read for this answer.
    checked_at: datetime
    #: True when the answer came from the cache.
    cached: bool = False
    #: True when the node is down and this is a recent positive answer kept for the grace window.
    stale: bool = False


def _key(requirement: RequirementRecord, wallet: str) -> CacheKey:
    # What decides the answer, not the requirement's id: an inline requirement and a stored one
    # with the same terms share entries.
    return (
        requirement.network,
        requirement.contract_address,
        requirement.token_type,
        requirement.min_balance or "",
        requirement.token_ids,
        requirement.min_token_count or 0,
        wallet,
    )


class TokenVerifier:
    """Answers (wallet, requirement) checks from the chain readers, cached and single-flight.

    `chain_reads` counts the reads this verifier started (one JSON-RPC round trip each, see
    `ChainReader`), so tests and benchmarks can show what a workload cost.
    """

    def __init__(
        self,
        readers: ChainReaders,
        *,
        ttl_seconds: float = 60.0,
        stale_grace_seconds: float = 600.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._readers = readers
        self._ttl = ttl_seconds
        self._grace = stale_grace_seconds
        self._clock = clock
        self._cache: LRUCache[CacheKey, tuple[float, Verification]] = LRUCache(max_entries)
        # `peek` reads from gRPC's handler threads while the loop writes: entries are immutable
        # (time, Verification) tuples replaced whole; the LRU is touched only under this lock.
        self._lock = threading.Lock()
        self._inflight: dict[CacheKey, asyncio.Task[Verification]] = {}
        #: Keys forgotten while a read of them was in flight: that read's answer may predate
        #: the transfer that made us forget, so it is returned but not cached.
        self._forgotten: set[asyncio.Task[Verification]] = set()
        self.chain_reads = 0

    async def verify(
        self, requirement: RequirementRecord, wallet: str, *, fresh: bool = False
    ) -> Verification:
        """Check `wallet` (checksummed) against `requirement`. `fresh` skips the cache (the
        re-verification sweep). Raises Unavailable when the chain cannot say and no recent
        positive answer may stand in."""
        key = _key(requirement, wallet)
        now = self._clock()
        entry = self._entry(key)
        if not fresh and entry is not None and now - entry[0] < self._ttl:
            return replace(entry[1], cached=True)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(key, requirement, wallet))
            task.add_done_callback(_retrieve)
            self._inflight[key] = task
        try:
            # shield: a caller that gives up does not cancel the read the others wait for.
            return await asyncio.shield(task)
        except ChainUnavailable as exc:
            stale = self._entry(key)
            if stale is not None and stale[1].verified and self._clock() - stale[0] <= self._grace:
                log.warning("serving a cached grant within the stale grace: %s", exc)
                return replace(stale[1], cached=True, stale=True)
            raise Unavailable(f"cannot read the chain: {exc}") from exc
        except NetworkNotConfigured as exc:
            raise Unavailable(f"network {requirement.network!r} is not configured") from exc
        except ChainMismatch as exc:
            raise wrong_chain(exc) from exc
        except ContractMismatch as exc:
            raise not_the_token(exc, requirement) from exc

    def peek(
        self, requirement: RequirementRecord, wallet: str
    ) -> tuple[CacheKey, float, Verification] | None:
        """The cached answer while fresh, with its key and when it was read (callers keep a
        serialized answer per key and time), else None. Safe from any thread; never reads the
        chain. The answer is the uncached one: `verify` marks what it returns `cached`."""
        key = _key(requirement, wallet)
        entry = self._entry(key)
        if entry is None or self._clock() - entry[0] >= self._ttl:
            return None
        return key, entry[0], entry[1]

    def _entry(self, key: CacheKey) -> tuple[float, Verification] | None:
        with self._lock:
            return self._cache.get(key)

    def _cached_keys(self) -> list[CacheKey]:
        with self._lock:
            return [*self._cache.keys()]

    def forget(self) -> None:
        """Drop every cached answer (tests; a configuration change)."""
        with self._lock:
            self._cache.clear()

    def forget_network(self, network: str) -> None:
        """Drop every answer about `network` (a reorg: any of them may have been read from a
        block that is gone)."""
        with self._lock:
            cached = [*self._cache.keys()]
        for key in [k for k in [*cached, *self._inflight.keys()] if k[0] == network]:
            with self._lock:
                self._cache.pop(key, None)
            task = self._inflight.pop(key, None)
            if task is not None:
                self._forgotten.add(task)

    def forget_wallets(self, network: str, contract: str, wallets: set[str]) -> int:
        """Drop the answers about `wallets` for `contract` on `network` (tokens of it moved in
        or out of them): the next check reads the chain. Returns how many were dropped."""
        stale = [
            key
            for key in [*self._cached_keys(), *self._inflight.keys()]
            if key[0] == network and key[1] == contract and key[6] in wallets
        ]
        for key in stale:
            with self._lock:
                self._cache.pop(key, None)
            task = self._inflight.pop(key, None)
            if task is not None:
                self._forgotten.add(task)
        return len(stale)

    async def _read(
        self, key: CacheKey, requirement: RequirementRecord, wallet: str
    ) -> Verification:
        me = asyncio.current_task()
        try:
            self.chain_reads += 1
            result = await self._evaluate(requirement, wallet)
            if me not in self._forgotten:
                entry = (self._clock(), result)
                with self._lock:
                    self._cache[key] = entry
            return result
        finally:
            if me in self._forgotten:
                self._forgotten.discard(me)
            elif self._inflight.get(key) is me:
                del self._inflight[key]

    async def _evaluate(self, requirement: RequirementRecord, wallet: str) -> Verification:
        reader = self._readers.get(requirement.network)
        contract = requirement.contract_address
        checked_at = utcnow()
        if requirement.token_type == "ERC20":
            balance = await reader.erc20_balance(contract, wallet)
            needed = base_units(requirement.min_balance, balance.decimals)
            held = format_units(balance.raw, balance.decimals)
            if balance.raw >= needed:
                return Verification(True, held, "", checked_at)
            wanted = requirement.min_balance or format_units(1, balance.decimals)
            return Verification(
                False, held, f"balance {held} is below the required {wanted}", checked_at
            )
        needed_count = max(requirement.min_token_count or 0, 1)
        ids = [int(i) for i in requirement.token_ids]
        if requirement.token_type == "ERC721":
            if ids:
                owned = await reader.erc721_owned(contract, wallet, ids)
                count = sum(owned)
                what = f"of the listed token ids {', '.join(requirement.token_ids)}"
            else:
                count = await reader.erc721_balance(contract, wallet)
                what = "tokens of the collection"
        else:
            balances = await reader.erc1155_balances(contract, wallet, ids)
            count = sum(balances)
            what = f"tokens with ids {', '.join(requirement.token_ids)}"
        if count >= needed_count:
            return Verification(True, str(count), "", checked_at)
        return Verification(
            False, str(count), f"holds {count} {what}; {needed_count} required", checked_at
        )


def not_the_token(
    exc: ContractMismatch, requirement: RequirementRecord, field: str | None = None
) -> TokenContractMismatch:
    """The requirement's contract is not its token: FAILED_PRECONDITION naming the contract
    (and the requirement, when it is stored)."""
    metadata = {
        "contract_address": exc.address,
        "network": requirement.network,
        "token_type": requirement.token_type,
    }
    if requirement.id:
        metadata["requirement_id"] = requirement.id
    return TokenContractMismatch(
        f"contract {exc.address} on {requirement.network} is not an {exc.standard} token: "
        f"{exc.found}",
        metadata=metadata,
        field=field,
    )


def wrong_chain(exc: ChainMismatch) -> Unavailable:
    """A node answering for another chain (it was unreachable at start): its answers would be
    another chain's, so the network is unavailable (retryable: an operator fixes the node)."""
    return Unavailable(
        f"network {exc.network!r} is unavailable: its node serves chain id {exc.actual}, "
        f"not {exc.network}'s chain id {exc.expected}"
    )


def _retrieve(task: asyncio.Task[Verification]) -> None:
    # Every waiter may have given up: mark the outcome seen so asyncio does not log it.
    if not task.cancelled():
        task.exception()
