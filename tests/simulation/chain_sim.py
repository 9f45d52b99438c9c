"""A simulated EVM chain for the crypto simulation: blocks of transactions with ERC-20 `Transfer`
logs and native transfers, mined and reorganised at will, answered over web3's provider
interface with the JSON-RPC methods the payment watcher uses. The real adapter
(`ChainReader`, `PaymentReads`) talks to it exactly as it talks to a node.

Deterministic: hashes come from counters, never from randomness or the clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address
from web3.providers.async_base import AsyncBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from adapters.chains.payments import TRANSFER_TOPIC

__all__ = ["Log", "SimChain", "SimProvider", "SimTx", "Transfer"]

_DECIMALS_SELECTOR = "0x313ce567"


def _hash(*parts: object) -> str:
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


def _word(value: int) -> str:
    return value.to_bytes(32, "big").hex()


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + address.lower().removeprefix("0x")


@dataclass(frozen=True, slots=True)
class Log:
    """An ERC-20 `Transfer(from, to, value)` log emitted by `token`."""

    token: str
    sender: str
    to: str
    value: int


@dataclass(frozen=True, slots=True)
class SimTx:
    """A transaction: native `value` to `to`, and the logs it emits, in order."""

    hash: str
    sender: str
    to: str
    value: int = 0
    logs: tuple[Log, ...] = ()
    succeeded: bool = True


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    hash: str
    timestamp: int
    txs: tuple[SimTx, ...]


@dataclass(frozen=True, slots=True)
class Transfer:
    """A transfer as it stands on the canonical chain: what the simulation's model knows."""

    tx_hash: str
    #: Position among the transaction's logs; -1 for native coin.
    position: int
    block_number: int
    block_hash: str
    timestamp: int
    token: str
    sender: str
    to: str
    value: int


