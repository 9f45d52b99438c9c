"""Reading token balances and contract-wallet signatures from EVM nodes with web3.py's async API.

Every read of one check goes out as ONE JSON-RPC batch request (web3's provider batching), so a
check costs one round trip whatever it reads. A reverted call is an answer (``ownerOf`` of a
missing token: not the owner); a transport error, a timeout, an RPC error or an empty ``0x``
result is not, and raises `ChainUnavailable`.

The first read of a token contract also asks what the contract is, in the same batch
(`adapters/chains/probe.py`): one that is not the declared standard raises `ContractMismatch`.
A contract that passed is remembered; when it later answers oddly (a revert, nothing), the read
is made once more with the probe, so a contract that changed is named, not blamed on the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.types import RPCEndpoint, RPCResponse

from adapters.chains import abi
from adapters.chains.errors import (
    ChainMismatch,
    ChainUnavailable,
    UnexpectedAnswer,
)
from adapters.chains.probe import judge, probe_requests

__all__ = ["ChainReader", "Erc20Balance"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: JSON-RPC error code geth, anvil and most providers use for "execution reverted".
_REVERT_CODE = 3


@dataclass(frozen=True, slots=True)
class Erc20Balance:
    """A balance in base units with the token's decimals."""

    raw: int
    decimals: int


class _Reverted:
    """A call that reverted: an answer, unlike an error."""


_REVERTED = _Reverted()


