"""Token requirements: validating what a caller sent (naming the exact field) into a record."""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, Decimal, localcontext

from eth_utils.address import to_checksum_address

from adapters.chains import ChainSettings
from entitlements.errors import InvalidAddress, InvalidArgument, UnknownNetwork
from entitlements.store.tokengate_records import TOKEN_TYPES, RequirementRecord, TokenType

__all__ = [
    "FULL_REPLACEMENT",
    "MAX_TOKEN_IDS",
    "SETTABLE_FIELDS",
    "RequirementDraft",
    "base_units",
    "check_update_paths",
    "format_units",
    "merge",
    "normalize_address",
    "require_id",
    "validate_requirement",
]

MAX_TOKEN_IDS = 100
MAX_ID_LENGTH = 256
MAX_NAME = 200
MAX_DESCRIPTION = 2000
_UINT256_MAX = 2**256 - 1
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_DECIMAL = re.compile(r"(\d{1,78})(?:\.(\d{1,78}))?")
_UINT = re.compile(r"\d{1,78}")
_ZERO_ADDRESS = "0x" + "0" * 40

#: The fields an update mask may name (`id`, `created_at`, `updated_at` are the service's).
SETTABLE_FIELDS = (
    "channel_id",
    "role_id",
    "feature_id",
    "token_type",
    "contract_address",
    "network",
    "min_balance",
    "token_ids",
    "min_token_count",
    "name",
    "description",
    "enabled",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequirementDraft:
    """A requirement as a caller gave it, unchecked (strings as sent, "" for not set)."""

    channel_id: str = ""
    role_id: str = ""
    feature_id: str = ""
    #: "ERC20", "ERC721", "ERC1155", or "" when not set.
    token_type: str = ""
    contract_address: str = ""
    network: str = ""
    min_balance: str = ""
    token_ids: tuple[str, ...] = ()
    min_token_count: int = 0
    name: str = ""
    description: str = ""
    enabled: bool = True

    @classmethod
    def of(cls, record: RequirementRecord) -> RequirementDraft:
        return cls(
            channel_id=record.channel_id,
            role_id=record.role_id or "",
            feature_id=record.feature_id or "",
            token_type=record.token_type,
            contract_address=record.contract_address,
            network=record.network,
            min_balance=record.min_balance or "",
            token_ids=record.token_ids,
            min_token_count=record.min_token_count or 0,
            name=record.name,
            description=record.description,
            enabled=record.enabled,
        )


def merge(
    base: RequirementDraft, change: RequirementDraft, paths: Iterable[str]
) -> RequirementDraft:
    """`base` with the fields named in `paths` taken from `change`."""
    return replace(base, **{path: getattr(change, path) for path in paths})


def require_id(value: str, field: str) -> str:
    """An opaque identifier (channel, user, role): the same rule as the server's request ids
    (non-empty, at most 256 characters, printable, no surrounding white space), kept here so
    the domain does not import the server layer."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_ID_LENGTH} characters")
    if not value.isprintable() or value.strip() != value:
        raise InvalidArgument(
            field, "must not contain control characters or leading/trailing white space"
        )
    return value


def normalize_address(value: str, field: str) -> str:
    """The EIP-55 form of a 0x-prefixed 20-byte address. All-lower or all-upper hex is accepted
    as is; mixed case must carry a valid checksum (a typo is refused, never "corrected")."""
    if not value:
        raise InvalidAddress(field, "is required")
    if not _ADDRESS.fullmatch(value):
        raise InvalidAddress(field, f"{value!r} is not a 0x-prefixed 20-byte hex address")
    checksummed = _checksummed(value)
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and value != checksummed:
        raise InvalidAddress(field, f"{value!r} has a bad EIP-55 checksum")
    return checksummed


@functools.lru_cache(maxsize=65_536)
def _checksummed(value: str) -> str:
    # keccak per address per call is most of a cached check's handler time: remember them.
    return str(to_checksum_address(value))


def validate_requirement(
    draft: RequirementDraft,
    chains: ChainSettings,
    *,
    prefix: str = "requirement",
    require_channel: bool = True,
) -> RequirementRecord:
    """Check every field of `draft`; the first bad one raises InvalidArgument naming
    ``<prefix>.<field>``. Returns a record with a placeholder id (the caller sets it)."""

    def name(field: str) -> str:
        return f"{prefix}.{field}" if prefix else field

    channel_id = draft.channel_id
    if require_channel or channel_id:
        require_id(channel_id, name("channel_id"))
    for optional in ("role_id", "feature_id"):
        value = getattr(draft, optional)
        if value:
            require_id(value, name(optional))
    if not draft.token_type:
        raise InvalidArgument(name("token_type"), "is required (ERC20, ERC721 or ERC1155)")
    if draft.token_type not in TOKEN_TYPES:
        raise InvalidArgument(name("token_type"), f"unknown token type {draft.token_type!r}")
    token_type: TokenType = draft.token_type
    contract = normalize_address(draft.contract_address, name("contract_address"))
    if contract == _ZERO_ADDRESS:
        raise InvalidAddress(name("contract_address"), "the zero address is not a token contract")
    _check_network(draft.network, chains, name("network"))

    min_balance: str | None = None
    if draft.min_balance:
        if token_type != "ERC20":
            raise InvalidArgument(name("min_balance"), "applies to ERC20 requirements only")
        min_balance = _decimal_string(draft.min_balance, name("min_balance"))
        if min_balance == "0":
            raise InvalidArgument(
                name("min_balance"),
                "must be more than 0 (a minimum of 0 grants a wallet holding nothing); leave "
                "it empty for 'any positive balance'",
            )
    token_ids = _token_ids(draft.token_ids, name("token_ids"))
    if token_type == "ERC20" and token_ids:
        raise InvalidArgument(name("token_ids"), "do not apply to ERC20 requirements")
    if token_type == "ERC1155" and not token_ids:
        raise InvalidArgument(name("token_ids"), "ERC1155 requirements need at least one token id")
    if draft.min_token_count < 0:
        raise InvalidArgument(name("min_token_count"), "must not be negative")
    if token_type == "ERC20" and draft.min_token_count:
        raise InvalidArgument(
            name("min_token_count"), "applies to ERC721 and ERC1155 only (use min_balance)"
        )
    if token_type == "ERC721" and token_ids and draft.min_token_count > len(token_ids):
        raise InvalidArgument(
            name("min_token_count"),
            f"cannot exceed the {len(token_ids)} listed token ids of an ERC721 requirement",
        )
    if len(draft.name) > MAX_NAME:
        raise InvalidArgument(name("name"), f"at most {MAX_NAME} characters")
    if len(draft.description) > MAX_DESCRIPTION:
        raise InvalidArgument(name("description"), f"at most {MAX_DESCRIPTION} characters")
    return RequirementRecord(
        id="",
        channel_id=channel_id,
        role_id=draft.role_id or None,
        feature_id=draft.feature_id or None,
        token_type=token_type,
        contract_address=contract,
        network=draft.network,
        min_balance=min_balance,
        token_ids=token_ids,
        min_token_count=draft.min_token_count or None,
        name=draft.name,
        description=draft.description,
        enabled=draft.enabled,
    )


#: The update-mask path that replaces every settable field (AIP-134's full replacement).
FULL_REPLACEMENT = "*"


def check_update_paths(paths: Sequence[str], field: str = "update_mask") -> tuple[str, ...]:
    """The fields an update changes: the mask's paths, or every settable field for ``*``
    (alone). An empty result changes nothing; the servicer turns "no mask" into the fields the
    request populated (AIP-134), so a field left out is never reset."""
    if list(paths) == [FULL_REPLACEMENT]:
        return SETTABLE_FIELDS
    for i, path in enumerate(paths):
        if path == FULL_REPLACEMENT:
            raise InvalidArgument(f"{field}.paths[{i}]", "'*' must be the mask's only path")
        if path not in SETTABLE_FIELDS:
            raise InvalidArgument(
                f"{field}.paths[{i}]",
                f"{path!r} cannot be updated; settable: {', '.join(SETTABLE_FIELDS)} "
                "(or '*' alone for all of them)",
            )
    return tuple(dict.fromkeys(paths))


def base_units(min_balance: str | None, decimals: int) -> int:
    """The smallest balance in base units that meets `min_balance` tokens: "1.5" with 6
    decimals is 1,500,000. A minimum finer than the token's unit rounds UP (never grants below
    the stated amount); no minimum means "any positive balance", and so does a stored "0"
    (refused since): a wallet holding nothing never passes."""
    if min_balance is None:
        return 1
    with localcontext() as context:
        context.prec = 200
        scaled = Decimal(min_balance).scaleb(decimals)
        return max(int(scaled.to_integral_value(rounding=ROUND_CEILING)), 1)


def format_units(raw: int, decimals: int) -> str:
    """`raw` base units as a plain decimal string in tokens ("1.5", "0", "100")."""
    with localcontext() as context:
        context.prec = 200
        value = Decimal(raw).scaleb(-decimals)
        text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _check_network(network: str, chains: ChainSettings, field: str) -> None:
    if not network:
        raise UnknownNetwork(field, "is required")
    if chains.network(network) is None:
        raise UnknownNetwork(field, f"unknown network {network!r}")
    if not chains.configured(network):
        raise UnknownNetwork(field, f"network {network!r} is not configured on this server")


def _decimal_string(value: str, field: str) -> str:
    match = _DECIMAL.fullmatch(value)
    if match is None:
        raise InvalidArgument(
            field, f"{value!r} is not a non-negative decimal number of tokens like '1.5'"
        )
    whole, fraction = match.group(1), match.group(2)
    whole = whole.lstrip("0") or "0"
    fraction = (fraction or "").rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def _token_ids(values: Collection[str], field: str) -> tuple[str, ...]:
    if len(values) > MAX_TOKEN_IDS:
        raise InvalidArgument(field, f"at most {MAX_TOKEN_IDS} token ids")
    seen: set[int] = set()
    out = []
    for i, value in enumerate(values):
        if not _UINT.fullmatch(value) or int(value) > _UINT256_MAX:
            raise InvalidArgument(
                f"{field}[{i}]", f"{value!r} is not a non-negative integer token id in decimal"
            )
        number = int(value)
        if number in seen:
            raise InvalidArgument(f"{field}[{i}]", f"token id {number} is listed twice")
        seen.add(number)
        out.append(str(number))
    return tuple(out)
