"""A contract that is not the declared token (an account without code, an empty contract,
another standard) is refused when a requirement is created or changed, and at check time is a
FAILED_PRECONDITION (not retryable), distinct from a node that is down (UNAVAILABLE)."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from web3.contract import AsyncContract

from entitlements.errors import FailedPrecondition, TokenContractMismatch, Unavailable
from entitlements.store.tokengate_records import RequirementRecord
from entitlements.tokengate import Reverifier, TokenGate
from entitlements.tokengate.requirements import RequirementDraft
from tests.chain_fixtures import ChainKit, TestTokens, new_token_id, new_wallet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
async def not_tokens(chain: ChainKit) -> dict[str, AsyncContract]:
    return {"empty": await chain.deploy("TestEmpty"), "silent": await chain.deploy("TestSilent")}


def draft(token_type: str, contract: str, channel: str = "c") -> RequirementDraft:
    return RequirementDraft(
        channel_id=channel,
        token_type=token_type,
        contract_address=contract,
        network="local",
        token_ids=(str(new_token_id()),) if token_type == "ERC1155" else (),
    )


#: (declared standard, what is really at the address)
MISMATCHES = [
    ("ERC20", "eoa"),
    ("ERC20", "empty"),
    ("ERC20", "silent"),
    ("ERC20", "nft"),
    ("ERC20", "multi"),
    ("ERC721", "eoa"),
    ("ERC721", "empty"),
    ("ERC721", "usdc6"),
    ("ERC721", "multi"),
    ("ERC1155", "silent"),
    ("ERC1155", "usdc6"),
    ("ERC1155", "nft"),
]


def address_of(what: str, tokens: TestTokens, not_tokens: dict[str, AsyncContract]) -> str:
    if what == "eoa":
        return str(new_wallet().address)
    contract = not_tokens.get(what) or getattr(tokens, what)
    return str(contract.address)


@pytest.mark.parametrize(("declared", "actual"), MISMATCHES)
async def test_creating_a_requirement_on_the_wrong_contract_is_refused(
    gate: TokenGate,
    tokens: TestTokens,
    not_tokens: dict[str, AsyncContract],
    declared: str,
    actual: str,
) -> None:
    contract = address_of(actual, tokens, not_tokens)

    with pytest.raises(TokenContractMismatch) as caught:
        await gate.create_requirement(draft(declared, contract, channel=f"wrong-{actual}"))

    assert isinstance(caught.value, FailedPrecondition)
    assert caught.value.field == "requirement.contract_address"
    assert caught.value.metadata["contract_address"] == contract
    assert caught.value.metadata["token_type"] == declared
    assert contract in caught.value.message
    assert await gate.store.list_requirements(f"wrong-{actual}") == []


async def test_the_right_contracts_are_accepted(gate: TokenGate, tokens: TestTokens) -> None:
    for declared, contract in (
        ("ERC20", tokens.usdc6),
        ("ERC20", tokens.token18),
        ("ERC721", tokens.nft),
        ("ERC1155", tokens.multi),
    ):
        created = await gate.create_requirement(draft(declared, contract.address, "right"))
        assert created.contract_address == contract.address


async def test_changing_a_requirement_to_the_wrong_contract_is_refused(
    gate: TokenGate, tokens: TestTokens, not_tokens: dict[str, AsyncContract]
) -> None:
    created = await gate.create_requirement(draft("ERC721", tokens.nft.address, "changed"))

    with pytest.raises(TokenContractMismatch):
        await gate.update_requirement(
            created.id, draft("ERC721", not_tokens["empty"].address), ["contract_address"]
        )
    with pytest.raises(TokenContractMismatch):
        await gate.update_requirement(
            created.id, replace(draft("ERC20", ""), token_type="ERC20"), ["token_type"]
        )

    assert await gate.store.get_requirement(created.id) == created


@pytest.mark.parametrize(("declared", "actual"), MISMATCHES)
async def test_checking_a_wallet_against_the_wrong_contract_is_a_failed_precondition(
    gate: TokenGate,
    tokens: TestTokens,
    not_tokens: dict[str, AsyncContract],
    declared: str,
    actual: str,
) -> None:
    # A requirement stored before contracts were probed, or checked inline.
    stored = RequirementRecord(
        id=str(uuid.uuid4()),
        channel_id=f"legacy-{declared}-{actual}",
        token_type=declared,  # type: ignore[arg-type]
        contract_address=address_of(actual, tokens, not_tokens),
        network="local",
        token_ids=(str(new_token_id()),) if declared != "ERC20" else (),
    )
    await gate.store.create_requirement(stored)
    holder = new_wallet().address

    with pytest.raises(TokenContractMismatch) as inline:
        await gate.verify_token(
            draft(declared, stored.contract_address)
            if declared != "ERC1155"
            else replace(draft(declared, stored.contract_address), token_ids=stored.token_ids),
            holder,
        )
    with pytest.raises(TokenContractMismatch) as by_id:
        await gate.verify_token(stored.id, holder)
    with pytest.raises(TokenContractMismatch) as access:
        await gate.check_channel_access(stored.channel_id, "", [holder], wallets_trusted=True)

    assert not isinstance(inline.value, Unavailable)
    assert by_id.value.metadata["requirement_id"] == stored.id
    assert access.value.metadata["contract_address"] == stored.contract_address


async def test_a_contract_that_stops_being_the_token_loses_its_grants_on_the_next_sweep(
    chain: ChainKit, gate: TokenGate
) -> None:
    nft = await chain.deploy("TestERC721")  # this test's own: its code is removed below
    holder = new_wallet().address
    await chain.transact(nft.functions.mint(holder, 1))
    await gate.create_requirement(draft("ERC721", nft.address, "fading"))
    assert (await gate.check_channel_access("fading", "", [holder], wallets_trusted=True)).granted

    await chain.w3.provider.make_request("anvil_setCode", [nft.address, "0x"])  # type: ignore[arg-type]
    await Reverifier(gate, 0).sweep()

    assert await gate.store.granted_accesses() == []
    gate.verifier.forget()  # a cached answer stands for its TTL, as for a token transfer
    with pytest.raises(TokenContractMismatch, match="no contract"):
        await gate.check_channel_access("fading", "", [holder], wallets_trusted=True)
