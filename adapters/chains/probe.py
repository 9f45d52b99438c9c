"""Telling what a contract is, in the same JSON-RPC batch as a read: its code, ERC-165
`supportsInterface` for ERC-721 and ERC-1155 (both standards require it), and ERC-20's
`decimals()` and `balanceOf`. A contract that is not the declared standard is a
`ContractMismatch` (an answer), never `ChainUnavailable` (no answer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode
from eth_abi.exceptions import DecodingError

from adapters.chains import abi
from adapters.chains.errors import ContractMismatch

__all__ = ["ContractFacts", "judge", "probe_requests"]

ERC721_INTERFACE = bytes.fromhex("80ac58cd")
ERC1155_INTERFACE = bytes.fromhex("d9b67a26")
_SUPPORTS_INTERFACE = abi.selector("supportsInterface(bytes4)")
#: Whose balance the probe asks for: any address with no special meaning to the token.
_SOMEONE = "0x000000000000000000000000000000000000dEaD"


def _supports(interface: bytes) -> bytes:
    return _SUPPORTS_INTERFACE + encode(["bytes4"], [interface])


def probe_requests(token: str) -> list[tuple[str, list[Any]]]:
    """The JSON-RPC requests `judge` reads, in its order."""

    def call(data: bytes) -> tuple[str, list[Any]]:
        return ("eth_call", [{"to": token, "data": "0x" + data.hex()}, "latest"])

    return [
        ("eth_getCode", [token, "latest"]),
        call(_supports(ERC721_INTERFACE)),
        call(_supports(ERC1155_INTERFACE)),
        call(abi.decimals()),
        call(abi.balance_of(_SOMEONE)),
    ]


@dataclass(frozen=True, slots=True)
class ContractFacts:
    """What the probe saw; None for a call that reverted or answered nothing usable."""

    has_code: bool
    erc721: bool
    erc1155: bool
    decimals: int | None
    balance_of: int | None

    def describe(self) -> str:
        if not self.has_code:
            return "there is no contract at this address (an account without code)"
        if self.erc721:
            return "it is an ERC-721 contract"
        if self.erc1155:
            return "it is an ERC-1155 contract"
        if self.decimals is not None and self.balance_of is not None:
            return "it is an ERC-20 token"
        return "the contract answers none of ERC-20, ERC-721 (ERC-165) or ERC-1155 (ERC-165)"

    def is_a(self, standard: str) -> bool:
        if not self.has_code:
            return False
        if standard == "ERC721":
            return self.erc721
        if standard == "ERC1155":
            return self.erc1155
        return (
            not self.erc721
            and not self.erc1155
            and self.decimals is not None
            and self.decimals <= 255
            and self.balance_of is not None
        )


def judge(
    network: str, token: str, standard: str, answers: Sequence[bytes | None]
) -> ContractFacts:
    """Raise ContractMismatch unless `answers` (the probe's results as bytes, None for a
    revert) show a contract of `standard`; the code first, then the calls in order."""
    code, erc721, erc1155, decimals, balance = answers
    facts = ContractFacts(
        has_code=bool(code),
        erc721=_uint(erc721) == 1,
        erc1155=_uint(erc1155) == 1,
        decimals=_uint(decimals),
        balance_of=_uint(balance),
    )
    if not facts.is_a(standard):
        raise ContractMismatch(network, token, standard, facts.describe())
    return facts


def _uint(data: bytes | None) -> int | None:
    if not data or len(data) < 32:
        return None
    try:
        return abi.decode_uint(data[:32])
    except DecodingError:
        return None
