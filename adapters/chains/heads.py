"""Following each network's chain head: new heads by websocket subscription (`eth_subscribe`
"newHeads") where the node offers one, else a fast poll of the latest header, with backoff while
the node fails or stops moving. Listeners hear of every new head, and of reorgs: the first block
whose hash changed (the follower remembers the hashes of recent blocks).

The poll reads the latest *header* (`eth_getBlockByNumber("latest")`), not `eth_blockNumber`: a
block replaced at the same height (the common one-block reorg) changes the hash, not the number.
After a new head the poll pauses for most of a block time (a block cannot come sooner), so a
12-second chain costs a few polls per block, not one per poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from adapters.chains.config import ChainSettings
from adapters.chains.errors import ChainError, ChainUnavailable
from adapters.chains.reader import ChainReader

__all__ = ["HeadFollower", "HeadFollowers", "HeadStatus", "HeadUpdate", "Header", "read_headers"]

log = logging.getLogger(__name__)

#: Recent block hashes kept to recognise a reorg (deeper reorgs are not undone block by block).
KEEP_BLOCKS = 128
#: A websocket that failed is tried again after this long (polling meanwhile).
WS_RETRY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Header:
    number: int
    hash: str
    parent_hash: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class HeadUpdate:
    """What changed at the head: the new head, and the first block number whose hash changed
    (None when the chain only grew). Blocks from `reorged_from` up were replaced or dropped."""

    network: str
    head: Header
    reorged_from: int | None = None


@dataclass(frozen=True, slots=True)
class HeadStatus:
    """What readiness and metrics show of a network's head."""

    network: str
    #: The latest block seen (-1 before the first).
    number: int
    #: Seconds since the head last moved (None before the first head): a stalled node shows
    #: here even while it answers. A dev chain that mines on demand stalls by design.
    age_seconds: float | None
    #: Seconds between the head block's timestamp and now (None before the first head).
    block_age_seconds: float | None
    #: "websocket" or "poll".
    source: str
    #: Consecutive failed reads of the head (0 when the last one answered).
    failures: int
    last_error: str


Listener = Callable[[HeadUpdate], None]


