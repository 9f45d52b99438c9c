"""The chain reads crypto payments need: heads, blocks with their transactions, ERC-20 `Transfer`
logs to one address, receipts, token decimals and a Chainlink price, on a `ChainReader`'s node.

Like the reader, every call is one JSON-RPC round trip (a batch where it reads several things),
and anything that is not an answer (transport error, RPC error, malformed result) raises
`ChainUnavailable`: a payment is never judged on a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from web3.types import RPCResponse

from adapters.chains import abi
from adapters.chains.errors import ChainUnavailable
from adapters.chains.reader import ChainReader

__all__ = [
    "TRANSFER_TOPIC",
    "Block",
    "NativeTransfer",
    "PaymentReads",
    "PriceRound",
    "Receipt",
    "ReceiptLog",
    "TokenTransfer",
]

#: keccak256("Transfer(address,address,uint256)"), topic0 of every ERC-20 Transfer log.
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

_LATEST_ROUND_DATA = abi.selector("latestRoundData()")


@dataclass(frozen=True, slots=True)
class NativeTransfer:
    """A transaction in a block that moves native coin (value > 0) to some address."""

    tx_hash: str
    from_address: str
    to_address: str
    value: int


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    hash: str
    timestamp: int
    transfers: tuple[NativeTransfer, ...]


@dataclass(frozen=True, slots=True)
class TokenTransfer:
    """One ERC-20 `Transfer` log."""

    token: str
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    to_address: str
    value: int


@dataclass(frozen=True, slots=True)
class ReceiptLog:
    """One log of a receipt: the emitting contract, topics and data, and its index in the
    block."""

    address: str
    topics: tuple[str, ...]
    data: str
    log_index: int


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: str
    block_number: int
    block_hash: str
    succeeded: bool
    #: The transaction's logs in order: a log's position here identifies it across reorgs
    #: (re-mined elsewhere, its index in the block changes, its position does not).
    logs: tuple[ReceiptLog, ...] = ()

    def position_of(self, log_index: int) -> int | None:
        """The position among this transaction's logs of the block log `log_index`."""
        for position, entry in enumerate(self.logs):
            if entry.log_index == log_index:
                return position
        return None

    def transfer_at(self, position: int) -> TokenTransfer | None:
        """The ERC-20 `Transfer` at `position` among the logs, None if there is none there."""
        if not 0 <= position < len(self.logs):
            return None
        entry = self.logs[position]
        return _transfer(
            {
                "address": entry.address,
                "topics": list(entry.topics),
                "data": entry.data,
                "transactionHash": self.tx_hash,
                "logIndex": entry.log_index,
                "blockNumber": self.block_number,
                "blockHash": self.block_hash,
            },
            None,
            "receipt",
        )


@dataclass(frozen=True, slots=True)
class PriceRound:
    """A Chainlink `latestRoundData()` answer: `answer / 10**decimals`, updated at `updated_at`."""

    answer: int
    decimals: int
    updated_at: int


