"""The few contract calls token gating makes, encoded and decoded by hand (no ABI JSON needed)."""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi.abi import decode, encode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.crypto import keccak

__all__ = [
    "EIP1271_MAGIC",
    "balance_of",
    "balance_of_batch",
    "decimals",
    "decode_uint",
    "decode_uint_array",
    "is_valid_signature",
    "owner_of",
    "selector",
]


def selector(signature: str) -> bytes:
    return function_signature_to_4byte_selector(signature)


#: bytes4(keccak256("isValidSignature(bytes32,bytes)")): an EIP-1271 wallet's "valid" answer.
EIP1271_MAGIC = keccak(text="isValidSignature(bytes32,bytes)")[:4]

_BALANCE_OF = selector("balanceOf(address)")
_DECIMALS = selector("decimals()")
_OWNER_OF = selector("ownerOf(uint256)")
_BALANCE_OF_BATCH = selector("balanceOfBatch(address[],uint256[])")
_IS_VALID_SIGNATURE = selector("isValidSignature(bytes32,bytes)")


def balance_of(owner: str) -> bytes:
    """ERC-20 and ERC-721 `balanceOf(owner)`."""
    return _BALANCE_OF + encode(["address"], [owner])


def decimals() -> bytes:
    return _DECIMALS


def owner_of(token_id: int) -> bytes:
    """ERC-721 `ownerOf(tokenId)`: reverts for a token that does not exist."""
    return _OWNER_OF + encode(["uint256"], [token_id])


def balance_of_batch(owner: str, token_ids: Sequence[int]) -> bytes:
    """ERC-1155 `balanceOfBatch(owners, ids)` with the same owner for every id."""
    return _BALANCE_OF_BATCH + encode(
        ["address[]", "uint256[]"], [[owner] * len(token_ids), list(token_ids)]
    )


def is_valid_signature(message_hash: bytes, signature: bytes) -> bytes:
    """EIP-1271 `isValidSignature(hash, signature)`."""
    return _IS_VALID_SIGNATURE + encode(["bytes32", "bytes"], [message_hash, signature])


def decode_uint(data: bytes) -> int:
    (value,) = decode(["uint256"], data)
    return int(value)


def decode_address(data: bytes) -> str:
    (value,) = decode(["address"], data)
    return str(value)


def decode_uint_array(data: bytes) -> list[int]:
    (values,) = decode(["uint256[]"], data)
    return [int(v) for v in values]