class HeadFollower:
    """One network's head. `start()` runs it in a background task; `poll_once()` does one poll
    (tests). Listeners are plain callbacks, called on the event loop: they must not block (set
    an event, queue the update)."""

    def __init__(
        self,
        reader: ChainReader,
        *,
        poll_seconds: float,
        block_seconds: float = 0.0,
        ws_url: str | None = None,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self.reader = reader
        self.network = reader.network
        self.poll_seconds = poll_seconds
        self.block_seconds = block_seconds
        self.ws_url = ws_url
        self.max_backoff = max(max_backoff_seconds, poll_seconds)
        self._hashes: dict[int, str] = {}
        self._head: Header | None = None
        self._moved_at: float | None = None
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._source = "poll"
        self._failures = 0
        self._last_error = ""
        self._ws_retry_at = 0.0
        self._ws_warned = False
        self._lock = asyncio.Lock()
        #: Head reads made (a poll, or a batch of headers after a gap or a reorg).
        self.requests = 0

    def __repr__(self) -> str:
        return f"HeadFollower({self.network!r}, source={self._source!r})"

    # -- what others read --

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def head(self) -> Header | None:
        return self._head

    def hash_of(self, number: int) -> str | None:
        """The hash of recent block `number` on the chain as followed (None if not remembered)."""
        return self._hashes.get(number)

    def head_age_seconds(self) -> float | None:
        """Seconds since the head last moved; None before the first head."""
        return None if self._moved_at is None else time.monotonic() - self._moved_at

    def status(self) -> HeadStatus:
        head = self._head
        return HeadStatus(
            network=self.network,
            number=-1 if head is None else head.number,
            age_seconds=self.head_age_seconds(),
            block_age_seconds=None if head is None else max(0.0, time.time() - head.timestamp),
            source=self._source,
            failures=self._failures,
            last_error=self._last_error,
        )

    # -- running --

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"head-follower-{self.network}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def poll_once(self) -> HeadUpdate | None:
        """Read the latest header and take it in; the update when the head changed."""
        (header,) = await self._read("latest")
        return await self.accept(header)

    async def accept(self, header: Header) -> HeadUpdate | None:
        """Take in a header seen on the node: fill a gap below it, find where a reorg forked,
        remember the hashes and tell the listeners. None when it is the head already."""
        async with self._lock:
            update = await self._accept(header)
        if update is not None:
            for listener in self._listeners:
                try:
                    listener(update)
                except Exception:
                    log.exception("head listener %r failed", listener)
        return update

    async def _accept(self, header: Header) -> HeadUpdate | None:
        head = self._head
        known = self._hashes.get(header.number) == header.hash
        if known and head is not None and header.number >= head.number:
            return None
        segment = [header]
        if head is not None:
            if header.number - head.number > KEEP_BLOCKS:
                # Too far behind to trace block by block: start over from here.
                self._hashes.clear()
            else:
                segment = await self._link(segment, head)
        reorged_from: int | None = None
        if head is not None:
            changed = [
                h.number for h in segment if self._hashes.get(h.number) not in (None, h.hash)
            ]
            dropped = [n for n in self._hashes if n > header.number]
            if changed or dropped:
                reorged_from = min(changed + dropped)
        for number in [n for n in self._hashes if n > header.number]:
            del self._hashes[number]
        for h in segment:
            self._hashes[h.number] = h.hash
        for number in [n for n in self._hashes if n <= header.number - KEEP_BLOCKS]:
            del self._hashes[number]
        self._head = header
        self._moved_at = time.monotonic()
        if reorged_from is not None:
            log.warning(
                "%s: reorg: blocks from %d were replaced (new head %d %s)",
                self.network,
                reorged_from,
                header.number,
                header.hash,
            )
        return HeadUpdate(self.network, header, reorged_from)

    async def _link(self, segment: list[Header], head: Header) -> list[Header]:
        """Prepend the node's headers below `segment` until one links to a remembered hash (or
        memory ends): the blocks of a gap, and those a reorg replaced."""
        lowest_known = min(self._hashes, default=head.number)
        while True:
            first = segment[0]
            below = first.number - 1
            if below < lowest_known or below < 0:
                return segment
            if below <= head.number and self._hashes.get(below) == first.parent_hash:
                return segment
            start = max(lowest_known, below - 15, 0)
            if below > head.number:
                start = max(start, head.number + 1)
            fetched = await self._read(*range(start, below + 1))
            for lower, upper in zip(fetched, [*fetched[1:], first], strict=True):
                if upper.parent_hash != lower.hash:
                    raise ChainUnavailable(self.network, "the chain changed while being read")
            segment = [*fetched, *segment]

    async def _read(self, *blocks: int | str) -> list[Header]:
        self.requests += 1
        return await read_headers(self.reader, blocks)

    async def _run(self) -> None:
        while True:
            if self.ws_url and time.monotonic() >= self._ws_retry_at:
                try:
                    await self._follow_ws(self.ws_url)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._ws_retry_at = time.monotonic() + WS_RETRY_SECONDS
                    self._note_failure(exc)
                    # Said once per outage: a node without a websocket is retried every minute.
                    level = (
                        logging.WARNING
                        if self._source == "websocket" or not self._ws_warned
                        else logging.DEBUG
                    )
                    self._ws_warned = True
                    log.log(
                        level,
                        "%s: no head subscription (%s); polling every %.2f s",
                        self.network,
                        exc or type(exc).__name__,
                        self.poll_seconds,
                    )
                self._source = "poll"
            await asyncio.sleep(await self._poll_step())

    async def _poll_step(self) -> float:
        """One poll; returns how long to wait before the next."""
        try:
            update = await self.poll_once()
        except (ChainError, OSError, TimeoutError) as exc:
            self._note_failure(exc)
            return min(self.poll_seconds * 2.0 ** min(self._failures, 10), self.max_backoff)
        except Exception as exc:
            self._note_failure(exc)
            log.exception("%s: reading the head failed", self.network)
            return self.max_backoff
        self._failures, self._last_error = 0, ""
        if update is not None:
            # A block cannot come much sooner than a block time after the last one.
            return max(self.poll_seconds, self.block_seconds - 2 * self.poll_seconds)
        age = self.head_age_seconds() or 0.0
        if self.block_seconds > 0 and age > 3 * self.block_seconds + 5:
            # The node has stopped following the chain: ask less often until it moves again.
            return min(self.max_backoff, max(self.poll_seconds, age / 10))
        return self.poll_seconds

    def _note_failure(self, exc: BaseException) -> None:
        self._failures += 1
        self._last_error = str(exc) or type(exc).__name__
        if self._failures in (1, 10) or self._failures % 100 == 0:
            log.warning("%s: head read failed (%d in a row): %s", self.network, self._failures, exc)

    async def _follow_ws(self, url: str) -> None:
        """Take in every head the node pushes; returns or raises when the socket ends. A quiet
        socket (a dev chain, a lost notification) is checked by a poll now and then."""
        idle = max(3 * self.block_seconds, 5.0)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.reader.timeout_seconds)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.ws_connect(url, heartbeat=30) as ws,
        ):
            await ws.send_json(
                {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
            )
            reply = await ws.receive_json(timeout=self.reader.timeout_seconds)
            if not isinstance(reply, Mapping) or "result" not in reply:
                raise ChainUnavailable(self.network, f"eth_subscribe refused: {reply!r}")
            self._source = "websocket"
            self._failures, self._last_error = 0, ""
            log.info("%s: following new heads over %s", self.network, _redact(url))
            await self.poll_once()  # the head as of now, in case no block comes for a while
            while True:
                try:
                    message = await ws.receive(timeout=idle)
                except TimeoutError:
                    await self.poll_once()
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise ChainUnavailable(
                        self.network, f"head subscription ended ({message.type})"
                    )
                data = json.loads(message.data)
                result = data.get("params", {}).get("result") if isinstance(data, dict) else None
                if not isinstance(result, Mapping):
                    continue
                try:
                    header = _header(result, self.network)
                except ChainUnavailable:
                    continue
                await self.accept(header)


class HeadFollowers:
    """The configured networks' head followers, by network name."""

    def __init__(self, followers: Sequence[HeadFollower]) -> None:
        self._by_network = {f.network: f for f in followers}
        self._readers: list[ChainReader] = []

    @classmethod
    def from_settings(cls, settings: ChainSettings) -> HeadFollowers:
        """One follower per configured network, each on its own connection (a slow token read
        never delays a head)."""
        followers = []
        readers = []
        for network, url in settings.rpc_urls.items():
            chain_id = settings.chain_id(network)
            if chain_id is None:  # pragma: no cover - from_env only reads known networks
                continue
            reader = ChainReader(
                network, chain_id, url, timeout_seconds=settings.request_timeout_seconds
            )
            readers.append(reader)
            followers.append(
                HeadFollower(
                    reader,
                    poll_seconds=settings.poll_seconds(network),
                    block_seconds=settings.block_seconds(network),
                    ws_url=settings.ws_urls.get(network),
                )
            )
        heads = cls(followers)
        heads._readers = readers
        return heads

    def get(self, network: str) -> HeadFollower | None:
        return self._by_network.get(network)

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(self._by_network)

    def status(self) -> dict[str, HeadStatus]:
        """Every network's head (number, age, source, failures), for readiness and metrics."""
        return {network: f.status() for network, f in self._by_network.items()}

    def start(self) -> None:
        for follower in self._by_network.values():
            follower.start()

    async def close(self) -> None:
        for follower in self._by_network.values():
            await follower.stop()
        for reader in self._readers:
            await reader.close()


async def read_headers(reader: ChainReader, blocks: Sequence[int | str]) -> list[Header]:
    """The headers of `blocks` (numbers, or "latest") in one round trip; a block the node does
    not have raises ChainUnavailable."""
    responses = await reader._batch(
        [("eth_getBlockByNumber", [b if isinstance(b, str) else hex(b), False]) for b in blocks]
    )
    headers = []
    for block, response in zip(blocks, responses, strict=True):
        if "error" in response:
            raise ChainUnavailable(reader.network, f"eth_getBlockByNumber: {response['error']}")
        raw = response.get("result")
        if not isinstance(raw, Mapping):
            raise ChainUnavailable(reader.network, f"block {block} is not available")
        headers.append(_header(raw, reader.network))
    return headers


def _header(raw: Mapping[str, Any], network: str) -> Header:
    try:
        return Header(
            number=int(raw["number"], 16),
            hash=str(raw["hash"]),
            parent_hash=str(raw["parentHash"]),
            timestamp=int(raw["timestamp"], 16),
        )
    except (KeyError, TypeError, ValueError):
        raise ChainUnavailable(network, f"malformed block header: {raw!r}") from None


def _redact(url: str) -> str:
    # Provider URLs carry the API key in the path.
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/..."