@dataclass
class SimChain:
    chain_id: int
    #: token address (checksummed) -> decimals.
    tokens: dict[str, int]
    blocks: list[Block] = field(default_factory=list)
    _forks: int = 0
    _txs: int = 0

    def __post_init__(self) -> None:
        if not self.blocks:
            self.blocks.append(Block(0, _hash("genesis", self.chain_id), 0, ()))

    @property
    def head(self) -> Block:
        return self.blocks[-1]

    def new_tx_hash(self) -> str:
        self._txs += 1
        return _hash("tx", self.chain_id, self._txs)

    def mine(self, timestamp: int, txs: Iterable[SimTx] = ()) -> Block:
        """Append a block holding `txs` (in order)."""
        number = self.head.number + 1
        block = Block(
            number,
            _hash("block", number, self._forks, self.head.hash),
            max(timestamp, self.head.timestamp),
            tuple(txs),
        )
        self.blocks.append(block)
        return block

    def reorg(self, depth: int) -> list[SimTx]:
        """Drop the last `depth` blocks (never the genesis block); return their transactions.
        Blocks mined next have other hashes than the dropped ones at the same heights."""
        depth = min(depth, len(self.blocks) - 1)
        dropped = self.blocks[len(self.blocks) - depth :]
        del self.blocks[len(self.blocks) - depth :]
        self._forks += 1
        return [tx for b in dropped for tx in b.txs]

    def transfers(self, recipient: str) -> Iterator[Transfer]:
        """Every transfer to `recipient` on the canonical chain (tokens: configured ones only)."""
        want = recipient.lower()
        for block in self.blocks:
            for tx in block.txs:
                if not tx.succeeded:
                    continue
                if tx.value > 0 and tx.to.lower() == want:
                    yield Transfer(
                        tx.hash,
                        -1,
                        block.number,
                        block.hash,
                        block.timestamp,
                        "",
                        tx.sender,
                        tx.to,
                        tx.value,
                    )
                for position, log in enumerate(tx.logs):
                    if log.to.lower() == want and log.token in self.tokens:
                        yield Transfer(
                            tx.hash,
                            position,
                            block.number,
                            block.hash,
                            block.timestamp,
                            log.token,
                            log.sender,
                            log.to,
                            log.value,
                        )

    # -- JSON-RPC --

    def _where(self, tx_hash: str) -> tuple[Block, int, int] | None:
        """(block, transaction index, index of its first log in the block)."""
        for block in self.blocks:
            first = 0
            for index, tx in enumerate(block.txs):
                if tx.hash == tx_hash:
                    return block, index, first
                first += len(tx.logs) if tx.succeeded else 0
        return None

    def _block(self, tag: str, full: bool) -> dict[str, Any] | None:
        number = self.head.number if tag == "latest" else int(tag, 16)
        if not 0 <= number < len(self.blocks):
            return None
        block = self.blocks[number]
        txs: list[Any] = [
            {"hash": tx.hash, "from": tx.sender, "to": tx.to, "value": hex(tx.value)}
            if full
            else tx.hash
            for tx in block.txs
        ]
        return {
            "number": hex(block.number),
            "hash": block.hash,
            "timestamp": hex(block.timestamp),
            "transactions": txs,
        }

    def _log(self, block: Block, tx: SimTx, log: Log, index: int) -> dict[str, Any]:
        return {
            "address": log.token.lower(),
            "topics": [TRANSFER_TOPIC, _topic(log.sender), _topic(log.to)],
            "data": "0x" + _word(log.value),
            "transactionHash": tx.hash,
            "logIndex": hex(index),
            "blockNumber": hex(block.number),
            "blockHash": block.hash,
        }

    def _logs(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        start, end = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        addresses = {a.lower() for a in query.get("address") or []}
        to_topic = (query.get("topics") or [None, None, None])[2]
        out = []
        for block in self.blocks[start : end + 1]:
            index = 0
            for tx in block.txs:
                if not tx.succeeded:
                    continue
                for log in tx.logs:
                    entry = self._log(block, tx, log, index)
                    index += 1
                    if addresses and entry["address"] not in addresses:
                        continue
                    if to_topic is not None and entry["topics"][2] != to_topic.lower():
                        continue
                    out.append(entry)
        return out

    def _receipt(self, tx_hash: str) -> dict[str, Any] | None:
        found = self._where(tx_hash)
        if found is None:
            return None
        block, index, first = found
        tx = block.txs[index]
        logs = (
            [self._log(block, tx, log, first + i) for i, log in enumerate(tx.logs)]
            if tx.succeeded
            else []
        )
        return {
            "transactionHash": tx.hash,
            "blockNumber": hex(block.number),
            "blockHash": block.hash,
            "status": "0x1" if tx.succeeded else "0x0",
            "logs": logs,
        }

    def _call(self, call: dict[str, Any]) -> str:
        token = to_checksum_address(call["to"])
        if call.get("data", "")[:10] == _DECIMALS_SELECTOR and token in self.tokens:
            return "0x" + _word(self.tokens[token])
        raise ValueError("execution reverted")

    def answer(self, method: str, params: list[Any]) -> Any:
        """The result of one JSON-RPC call (ValueError: an RPC error)."""
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_blockNumber":
            return hex(self.head.number)
        if method == "eth_getBlockByNumber":
            return self._block(params[0], bool(params[1]))
        if method == "eth_getLogs":
            return self._logs(params[0])
        if method == "eth_getTransactionReceipt":
            return self._receipt(params[0])
        if method == "eth_call":
            return self._call(params[0])
        raise ValueError(f"method {method} not supported")


class SimProvider(AsyncBaseProvider):
    """web3's provider interface over a `SimChain`, in process (no sockets)."""

    def __init__(self, chain: SimChain) -> None:
        super().__init__()
        self.chain = chain

    def _response(self, method: str, params: Any) -> RPCResponse:
        try:
            return {"jsonrpc": "2.0", "id": 1, "result": self.chain.answer(method, params)}
        except ValueError as exc:
            code = 3 if "revert" in str(exc) else -32601
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": str(exc)}}

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        return self._response(method, params)

    async def make_batch_request(
        self, requests: list[tuple[RPCEndpoint, Any]]
    ) -> list[RPCResponse]:
        return [self._response(m, p) for m, p in requests]

    async def is_connected(self, show_traceback: bool = False) -> bool:
        return True

    async def disconnect(self) -> None:
        return None