class ChainReader:
    """One network's node. Counts its JSON-RPC round trips in `requests` (reads) so tests and
    benchmarks can see how many chain reads a workload cost."""

    def __init__(
        self,
        network: str,
        chain_id: int,
        url: str,
        *,
        timeout_seconds: float = 10.0,
        max_head_age_seconds: float = 0.0,
    ) -> None:
        self.network = network
        self.chain_id = chain_id
        self.url = url
        self._timeout = timeout_seconds
        self._max_head_age = max_head_age_seconds
        # No retries inside web3: a slow node must show up as unavailable within the timeout.
        self._provider = AsyncHTTPProvider(url, exception_retry_configuration=None)
        self.w3 = AsyncWeb3(self._provider)
        self._checked = False
        self._check_lock = asyncio.Lock()
        #: Set while the node answers for another chain (found at start or on a later check);
        #: readiness reports the network down, and every read raises it until the node is right.
        self.mismatch: ChainMismatch | None = None
        self._decimals: dict[str, int] = {}
        #: Token contracts the probe found to be of a standard: address -> "ERC20", ...
        self._standards: dict[str, str] = {}
        #: JSON-RPC round trips made for reads (a batch counts once); not the chain id check.
        self.requests = 0
        #: Told of every round trip: (network, method or "batch", seconds, error class or None).
        #: The server sets it to its metrics; the adapter knows nothing of them.
        self.observer: Callable[[str, str, float, str | None], None] | None = None

    def __repr__(self) -> str:
        return f"ChainReader({self.network!r}, chain_id={self.chain_id})"

    @property
    def timeout_seconds(self) -> float:
        """One round trip fails after this long."""
        return self._timeout

    async def connect(self) -> None:
        """Check the node serves this network's chain; raise ChainMismatch if not, and
        ChainUnavailable if it cannot be reached (then the check runs again before a read)."""
        async with self._check_lock:
            if self._checked:
                return
            try:
                async with asyncio.timeout(self._timeout):
                    actual = int(await self.w3.eth.chain_id)
            except Exception as exc:
                raise self._unavailable("eth_chainId", exc) from exc
            if actual != self.chain_id:
                self.mismatch = ChainMismatch(self.network, self.chain_id, actual)
                log.error("%s", self.mismatch)
                raise self.mismatch
            self.mismatch = None
            self._checked = True

    check = connect

    async def ping(self) -> int:
        """Readiness: the node answers and serves this network's chain (ChainMismatch if not,
        ChainUnavailable if it cannot be reached); returns the head block number."""
        if not self._checked:
            await self.connect()
        async with asyncio.timeout(self._timeout):
            return int(await self.w3.eth.block_number)

    async def close(self) -> None:
        await self._provider.disconnect()

    # -- token reads --

    async def check_token(self, token: str, standard: str) -> None:
        """Raise ContractMismatch unless `token` is a contract of `standard` ("ERC20",
        "ERC721", "ERC1155"); ChainUnavailable when the node cannot say."""
        await self._calls([], probe=(to_checksum_address(token), standard), check_chain=True)

    async def erc20_balance(self, token: str, owner: str) -> Erc20Balance:
        """`balanceOf(owner)` and, unless cached for the contract, `decimals()`, in one batch."""
        token = to_checksum_address(token)
        return await self._token_read(
            token, "ERC20", lambda probe: self._erc20_balance(token, owner, probe)
        )

    async def _erc20_balance(
        self, token: str, owner: str, probe: tuple[str, str] | None
    ) -> Erc20Balance:
        decimals = self._decimals.get(token)
        calls = [(token, abi.balance_of(owner))]
        if decimals is None:
            calls.append((token, abi.decimals()))
        results = await self._calls(calls, probe=probe, check_chain=True)
        raw = self._uint(results[0], "balanceOf")
        if decimals is None:
            decimals = self._uint(results[1], "decimals")
            if decimals > 255:
                raise UnexpectedAnswer(self.network, f"{token}: implausible decimals {decimals}")
            self._decimals[token] = decimals
        return Erc20Balance(raw=raw, decimals=decimals)

    async def erc721_balance(self, token: str, owner: str) -> int:
        token = to_checksum_address(token)

        async def read(probe: tuple[str, str] | None) -> int:
            (result,) = await self._calls(
                [(token, abi.balance_of(owner))], probe=probe, check_chain=True
            )
            return self._uint(result, "balanceOf")

        return await self._token_read(token, "ERC721", read)

    async def erc721_owned(self, token: str, owner: str, token_ids: Sequence[int]) -> list[bool]:
        """For each id, whether `owner` owns it; a missing token (ownerOf reverts) is not owned."""
        token = to_checksum_address(token)
        return await self._token_read(
            token, "ERC721", lambda probe: self._erc721_owned(token, owner, token_ids, probe)
        )

    async def _erc721_owned(
        self, token: str, owner: str, token_ids: Sequence[int], probe: tuple[str, str] | None
    ) -> list[bool]:
        owner = to_checksum_address(owner)
        results = await self._calls(
            [(token, abi.owner_of(i)) for i in token_ids], probe=probe, check_chain=True
        )
        owned = []
        for result in results:
            if isinstance(result, _Reverted):
                owned.append(False)
                continue
            try:
                holder = abi.decode_address(self._data(result, "ownerOf"))
            except DecodingError as exc:
                raise UnexpectedAnswer(self.network, f"ownerOf: undecodable result: {exc}") from exc
            owned.append(to_checksum_address(holder) == owner)
        return owned

    async def erc1155_balances(self, token: str, owner: str, token_ids: Sequence[int]) -> list[int]:
        token = to_checksum_address(token)

        async def read(probe: tuple[str, str] | None) -> list[int]:
            (result,) = await self._calls(
                [(token, abi.balance_of_batch(owner, token_ids))], probe=probe, check_chain=True
            )
            try:
                values = abi.decode_uint_array(self._data(result, "balanceOfBatch"))
            except DecodingError as exc:
                raise UnexpectedAnswer(
                    self.network, f"balanceOfBatch: undecodable result: {exc}"
                ) from exc
            if len(values) != len(token_ids):
                raise UnexpectedAnswer(self.network, "balanceOfBatch: wrong number of balances")
            return values

        return await self._token_read(token, "ERC1155", read)

    async def is_valid_signature(self, wallet: str, message_hash: bytes, signature: bytes) -> bool:
        """EIP-1271: True if the contract at `wallet` answers the magic value. A revert, another
        value or no code at the address is False; an RPC error raises ChainUnavailable."""
        wallet = to_checksum_address(wallet)
        responses = await self._batch(
            check_chain=True,
            requests=[
                ("eth_getCode", [wallet, "latest"]),
                (
                    "eth_call",
                    [
                        {
                            "to": wallet,
                            "data": _hex(abi.is_valid_signature(message_hash, signature)),
                        },
                        "latest",
                    ],
                ),
            ],
        )
        code = self._result(responses[0], "eth_getCode")
        if isinstance(code, _Reverted) or _unhex(code) == b"":
            return False
        answer = self._result(responses[1], "isValidSignature")
        if isinstance(answer, _Reverted):
            return False
        return _unhex(answer)[:4] == abi.EIP1271_MAGIC

    async def has_code(self, address: str) -> bool:
        (response,) = await self._batch([("eth_getCode", [to_checksum_address(address), "latest"])])
        code = self._result(response, "eth_getCode")
        return not isinstance(code, _Reverted) and _unhex(code) != b""

    # -- plumbing --

    async def _token_read(
        self,
        token: str,
        standard: str,
        read: Callable[[tuple[str, str] | None], Awaitable[_T]],
    ) -> _T:
        """`read`, with the contract probed in the same batch unless it passed before; an odd
        answer from a contract that passed before is read once more with the probe."""
        if self._standards.get(token) != standard:
            return await read((token, standard))
        try:
            return await read(None)
        except UnexpectedAnswer:
            self._standards.pop(token, None)
            return await read((token, standard))

    async def _calls(
        self,
        calls: Sequence[tuple[str, bytes]],
        *,
        probe: tuple[str, str] | None = None,
        check_chain: bool = False,
    ) -> list[str | _Reverted]:
        requests: list[tuple[str, list[Any]]] = [
            ("eth_call", [{"to": to, "data": _hex(data)}, "latest"]) for to, data in calls
        ]
        if probe is not None:
            requests += probe_requests(probe[0])
        if self._max_head_age > 0:
            # A node that stopped following the chain answers old (often zero) balances: read
            # its head in the same round trip and refuse answers from a stale one.
            requests.append(("eth_getBlockByNumber", ["latest", False]))
        responses = await self._batch(requests, check_chain=check_chain)
        if self._max_head_age > 0:
            self._check_head(responses.pop())
        if probe is not None:
            token, standard = probe
            answers = [self._result(r, "probe") for r in responses[len(calls) :]]
            judge(
                self.network,
                token,
                standard,
                [None if isinstance(a, _Reverted) else _unhex(a) for a in answers],
            )
            self._standards[token] = standard
        return [self._result(r, "eth_call") for r in responses[: len(calls)]]

    def _check_head(self, response: RPCResponse) -> None:
        block = response.get("result")
        try:
            timestamp = int(cast(Mapping[str, Any], block)["timestamp"], 16)
        except (TypeError, KeyError, ValueError):
            raise ChainUnavailable(self.network, "no latest block in the answer") from None
        age = time.time() - timestamp
        if age > self._max_head_age:
            raise ChainUnavailable(
                self.network,
                f"the node is lagging: its latest block is {age:.0f} s old "
                f"(more than {self._max_head_age:.0f} s)",
            )

    async def _batch(
        self, requests: Sequence[tuple[str, list[Any]]], *, check_chain: bool = False
    ) -> list[RPCResponse]:
        """One JSON-RPC round trip for all `requests` (a plain request when there is one).
        `check_chain` asks `eth_chainId` in the same batch: a node that now serves another
        chain (swapped behind its URL) raises ChainMismatch instead of answering for it."""
        if not self._checked:
            await self.connect()
        if check_chain:
            requests = [*requests, ("eth_chainId", [])]
        self.requests += 1
        method = requests[0][0] if len(requests) == 1 else "batch"
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                if len(requests) == 1:
                    name, params = requests[0]
                    single = [await self._provider.make_request(RPCEndpoint(name), params)]
                    self._observe(method, started, None)
                    return single
                answer = await self._provider.make_batch_request(
                    [(RPCEndpoint(name), params) for name, params in requests]
                )
        except ChainUnavailable as exc:
            self._observe(method, started, type(exc).__name__)
            raise
        except Exception as exc:
            self._observe(method, started, type(exc).__name__)
            raise self._unavailable(method, exc) from exc
        self._observe(method, started, None)
        if not isinstance(answer, list):
            # The node refused the whole batch with one error object.
            error = cast(Mapping[str, Any], answer).get("error")
            raise ChainUnavailable(self.network, f"batch request refused: {error!r}")
        if len(answer) != len(requests):
            raise ChainUnavailable(self.network, "batch answer has the wrong number of results")
        if check_chain:
            self._check_chain_id(answer.pop())
        return answer

    def _check_chain_id(self, response: RPCResponse) -> None:
        result = response.get("result")
        try:
            actual = int(cast(str, result), 16)
        except (TypeError, ValueError):
            raise ChainUnavailable(self.network, "eth_chainId: no chain id in the answer") from None
        if actual != self.chain_id:
            self._checked = False  # checked again (eth_chainId) before the next read
            self.mismatch = ChainMismatch(self.network, self.chain_id, actual)
            log.error("%s", self.mismatch)
            raise self.mismatch

    def _observe(self, method: str, started: float, error: str | None) -> None:
        if self.observer is not None:
            self.observer(self.network, method, time.perf_counter() - started, error)

    def _result(self, response: RPCResponse, what: str) -> str | _Reverted:
        error = response.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, Mapping) else None
            message = str(error.get("message", "")) if isinstance(error, Mapping) else str(error)
            if code == _REVERT_CODE or "revert" in message.lower():
                return _REVERTED
            raise ChainUnavailable(self.network, f"{what}: RPC error {code}: {message}")
        result = response.get("result")
        if not isinstance(result, str):
            raise ChainUnavailable(self.network, f"{what}: no result in the answer")
        return result

    def _data(self, result: str | _Reverted, what: str) -> bytes:
        if isinstance(result, _Reverted):
            raise UnexpectedAnswer(self.network, f"{what} reverted")
        data = _unhex(result)
        if not data:
            # A contract-less address or a node that is not synced: unknown, never "zero".
            raise UnexpectedAnswer(self.network, f"{what}: empty result (0x)")
        return data

    def _uint(self, result: str | _Reverted, what: str) -> int:
        try:
            return abi.decode_uint(self._data(result, what))
        except DecodingError as exc:
            raise UnexpectedAnswer(self.network, f"{what}: undecodable result: {exc}") from exc

    def _unavailable(self, what: str, exc: BaseException) -> ChainUnavailable:
        kind = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return ChainUnavailable(self.network, f"{what} to {self._safe_url()}: {kind}")

    def _safe_url(self) -> str:
        # Hosted URLs carry the API key in the path: show the host only.
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _unhex(value: str) -> bytes:
    text = value[2:] if value.startswith(("0x", "0X")) else value
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""
