"""What can go wrong when reading a chain; the domain decides what each means for a caller.

ChainError
├── NetworkNotConfigured   no node URL for the network (or the network is unknown)
├── ChainMismatch          the node serves another chain than the network's (refused at start)
└── ChainUnavailable       the node is down, timed out, answered an RPC error or an empty result
"""

from __future__ import annotations

__all__ = ["ChainError", "ChainMismatch", "ChainUnavailable", "NetworkNotConfigured"]


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
