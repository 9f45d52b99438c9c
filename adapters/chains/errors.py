"""What can go wrong when reading a chain; the domain decides what each means for a caller.

ChainError
├── NetworkNotConfigured   no node URL for the network (or the network is unknown)
├── ChainMismatch          the node serves another chain than the network's (refused at start)
├── ContractMismatch       the contract is not a token of the declared standard (an answer)
└── ChainUnavailable       the node is down, timed out, answered an RPC error or an empty result
    └── UnexpectedAnswer   a token call reverted, answered nothing or garbage: the reader asks
                           what the contract is before blaming the node
"""

from __future__ import annotations

__all__ = [
    "ChainError",
    "ChainMismatch",
    "ChainUnavailable",
    "ContractMismatch",
    "NetworkNotConfigured",
    "UnexpectedAnswer",
]


class ChainError(Exception):
    """Base of the chain adapter's errors; `network` names the network concerned."""

    def __init__(self, network: str, message: str) -> None:
        super().__init__(f"{network}: {message}")
        self.network = network
        self.message = message


class NetworkNotConfigured(ChainError):
    """No JSON-RPC URL is configured for the network, or the network is unknown."""


class ChainMismatch(ChainError):
    """The node's eth_chainId is not the network's chain id: reading it would give wrong answers."""

    def __init__(self, network: str, expected: int, actual: int) -> None:
        super().__init__(
            network,
            f"the node reports chain id {actual}, but {network} is chain {expected}: "
            "fix its ENTITLEMENTS_RPC_URL_* (or ENTITLEMENTS_LOCAL_CHAIN_ID)",
        )
        self.expected = expected
        self.actual = actual


class ChainUnavailable(ChainError):
    """The answer is unknown: the node is down, slow, erred or returned nothing (``0x``)."""


class UnexpectedAnswer(ChainUnavailable):
    """A token call reverted, returned no data or undecodable data."""


class ContractMismatch(ChainError):
    """The address holds no contract, or one that is not a token of `standard`: `found` says
    what it is. Reading it again gives the same answer: not retryable."""

    def __init__(self, network: str, address: str, standard: str, found: str) -> None:
        super().__init__(network, f"{address} is not an {standard} token: {found}")
        self.address = address
        self.standard = standard
        self.found = found