class PaymentReads:
    """Payment reads on one network's node (shares the reader's provider and counters)."""

    def __init__(self, reader: ChainReader) -> None:
        self.reader = reader
        self.network = reader.network
        self.chain_id = reader.chain_id
        self._decimals: dict[str, int] = {}

    async def block_number(self) -> int:
        (response,) = await self.reader._batch([("eth_blockNumber", [])])
        return _int(self._value(response, "eth_blockNumber"), self.network, "eth_blockNumber")

    async def scan(
        self, numbers: Sequence[int], tokens: Sequence[str], recipient: str
    ) -> tuple[list[Block], list[TokenTransfer]]:
        """The consecutive blocks `numbers` with their native transfers to `recipient`, and the
        `Transfer` logs to `recipient` emitted by the contracts `tokens` only in those blocks, in
        one batch (one round trip). A block the node does not have (yet) raises
        ChainUnavailable."""
        if not numbers:
            return [], []
        calls: list[tuple[str, list[Any]]] = [
            ("eth_getBlockByNumber", [hex(n), True]) for n in numbers
        ]
        query = _logs_query(numbers[0], numbers[-1], tokens, recipient) if tokens else None
        if query is not None:
            calls.append(("eth_getLogs", [query]))
        responses = await self.reader._batch(calls)
        blocks = self._blocks(numbers, responses[: len(numbers)], recipient)
        if query is None:
            return blocks, []
        return blocks, self._token_transfers(responses[-1], tokens)

    def _blocks(
        self, numbers: Sequence[int], responses: Sequence[RPCResponse], recipient: str
    ) -> list[Block]:
        want = recipient.lower()
        blocks = []
        for number, response in zip(numbers, responses, strict=True):
            raw = self._value(response, "eth_getBlockByNumber")
            if not isinstance(raw, Mapping):
                raise ChainUnavailable(self.network, f"block {number} is not available")
            transfers = []
            for tx in raw.get("transactions", ()):
                if not isinstance(tx, Mapping):
                    raise ChainUnavailable(self.network, "block without full transactions")
                to = tx.get("to")
                value = _int(tx.get("value"), self.network, "transaction value")
                if isinstance(to, str) and to.lower() == want and value > 0:
                    transfers.append(
                        NativeTransfer(
                            tx_hash=str(tx["hash"]).lower(),
                            from_address=to_checksum_address(str(tx["from"])),
                            to_address=to_checksum_address(to),
                            value=value,
                        )
                    )
            blocks.append(
                Block(
                    number=_int(raw.get("number"), self.network, "block number"),
                    hash=str(raw.get("hash")).lower(),
                    timestamp=_int(raw.get("timestamp"), self.network, "block timestamp"),
                    transfers=tuple(transfers),
                )
            )
        return blocks

    async def block_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        """The hash of each block number; None for a block the node does not have."""
        if not numbers:
            return {}
        responses = await self.reader._batch(
            [("eth_getBlockByNumber", [hex(n), False]) for n in numbers]
        )
        hashes: dict[int, str | None] = {}
        for number, response in zip(numbers, responses, strict=True):
            raw = self._value(response, "eth_getBlockByNumber")
            hashes[number] = str(raw["hash"]).lower() if isinstance(raw, Mapping) else None
        return hashes

    def _token_transfers(self, response: RPCResponse, tokens: Sequence[str]) -> list[TokenTransfer]:
        raw = self._value(response, "eth_getLogs")
        if not isinstance(raw, list):
            raise ChainUnavailable(self.network, "eth_getLogs: not a list")
        allowed = {t.lower() for t in tokens}
        transfers = []
        for entry in raw:
            if not isinstance(entry, Mapping) or entry.get("removed"):
                continue
            # Nodes filter by address and topic already; check again, a fake token must never pay.
            transfer = _transfer(entry, allowed, self.network)
            if transfer is not None:
                transfers.append(transfer)
        return transfers

    async def receipts(self, tx_hashes: Sequence[str]) -> dict[str, Receipt | None]:
        """Each transaction's receipt (one batch); None when the node does not know it (not
        mined, or dropped by a reorg)."""
        if not tx_hashes:
            return {}
        responses = await self.reader._batch(
            [("eth_getTransactionReceipt", [h]) for h in tx_hashes]
        )
        out: dict[str, Receipt | None] = {}
        for tx_hash, response in zip(tx_hashes, responses, strict=True):
            raw = self._value(response, "eth_getTransactionReceipt")
            if not isinstance(raw, Mapping) or raw.get("blockHash") is None:
                out[tx_hash] = None
                continue
            logs = []
            for entry in raw.get("logs") or ():
                if not isinstance(entry, Mapping):
                    raise ChainUnavailable(self.network, "receipt log is not an object")
                logs.append(
                    ReceiptLog(
                        address=str(entry.get("address", "")).lower(),
                        topics=tuple(str(t).lower() for t in entry.get("topics") or ()),
                        data=str(entry.get("data", "0x")),
                        log_index=_int(entry.get("logIndex"), self.network, "logIndex"),
                    )
                )
            out[tx_hash] = Receipt(
                tx_hash=tx_hash,
                block_number=_int(raw.get("blockNumber"), self.network, "blockNumber"),
                block_hash=str(raw["blockHash"]).lower(),
                succeeded=_int(raw.get("status", "0x1"), self.network, "status") == 1,
                logs=tuple(logs),
            )
        return out

    async def decimals(self, token: str) -> int:
        """ERC-20 `decimals()`, read once per contract and cached."""
        token = to_checksum_address(token)
        cached = self._decimals.get(token)
        if cached is not None:
            return cached
        (result,) = await self.reader._calls([(token, abi.decimals())])
        value = self.reader._uint(result, "decimals")
        if value > 255:
            raise ChainUnavailable(self.network, f"{token}: implausible decimals {value}")
        self._decimals[token] = value
        return value

    async def chainlink_price(self, feed: str) -> PriceRound:
        """A Chainlink aggregator's `latestRoundData()` and `decimals()`, in one batch."""
        feed = to_checksum_address(feed)
        results = await self.reader._calls([(feed, _LATEST_ROUND_DATA), (feed, abi.decimals())])
        data = self.reader._data(results[0], "latestRoundData")
        try:
            _, answer, _, updated_at, _ = decode(
                ["uint80", "int256", "uint256", "uint256", "uint80"], data
            )
        except DecodingError as exc:
            raise ChainUnavailable(self.network, f"latestRoundData: undecodable: {exc}") from exc
        return PriceRound(
            answer=int(answer),
            decimals=self.reader._uint(results[1], "decimals"),
            updated_at=int(updated_at),
        )

    def _value(self, response: RPCResponse, what: str) -> Any:
        error = response.get("error")
        if error is not None:
            message = error.get("message", "") if isinstance(error, Mapping) else error
            raise ChainUnavailable(self.network, f"{what}: RPC error: {message}")
        return response.get("result")


