"""Plain frozen values of the token-gating tables; ORM objects never leave the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

from entitlements.store.records import utcnow

__all__ = [
    "TOKEN_TYPES",
    "AccessGrantRecord",
    "ChallengeRecord",
    "RequirementRecord",
    "TokenType",
    "WalletLinkRecord",
    "WalletType",
]

TokenType = Literal["ERC20", "ERC721", "ERC1155"]
WalletType = Literal["eoa", "contract"]
TOKEN_TYPES: tuple[TokenType, ...] = get_args(TokenType)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequirementRecord:
    """One row of `token_requirements`: the seed's fields, validated by the domain."""

    id: str
    channel_id: str
    token_type: TokenType
    #: EIP-55 checksummed.
    contract_address: str
    network: str
    role_id: str | None = None
    feature_id: str | None = None
    #: ERC-20: a decimal string in tokens ("1.5"); None means "any positive balance".
    min_balance: str | None = None
    #: ERC-721 / ERC-1155: token ids as decimal strings.
    token_ids: tuple[str, ...] = ()
    min_token_count: int | None = None
    name: str = ""
    description: str = ""
    enabled: bool = True
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class WalletLinkRecord:
    user_id: str
    address: str
    chain_id: int
    wallet_type: WalletType
    verified_at: datetime


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    nonce: str
    user_id: str
    address: str
    chain_id: int
    message: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AccessGrantRecord:
    """The last channel-access decision for (channel, user, given wallets)."""

    id: int
    channel_id: str
    user_id: str
    wallet_addresses: tuple[str, ...]
    granted: bool
    checked_at: datetime
    changed_at: datetime
