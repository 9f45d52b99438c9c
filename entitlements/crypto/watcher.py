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
from datetime import datetime

from adapters.chains import ChainUnavailable
from adapters.chains.payments import Block, PaymentReads, Receipt, TokenTransfer
from entitlements.crypto.payments import ChainEvent, CryptoPayments, block_time
from entitlements.errors import Unavailable
from entitlements.store.crypto_repository import Cursor, TransferRecord, UnmatchedRecord

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
        #: Payments with a transfer a reorg could still undo, as of this poll's check.
        self._recent: set[str] = set()
        #: The time of the last block this watcher scanned (None before its first scan).
        self._read_until: datetime | None = None

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
        stored = await self.repo.cursor(self.network)
        # What a reorg could still undo is judged from the last block this watcher read, not
        # from the head: a chain that reorganised and then grew while nobody watched must
        # still have its orphaned transfers found.
        seen_until = head if stored is None else min(head, stored.block_number)
        recent, unmatched = await self.repo.recent(self.network, seen_until - 2 * self.depth)
        self._recent = {t.payment_id for t in recent}
        # One node round trip for every hash this poll checks: the recent transfers' blocks
        # and the cursor's block (replaced under it: a reorg).
        checked = {t.block_number for t in recent} | {u.block_number for u in unmatched}
        if stored is not None and stored.block_number >= 0:
            checked.add(stored.block_number)
        canonical = await self.reads.block_hashes(sorted(checked))
        reorged, affected = await self._check_transfers(recent, unmatched, canonical)
        awaiting = affected | self._recent
        if awaiting and stored is not None and head > stored.block_number and self._read_until:
            # Settle first: a payment awaiting confirmations needs only the head's number (its
            # transfer's block was just checked against the chain), so a confirming block
            # activates it now, not after this poll has read the new blocks. The chain is read
            # up to the last block scanned, as a poll mid catch-up settles.
            await self._settle(head, awaiting, set(), self._read_until)
        cursor = await self._cursor(head, stored, canonical)
        start = cursor.block_number + 1
        end = min(head, cursor.block_number + self.max_blocks)
        found = 0
        scanned_until: datetime | None = None
        if start <= end:
            numbers = list(range(start, end + 1))
            blocks, tokens = await self.reads.scan(
                numbers, self.payments.tokens(self.network), self._pay_to()
            )
            by_number = {b.number: b for b in blocks}
            events = await self._events(blocks, tokens)
            for event in events:
                payment_id = await self.payments.record(self.network, event)
                if payment_id is not None:
                    affected.add(payment_id)
            found = len(events)
            last = by_number[end]
            cursor = Cursor(last.number, last.hash)
            await self.repo.set_cursor(self.network, self.reads.chain_id, cursor)
            self._read_until = block_time(last.timestamp)
            if cursor.block_number < head:
                # Mid catch-up: the chain is read up to this block's time, not up to now.
                scanned_until = block_time(last.timestamp)
        await self._settle(head, affected, self._recent, scanned_until)
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

    async def _events(self, blocks: list[Block], tokens: list[TokenTransfer]) -> list[ChainEvent]:
        """The transfers to the receiving address in `blocks`, in chain order: native ones from
        transactions that succeeded (a reverted call to a contract wallet lists its value but
        moves nothing), token ones with their position among their transaction's logs (read
        from its receipt: the identity a reorg cannot change). A transfer whose block changed
        under the scan is left for the next poll."""
        by_number = {b.number: b for b in blocks}
        hashes = {tx.tx_hash for b in blocks for tx in b.transfers} | {t.tx_hash for t in tokens}
        if not hashes:
            return []
        receipts = await self.reads.receipts(sorted(hashes))
        events: list[ChainEvent] = []
        for b in blocks:
            for tx in b.transfers:
                receipt = receipts.get(tx.tx_hash)
                if receipt is None or not receipt.succeeded or receipt.block_hash != b.hash:
                    continue
                events.append(
                    ChainEvent(
                        tx_hash=tx.tx_hash,
                        log_position=-1,
                        log_index=-1,
                        block_number=b.number,
                        block_hash=b.hash,
                        block_time=block_time(b.timestamp),
                        token_contract="",
                        from_address=tx.from_address,
                        to_address=tx.to_address,
                        value=tx.value,
                    )
                )
        for t in tokens:
            block = by_number.get(t.block_number)
            receipt = receipts.get(t.tx_hash)
            if block is None or block.hash != t.block_hash:
                continue
            if receipt is None or receipt.block_hash != t.block_hash:
                continue
            position = receipt.position_of(t.log_index)
            if position is None:
                continue
            events.append(
                ChainEvent(
                    tx_hash=t.tx_hash,
                    log_position=position,
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
        return events

    async def _cursor(
        self, head: int, cursor: Cursor | None, canonical: dict[int, str | None]
    ) -> Cursor:
        """The stored cursor, rewound twice the depth when its block was replaced (a reorg under
        it); a first start begins at the oldest open payment's quote block (or the head)."""
        if cursor is None:
            open_payments = await self.repo.payments(self.network)
            first = min((p.created_block for p in open_payments), default=head)
            return await self._cursor_at(min(first, head) - 1)
        if cursor.block_number < 0:
            return cursor
        if canonical.get(cursor.block_number) == cursor.block_hash:
            return cursor
        # The fork point is unknown (only the cursor's hash is stored): go back the whole
        # window followed for reorgs, twice the depth, so a transfer re-mined anywhere after
        # the fork is read again (one block deeper than the depth was missed before).
        back = min(head, cursor.block_number - 2 * self.depth)
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

    async def _check_transfers(
        self,
        recent: list[TransferRecord],
        unmatched: list[UnmatchedRecord],
        canonical: dict[int, str | None],
    ) -> tuple[int, set[str]]:
        """Re-check the transfers a reorg could still undo (from twice the depth below the last
        block read) against the `canonical` hashes of their blocks. One whose block was replaced
        either moved (its transaction was re-mined elsewhere and its log at the same position is
        the same transfer: it keeps its identity, its confirmations start over) or left the
        chain (marked reorged: it no longer counts)."""
        stale_recent = [t for t in recent if canonical.get(t.block_number) != t.block_hash]
        stale_unmatched = [u for u in unmatched if canonical.get(u.block_number) != u.block_hash]
        if not stale_recent and not stale_unmatched:
            return 0, set()
        hashes = {t.tx_hash for t in stale_recent} | {u.tx_hash for u in stale_unmatched}
        receipts = await self.reads.receipts(sorted(hashes))
        for u in stale_unmatched:
            moved = self._moved(receipts.get(u.tx_hash), u.log_position, u.value_base_units)
            if moved is None:
                await self.repo.update_unmatched(replace(u, reorged=True))
                log.warning(
                    "crypto watcher %s: unmatched transfer %s left block %d (reorg)",
                    self.network,
                    u.tx_hash,
                    u.block_number,
                )
            else:
                number, block_hash, log_index = moved
                await self.repo.update_unmatched(
                    replace(u, block_number=number, block_hash=block_hash, log_index=log_index)
                )
        reorged = 0
        affected: set[str] = set()
        for t in stale_recent:
            affected.add(t.payment_id)
            moved = self._moved(receipts.get(t.tx_hash), t.log_position, t.value_base_units)
            if moved is not None:
                number, block_hash, log_index = moved
                await self.repo.update_transfer(
                    replace(
                        t,
                        status="seen",
                        block_number=number,
                        block_hash=block_hash,
                        log_index=log_index,
                        confirmed_at=None,
                    )
                )
                log.warning(
                    "crypto watcher %s: transfer %s moved from block %d to %d (reorg)",
                    self.network,
                    t.tx_hash,
                    t.block_number,
                    number,
                )
                continue
            reorged += 1
            await self.repo.update_transfer(replace(t, status="reorged", confirmed_at=None))
            log.warning(
                "crypto watcher %s: transfer %s of payment %s left block %d (reorg)",
                self.network,
                t.tx_hash,
                t.payment_id,
                t.block_number,
            )
        return reorged, affected

    def _moved(
        self, receipt: Receipt | None, position: int, value: str
    ) -> tuple[int, str, int] | None:
        """Where a transfer re-mined after a reorg now is (block number, hash, log index), or
        None when its transaction is gone, failed, or no longer makes the same transfer."""
        if receipt is None or not receipt.succeeded:
            return None
        if position < 0:
            return receipt.block_number, receipt.block_hash, -1
        transfer = receipt.transfer_at(position)
        if (
            transfer is None
            or str(transfer.value) != value
            or transfer.to_address.lower() != self._pay_to().lower()
            or transfer.token.lower() not in {t.lower() for t in self.payments.tokens(self.network)}
        ):
            return None
        return receipt.block_number, receipt.block_hash, transfer.log_index

    async def _settle(
        self, head: int, affected: set[str], recent: set[str], scanned_until: datetime | None
    ) -> None:
        """Settle every payment that can change: open ones (expiry, late window), those with a
        recent or affected transfer (confirmations, reorgs), unapplied activations."""
        payments, transfers = await self.repo.payments_to_settle(self.network, affected | recent)
        by_payment: dict[str, list[TransferRecord]] = {}
        for t in transfers:
            by_payment.setdefault(t.payment_id, []).append(t)
        for payment in payments:
            await self.payments.settle(
                payment, head, scanned_until, transfers=by_payment.get(payment.id, [])
            )

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
