"""One watcher per network: follows new blocks from the stored cursor, records transfers to the
receiving address, notices reorgs, and settles open payments as confirmations grow.

`poll_once()` does one step (tests drive it directly); `start()` runs it every poll interval as
a background task until `stop()`. A node that is down or stalled leaves payments where they are
(processing stays processing) and is logged; nothing falls back to another source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from adapters.chains import ChainUnavailable
from adapters.chains.payments import Block, PaymentReads
from entitlements.crypto.payments import ChainEvent, CryptoPayments, block_time
from entitlements.errors import Unavailable
from entitlements.store.crypto_repository import Cursor

__all__ = ["PaymentWatcher", "PollResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PollResult:
    head: int
    #: The last block processed after this poll.
    cursor: int
    scanned: int
    transfers: int
    reorged: int


class PaymentWatcher:
    def __init__(
        self,
        payments: CryptoPayments,
        network: str,
        *,
        interval_seconds: float | None = None,
        stall_alert_seconds: float = 300.0,
        on_poll: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.payments = payments
        self.network = network
        self.reads: PaymentReads = payments.reads[network]
        self.repo = payments.repo
        self.depth = payments.settings.depth(network)
        default = payments.settings.poll_interval_seconds
        self.interval = default if interval_seconds is None else interval_seconds
        self.max_blocks = payments.settings.max_blocks_per_poll
        self._stall_alert = stall_alert_seconds
        self._last_head = -1
        self._head_changed_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        #: Polls that failed because the node or the database was unavailable.
        self.failures = 0
        #: Told (network, head block, last processed block) after each poll (the lag metric).
        self._on_poll = on_poll

    def __repr__(self) -> str:
        return f"PaymentWatcher({self.network!r})"

    # -- the background task --

    def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name=f"crypto-watcher-{self.network}")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Let the poll in progress finish (an activation is never cut in half; one that is
        is retried by the next poll anyway), then end the task; cancel it after the grace."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace_seconds)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """A new head: poll now, not at the end of the interval (the head follower calls it)."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.catch_up()
            except (ChainUnavailable, Unavailable) as exc:
                self.failures += 1
                log.warning("crypto watcher %s: poll failed, retrying: %s", self.network, exc)
            except Exception:
                self.failures += 1
                log.exception("crypto watcher %s: unexpected error; retrying", self.network)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    # -- one step --

    async def catch_up(self) -> PollResult:
        """Poll until the cursor reaches the head (a long gap takes several batches)."""
        while True:
            result = await self.poll_once()
            if result.cursor >= result.head:
                return result

    async def poll_once(self) -> PollResult:
        head = await self.reads.block_number()
        self._watch_stall(head)
        reorged, affected = await self._check_transfers(head)
        cursor = await self._cursor(head)
        start = cursor.block_number + 1
        end = min(head, cursor.block_number + self.max_blocks)
        found = 0
        if start <= end:
            numbers = list(range(start, end + 1))
            blocks = await self.reads.blocks(numbers, self._pay_to())
            events = await self._native_events(blocks)
            by_number = {b.number: b for b in blocks}
            for t in await self.reads.token_transfers(
                start, end, self.payments.tokens(self.network), self._pay_to()
            ):
                block = by_number.get(t.block_number)
                if block is None or block.hash != t.block_hash:
                    continue  # the block changed under the scan: the next poll sees it
                events.append(
                    ChainEvent(
                        tx_hash=t.tx_hash,
                        log_index=t.log_index,
                        block_number=t.block_number,
                        block_hash=t.block_hash,
                        block_time=block_time(block.timestamp),
                        token_contract=t.token,
                        from_address=t.from_address,
                        to_address=t.to_address,
                        value=t.value,
                    )
                )
            events.sort(key=lambda e: (e.block_number, e.log_index))
            for event in events:
                payment_id = await self.payments.record(self.network, event)
                if payment_id is not None:
                    affected.add(payment_id)
            found = len(events)
            last = by_number[end]
            cursor = Cursor(last.number, last.hash)
            await self.repo.set_cursor(self.network, self.reads.chain_id, cursor)
        await self._settle(head, affected)
        if self._on_poll is not None:
            self._on_poll(self.network, head, cursor.block_number)
        return PollResult(
            head=head,
            cursor=cursor.block_number,
            scanned=max(0, end - start + 1),
            transfers=found,
            reorged=reorged,
        )

    def _pay_to(self) -> str:
        pay_to = self.payments.settings.pay_to_address
        assert pay_to is not None, "watchers only run with a receiving address"
        return pay_to

    async def _native_events(self, blocks: list[Block]) -> list[ChainEvent]:
        """Native transfers to the receiving address, from transactions that succeeded (a
        reverted call to a contract wallet lists its value but moves nothing)."""
        events = [
            ChainEvent(
                tx_hash=tx.tx_hash,
                log_index=-1,
                block_number=b.number,
                block_hash=b.hash,
                block_time=block_time(b.timestamp),
                token_contract="",
                from_address=tx.from_address,
                to_address=tx.to_address,
                value=tx.value,
            )
            for b in blocks
            for tx in b.transfers
        ]
        if not events:
            return []
        receipts = await self.reads.receipts(sorted({e.tx_hash for e in events}))
        return [
            e
            for e in events
            if (r := receipts.get(e.tx_hash)) is not None
            and r.succeeded
            and r.block_hash == e.block_hash
        ]

    async def _cursor(self, head: int) -> Cursor:
        """The stored cursor, rewound when its block was replaced (a reorg under it); a first
        start begins at the oldest open payment's quote block (or the head)."""
        cursor = await self.repo.cursor(self.network)
        if cursor is None:
            open_payments = await self.repo.payments(self.network)
            first = min((p.created_block for p in open_payments), default=head)
            return await self._cursor_at(min(first, head) - 1)
        if cursor.block_number < 0:
            return cursor
        actual = (await self.reads.block_hashes([cursor.block_number]))[cursor.block_number]
        if actual == cursor.block_hash:
            return cursor
        back = min(head, cursor.block_number - self.depth)
        log.warning(
            "crypto watcher %s: block %d changed (reorg); rescanning from block %d",
            self.network,
            cursor.block_number,
            back + 1,
        )
        return await self._cursor_at(back)

    async def _cursor_at(self, number: int) -> Cursor:
        if number < 0:
            cursor = Cursor(-1, "")
        else:
            found = (await self.reads.block_hashes([number]))[number]
            cursor = Cursor(number, found or "")
        await self.repo.set_cursor(self.network, self.reads.chain_id, cursor)
        return cursor

    async def _check_transfers(self, head: int) -> tuple[int, set[str]]:
        """Re-read the receipts of transfers a reorg could still undo (up to twice the depth);
        a receipt gone or in another block marks the transfer reorged."""
        recent = await self.repo.recent_transfers(self.network, head - 2 * self.depth)
        unmatched = await self.repo.recent_unmatched(self.network, head - 2 * self.depth)
        if not recent and not unmatched:
            return 0, set()
        hashes = {t.tx_hash for t in recent} | {u.tx_hash for u in unmatched}
        receipts = await self.reads.receipts(sorted(hashes))
        for u in unmatched:
            receipt = receipts.get(u.tx_hash)
            if receipt is None and u.id is not None:
                await self.repo.set_unmatched_reorged(u.id)
                log.warning(
                    "crypto watcher %s: unmatched transfer %s left block %d (reorg)",
                    self.network,
                    u.tx_hash,
                    u.block_number,
                )
        reorged = 0
        affected: set[str] = set()
        for t in recent:
            receipt = receipts.get(t.tx_hash)
            if receipt is not None and receipt.block_hash == t.block_hash:
                continue
            if receipt is not None and receipt.succeeded:
                # Mined again in another block: its confirmations start over from there.
                affected.add(t.payment_id)
                moved = replace(
                    t,
                    status="seen",
                    block_number=receipt.block_number,
                    block_hash=receipt.block_hash,
                    confirmed_at=None,
                )
                await self.repo.update_transfer(moved)
                log.warning(
                    "crypto watcher %s: transfer %s moved from block %d to %d (reorg)",
                    self.network,
                    t.tx_hash,
                    t.block_number,
                    receipt.block_number,
                )
                continue
            reorged += 1
            affected.add(t.payment_id)
            await self.repo.update_transfer(replace(t, status="reorged", confirmed_at=None))
            log.warning(
                "crypto watcher %s: transfer %s of payment %s left block %d (reorg)",
                self.network,
                t.tx_hash,
                t.payment_id,
                t.block_number,
            )
        return reorged, affected

    async def _settle(self, head: int, affected: set[str]) -> None:
        payments = {p.id: p for p in await self.repo.payments(self.network)}
        payments.update({p.id: p for p in await self.repo.payments_to_apply(self.network)})
        recent = await self.repo.recent_transfers(self.network, head - 2 * self.depth)
        wanted = (affected | {t.payment_id for t in recent}) - payments.keys()
        payments.update({p.id: p for p in await self.repo.payments_by_id(wanted)})
        for payment in payments.values():
            await self.payments.settle(payment, head)

    def _watch_stall(self, head: int) -> None:
        now = time.monotonic()
        if head != self._last_head:
            self._last_head, self._head_changed_at = head, now
            return
        if self._stall_alert > 0 and now - self._head_changed_at > self._stall_alert:
            log.error(
                "crypto watcher %s: the node's head has been block %d for %.0f s; payments "
                "stay processing until it moves (no fallback)",
                self.network,
                head,
                now - self._head_changed_at,
            )
