"""Requirement validation names the exact field; amounts are compared in base units."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.chains import ChainSettings
from entitlements.errors import InvalidAddress, InvalidArgument, UnknownNetwork
from entitlements.tokengate.requirements import (
    SETTABLE_FIELDS,
    RequirementDraft,
    base_units,
    check_update_paths,
    format_units,
    normalize_address,
    validate_requirement,
)

CHAINS = ChainSettings(rpc_urls={"local": "http://127.0.0.1:8545", "ethereum": "http://x"})
TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


def erc20(**changes: object) -> RequirementDraft:
    base = {
        "channel_id": "general",
        "token_type": "ERC20",
        "contract_address": TOKEN,
        "network": "ethereum",
        "min_balance": "1.5",
    }
    return RequirementDraft(**{**base, **changes})  # type: ignore[arg-type]


def test_lower_case_address_is_accepted_and_checksummed() -> None:
    assert normalize_address(TOKEN.lower(), "wallet_address") == TOKEN


def test_mixed_case_address_with_a_bad_checksum_is_refused() -> None:
    typo = TOKEN[:-1] + "b"
    with pytest.raises(InvalidAddress, match="checksum") as caught:
        normalize_address(typo, "wallet_address")
    assert caught.value.field == "wallet_address"


@pytest.mark.parametrize(
    "value", ["", "0x123", "A0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48aa", "0xZZ" + "0" * 38]
)
def test_malformed_addresses_are_refused(value: str) -> None:
    with pytest.raises(InvalidAddress):
        normalize_address(value, "address")


@pytest.mark.parametrize(
    ("draft", "field", "error"),
    [
        (erc20(contract_address="0x12"), "requirement.contract_address", InvalidAddress),
        (erc20(network="dogechain"), "requirement.network", UnknownNetwork),
        (erc20(network="polygon"), "requirement.network", UnknownNetwork),  # not configured
        (erc20(min_balance="-1"), "requirement.min_balance", InvalidArgument),
        (erc20(min_balance="1e3"), "requirement.min_balance", InvalidArgument),
        (erc20(min_balance="1.5.1"), "requirement.min_balance", InvalidArgument),
        # a minimum of nothing would grant a wallet holding nothing
        (erc20(min_balance="0"), "requirement.min_balance", InvalidArgument),
        (erc20(min_balance="0.000"), "requirement.min_balance", InvalidArgument),
        (erc20(min_balance="00"), "requirement.min_balance", InvalidArgument),
        (erc20(token_type=""), "requirement.token_type", InvalidArgument),
        (erc20(token_ids=("1",)), "requirement.token_ids", InvalidArgument),
        (erc20(min_token_count=2), "requirement.min_token_count", InvalidArgument),
        (erc20(channel_id=""), "requirement.channel_id", InvalidArgument),
        (erc20(token_type="ERC1155", min_balance=""), "requirement.token_ids", InvalidArgument),
        (
            erc20(token_type="ERC721", min_balance="", token_ids=("1", "x")),
            "requirement.token_ids[1]",
            InvalidArgument,
        ),
        (
            erc20(token_type="ERC721", min_balance="", token_ids=("-1",)),
            "requirement.token_ids[0]",
            InvalidArgument,
        ),
        (
            erc20(token_type="ERC721", min_balance="", token_ids=("1", "01")),
            "requirement.token_ids[1]",
            InvalidArgument,
        ),
        (
            erc20(token_type="ERC721", min_balance="", min_token_count=-1),
            "requirement.min_token_count",
            InvalidArgument,
        ),
    ],
)
def test_each_bad_field_is_named(
    draft: RequirementDraft, field: str, error: type[InvalidArgument]
) -> None:
    with pytest.raises(error) as caught:
        validate_requirement(draft, CHAINS)
    assert caught.value.field == field


def test_a_valid_requirement_is_normalised() -> None:
    record = validate_requirement(
        erc20(contract_address=TOKEN.lower(), min_balance="01.50"), CHAINS
    )
    assert record.contract_address == TOKEN
    assert record.min_balance == "1.5"


def test_update_mask_may_name_only_settable_fields() -> None:
    assert check_update_paths([]) == ()  # nothing named, nothing changes
    assert check_update_paths(["*"]) == SETTABLE_FIELDS
    assert check_update_paths(["name", "name"]) == ("name",)
    for paths, field in (
        (["name", "created_at"], "update_mask.paths[1]"),
        (["name", "*"], "update_mask.paths[1]"),
        (["requirement.name"], "update_mask.paths[0]"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            check_update_paths(paths)
        assert caught.value.field == field


@pytest.mark.parametrize(
    ("minimum", "decimals", "units"),
    [
        ("1.5", 6, 1_500_000),
        ("1.5", 18, 1_500_000_000_000_000_000),
        ("100", 6, 100_000_000),
        ("0.0000001", 6, 1),
        ("0", 18, 1),  # a stored "0" (refused since) never grants an empty wallet
        (None, 6, 1),
    ],
)
def test_minimum_balance_in_base_units(minimum: str | None, decimals: int, units: int) -> None:
    assert base_units(minimum, decimals) == units


@given(st.integers(min_value=0, max_value=2**256 - 1), st.integers(min_value=0, max_value=36))
def test_formatted_units_read_back_exactly(raw: int, decimals: int) -> None:
    text = format_units(raw, decimals)
    assert "e" not in text.lower()
    # exact beyond Decimal's default 28 digits; a minimum of 0 still needs one base unit
    assert base_units(text, decimals) == max(raw, 1)


@given(st.text(max_size=50))
def test_validation_never_raises_anything_but_invalid_argument(value: str) -> None:
    for draft in (erc20(min_balance=value), erc20(contract_address=value), erc20(network=value)):
        with contextlib.suppress(InvalidArgument):
            validate_requirement(draft, CHAINS)
