"""Token transfer logs of a block range: ERC-20/721 `Transfer`, ERC-1155 `TransferSingle` and
`TransferBatch`, of many contracts in ONE `eth_getLogs` (addresses and topic0 alternatives in
one filter). Only who moved tokens is decoded: the wallets on either side are what token gating
re-checks; amounts and ids are read from the chain afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from adapters.chains.errors import ChainUnavailable
from adapters.chains.reader import ChainReader

__all__ = [
    "TRANSFER_BATCH_TOPIC",
    "TRANSFER_SINGLE_TOPIC",
    "TRANSFER_TOPIC",
    "TransferLog",
    "transfer_logs",
]

#: ERC-20 and ERC-721 `Transfer(from, to, value | tokenId)`: from and to are topics 1 and 2.
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
#: ERC-1155 `TransferSingle(operator, from, to, id, value)`: from and to are topics 2 and 3.
TRANSFER_SINGLE_TOPIC = (
    "0x" + keccak(text="TransferSingle(address,address,address,uint256,uint256)").hex()
)
#: ERC-1155 `TransferBatch(operator, from, to, ids, values)`: from and to are topics 2 and 3.
TRANSFER_BATCH_TOPIC = (
    "0x" + keccak(text="TransferBatch(address,address,address,uint256[],uint256[])").hex()
)

_ZERO = "0x" + "0" * 40


@dataclass(frozen=True, slots=True)
class TransferLog:
    """Tokens of `contract` moved between `wallets` (mints and burns leave out the zero
    address) in block `block_number` (`block_hash`)."""

    contract: str
    block_number: int
    block_hash: str
    wallets: tuple[str, ...]
    removed: bool = False


async def transfer_logs(
    reader: ChainReader, from_block: int, to_block: int, contracts: Sequence[str]
) -> list[TransferLog]:
    """The transfer logs of `contracts` in blocks `from_block`..`to_block`, one round trip."""
    if not contracts or from_block > to_block:
        return []
    addresses = sorted({to_checksum_address(c) for c in contracts})
    (response,) = await reader._batch(
        [
            (
                "eth_getLogs",
                [
                    {
                        "fromBlock": hex(from_block),
                        "toBlock": hex(to_block),
                        "address": addresses,
                        "topics": [[TRANSFER_TOPIC, TRANSFER_SINGLE_TOPIC, TRANSFER_BATCH_TOPIC]],
                    }
                ],
            )
        ]
    )
    if "error" in response:
        raise ChainUnavailable(reader.network, f"eth_getLogs: {response['error']}")
    raw = response.get("result")
    if not isinstance(raw, list):
        raise ChainUnavailable(reader.network, f"eth_getLogs: unexpected answer {raw!r}")
    return [_decode(entry, reader.network) for entry in raw]


def _decode(entry: object, network: str) -> TransferLog:
    if not isinstance(entry, Mapping):
        raise ChainUnavailable(network, f"eth_getLogs: malformed log {entry!r}")
    try:
        topics = [str(t).lower() for t in entry["topics"]]
        sides = topics[1:3] if topics[0] == TRANSFER_TOPIC else topics[2:4]
        if len(sides) != 2:
            # An ERC-20 and an ERC-721 Transfer index their parties; a log without them is
            # not one we can read (a non-standard token), and names no wallet.
            sides = []
        wallets = tuple(
            dict.fromkeys(
                w for w in (to_checksum_address("0x" + t[-40:]) for t in sides) if w != _ZERO
            )
        )
        return TransferLog(
            contract=to_checksum_address(str(entry["address"])),
            block_number=int(str(entry["blockNumber"]), 16),
            block_hash=str(entry["blockHash"]),
            wallets=wallets,
            removed=bool(entry.get("removed", False)),
        )
    except (KeyError, IndexError, TypeError, ValueError):
        raise ChainUnavailable(network, f"eth_getLogs: malformed log {entry!r}") from None