def _logs_query(
    from_block: int, to_block: int, tokens: Sequence[str], recipient: str
) -> dict[str, Any]:
    """The `eth_getLogs` filter for `Transfer`s to `recipient` from the contracts `tokens`."""
    topic_to = "0x" + "00" * 12 + recipient.lower().removeprefix("0x")
    return {
        "fromBlock": hex(from_block),
        "toBlock": hex(to_block),
        "address": [to_checksum_address(t) for t in tokens],
        "topics": [TRANSFER_TOPIC, None, topic_to],
    }


def _transfer(
    entry: Mapping[str, Any], allowed: set[str] | None, network: str
) -> TokenTransfer | None:
    """An ERC-20 `Transfer` log as a TokenTransfer; None when the log is not one (or not from a
    contract in `allowed`, when given)."""
    topics = entry.get("topics") or []
    address = str(entry.get("address", "")).lower()
    if allowed is not None and address not in allowed:
        return None
    if len(topics) != 3 or str(topics[0]).lower() != TRANSFER_TOPIC:
        return None
    try:
        (value,) = decode(["uint256"], _unhex(str(entry.get("data", "0x"))))
    except DecodingError:
        return None
    return TokenTransfer(
        token=to_checksum_address(address),
        tx_hash=str(entry["transactionHash"]).lower(),
        log_index=_int(entry.get("logIndex"), network, "logIndex"),
        block_number=_int(entry.get("blockNumber"), network, "blockNumber"),
        block_hash=str(entry["blockHash"]).lower(),
        from_address=to_checksum_address("0x" + str(topics[1])[-40:]),
        to_address=to_checksum_address("0x" + str(topics[2])[-40:]),
        value=int(value),
    )


def _int(value: object, network: str, what: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.startswith(("0x", "0X")) else int(value)
        except ValueError:
            pass
    raise ChainUnavailable(network, f"{what}: not a number: {value!r}")


def _unhex(value: str) -> bytes:
    text = value[2:] if value.startswith(("0x", "0X")) else value
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""
