"""Token gating driven by blocks: each new head's transfer logs of every gated contract (one
`eth_getLogs` per block range and network) name the wallets whose answers may have changed;
their cached answers are dropped and their stored channel accesses re-checked at once, so a
transfer revokes (or grants) within a block, and the change is published like the sweep's.

A reorg undoes what its blocks did: the wallets the replaced blocks touched are re-checked
too, and the replacing blocks are read. The hourly sweep stays as the backstop (a deep reorg,
a node that was down, a process that just started).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from adapters.chains import ChainError
from adapters.chains.heads import KEEP_BLOCKS, HeadFollower, HeadFollowers, HeadUpdate
from adapters.chains.transfers import transfer_logs
from entitlements.errors import EntitlementsError, Unavailable
from entitlements.store.tokengate_records import RequirementRecord
from entitlements.tokengate.service import TokenGate

__all__ = ["TransferListener"]

log = logging.getLogger(__name__)

#: Blocks read by one eth_getLogs when catching up (providers cap the range).
MAX_RANGE = 100
#: A node ahead by more than this many blocks (the listener was stopped) is not replayed:
#: reading resumes at the head and the sweep covers the gap.
MAX_CATCH_UP = 1_000

#: contract -> wallets whose tokens of it moved.
Touched = dict[str, set[str]]


@dataclass
class _Network:
    follower: HeadFollower
    #: The last block whose transfers were handled (None until the first head).
    processed: int | None = None
    #: Recent handled blocks: number -> (hash, what they touched), to undo on a reorg.
    recent: dict[int, tuple[str, Touched]] = field(default_factory=dict)
    reorged_from: int | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class TransferListener:
    """Follows every network the gate reads and has a head follower for."""

    def __init__(self, gate: TokenGate, heads: HeadFollowers, *, retry_seconds: float = 1.0):
        self._gate = gate
        self._retry = retry_seconds
        self._networks: dict[str, _Network] = {}
        for network in gate.readers.networks:
            follower = heads.get(network)
            if follower is not None:
                self._networks[network] = _Network(follower)
                follower.subscribe(self._on_head)
        #: Stored accesses re-checked because a transfer touched them (tests, metrics).
        self.rechecked = 0

    def processed_block(self, network: str) -> int | None:
        """The last block of `network` whose transfers were handled."""
        state = self._networks.get(network)
        return None if state is None else state.processed

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for network, state in self._networks.items():
            if state.task is None:
                state.task = loop.create_task(self._run(network), name=f"transfers-{network}")

    async def stop(self) -> None:
        for state in self._networks.values():
            task, state.task = state.task, None
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _on_head(self, update: HeadUpdate) -> None:
        state = self._networks.get(update.network)
        if state is None:
            return
        if update.reorged_from is not None:
            state.reorged_from = min(update.reorged_from, state.reorged_from or update.reorged_from)
        state.wake.set()

    async def _run(self, network: str) -> None:
        state = self._networks[network]
        while True:
            await state.wake.wait()
            state.wake.clear()
            try:
                await self.catch_up(network)
            except (ChainError, Unavailable) as exc:
                log.warning("token transfers on %s: will retry: %s", network, exc)
                await asyncio.sleep(self._retry)
                state.wake.set()
            except Exception:
                log.exception("token transfers on %s: unexpected error; will retry", network)
                await asyncio.sleep(self._retry)
                state.wake.set()

    async def catch_up(self, network: str) -> None:
        """Handle the blocks from the last handled one to the follower's head (and the blocks
        a reorg replaced). Nothing is marked handled unless all of it was."""
        state = self._networks[network]
        head = state.follower.head
        if head is None:
            return
        if state.processed is None or head.number - state.processed > MAX_CATCH_UP:
            if state.processed is not None:
                log.warning(
                    "token transfers on %s: %d blocks behind; resuming at the head (the sweep "
                    "covers the gap)",
                    network,
                    head.number - state.processed,
                )
            state.processed, state.recent = head.number, {}
            return
        processed, recent = state.processed, dict(state.recent)
        touched: Touched = {}
        reorged_from, state.reorged_from = state.reorged_from, None
        # A reorg the follower reported, or one under a block handled here (seen by its hash).
        replaced = [n for n, (h, _) in recent.items() if state.follower.hash_of(n) not in (None, h)]
        if reorged_from is not None or replaced:
            start = min([*replaced, *([reorged_from] if reorged_from is not None else [])])
            for number in [n for n in recent if n >= start]:
                _merge(touched, recent.pop(number)[1])
            # Answers read since the replaced blocks appeared may reflect them (a read is at
            # "latest", possibly ahead of the blocks handled here): drop the network's cached
            # answers and re-check every wallet recent transfers touched, not only theirs.
            for _, earlier in recent.values():
                _merge(touched, earlier)
            self._gate.verifier.forget_network(network)
            processed = min(processed, start - 1)
        try:
            requirements = await self._gate.store.enabled_requirements(network)
            contracts = sorted({r.contract_address for r in requirements})
            while processed < head.number:
                end = min(head.number, processed + MAX_RANGE)
                logs = await transfer_logs(state.follower.reader, processed + 1, end, contracts)
                for entry in logs:
                    if entry.removed or not entry.wallets:
                        continue
                    _merge(touched, {entry.contract: set(entry.wallets)})
                    block = recent.setdefault(entry.block_number, (entry.block_hash, {}))
                    _merge(block[1], {entry.contract: set(entry.wallets)})
                processed = end
            await self._recheck(network, requirements, touched)
        except BaseException:
            state.reorged_from = _lowest(state.reorged_from, reorged_from)
            raise
        state.processed = processed
        state.recent = {n: v for n, v in recent.items() if n > head.number - KEEP_BLOCKS}

    async def _recheck(
        self, network: str, requirements: list[RequirementRecord], touched: Touched
    ) -> None:
        """Drop the touched wallets' cached answers, then re-check their stored accesses in the
        channels those contracts gate, as the sweep does (which publishes what changed)."""
        channels: set[str] = set()
        wallets: set[str] = set()
        for contract, moved in touched.items():
            gating = [r for r in requirements if r.contract_address == contract]
            if not gating:
                continue
            self._gate.verifier.forget_wallets(network, contract, moved)
            channels.update(r.channel_id for r in gating)
            wallets.update(moved)
        if not channels:
            return
        store = self._gate.store
        users = {link.user_id for link in await store.users_of_wallets(sorted(wallets))}
        accesses = await store.accesses_touching(sorted(channels), sorted(wallets), sorted(users))
        for access in accesses:
            try:
                await self._gate.recheck(access)
                self.rechecked += 1
            except EntitlementsError as exc:
                # Its cached answers are gone, so the next check reads the chain; the sweep
                # re-checks the stored access.
                log.warning(
                    "token transfers on %s: re-checking channel %s deferred: %s",
                    network,
                    access.channel_id,
                    exc,
                )


def _merge(into: Touched, more: Touched) -> None:
    for contract, wallets in more.items():
        into.setdefault(contract, set()).update(wallets)


def _lowest(*numbers: int | None) -> int | None:
    present: Iterable[int] = [n for n in numbers if n is not None]
    return min(present, default=None)
