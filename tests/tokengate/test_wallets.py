"""Wallet ownership with Sign-In with Ethereum: EOAs, EIP-1271 contract wallets, and every way
a signed message can be wrong."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from adapters.chains import ChainReader, ChainReaders
from entitlements.errors import (
    FailedPrecondition,
    InvalidAddress,
    InvalidArgument,
    Unavailable,
    UnknownNetwork,
)
from entitlements.tokengate import TokenGate, WalletOwnership
from entitlements.tokengate.siwe import SiweMessage
from tests.chain_fixtures import (
    AnvilNode,
    ChainKit,
    TestTokens,
    free_port,
    new_token_id,
    new_wallet,
)

pytestmark = pytest.mark.slow


def sign(account: LocalAccount, message: str) -> str:
    signed = Account.sign_message(encode_defunct(text=message), account.key)
    return "0x" + bytes(signed.signature).hex()


async def test_an_eoa_signature_links_the_wallet_to_the_user(gate: TokenGate) -> None:
    owner = new_wallet()
    challenge = await gate.create_wallet_challenge("alice", owner.address.lower(), 1)

    link = await gate.verify_wallet_ownership(challenge.message, sign(owner, challenge.message))

    assert (link.user_id, link.address, link.chain_id, link.wallet_type) == (
        "alice",
        owner.address,
        1,
        "eoa",
    )
    assert [w.address for w in await gate.store.wallets_of("alice")] == [owner.address]
    parsed = SiweMessage.parse(challenge.message)
    assert (parsed.domain, parsed.uri, parsed.chain_id) == ("localhost", "https://localhost", 1)
    assert parsed.expiration_time is not None


async def test_a_replayed_message_fails(gate: TokenGate) -> None:
    owner = new_wallet()
    challenge = await gate.create_wallet_challenge("bob", owner.address, 1)
    signature = sign(owner, challenge.message)
    await gate.verify_wallet_ownership(challenge.message, signature)

    with pytest.raises(FailedPrecondition, match="already used"):
        await gate.verify_wallet_ownership(challenge.message, signature)


async def test_two_concurrent_verifications_of_one_message_link_once(gate: TokenGate) -> None:
    owner = new_wallet()
    challenge = await gate.create_wallet_challenge("carol", owner.address, 1)
    signature = sign(owner, challenge.message)

    outcomes = await asyncio.gather(
        *(gate.verify_wallet_ownership(challenge.message, signature) for _ in range(2)),
        return_exceptions=True,
    )

    assert sorted(type(o).__name__ for o in outcomes) == ["FailedPrecondition", "WalletLinkRecord"]


async def test_an_expired_challenge_fails(gate: TokenGate) -> None:
    owner = new_wallet()
    now = datetime.now(UTC)
    later = WalletOwnership(
        gate.store, gate.readers, gate.settings, clock=lambda: now + timedelta(minutes=11)
    )
    challenge = await gate.create_wallet_challenge("dave", owner.address, 1)

    with pytest.raises(FailedPrecondition, match="expired"):
        await later.verify(challenge.message, sign(owner, challenge.message))


async def test_a_message_for_a_foreign_domain_fails(gate: TokenGate) -> None:
    owner = new_wallet()
    challenge = await gate.create_wallet_challenge("erin", owner.address, 1)
    phishing = challenge.message.replace("localhost wants", "evil.example wants", 1)

    with pytest.raises(InvalidArgument, match="domain") as caught:
        await gate.verify_wallet_ownership(phishing, sign(owner, phishing))
    assert caught.value.field == "message"


async def test_a_message_signed_for_another_chain_id_fails(gate: TokenGate) -> None:
    owner = new_wallet()
    challenge = await gate.create_wallet_challenge("frank", owner.address, 1)
    other_chain = challenge.message.replace("Chain ID: 1\n", "Chain ID: 137\n")

    with pytest.raises(InvalidArgument, match="chain id 137"):
        await gate.verify_wallet_ownership(other_chain, sign(owner, other_chain))


async def test_a_tampered_message_fails(gate: TokenGate) -> None:
    owner = new_wallet()
    challenge = await gate.create_wallet_challenge("grace", owner.address, 1)
    signature = sign(owner, challenge.message)
    tampered = challenge.message.replace("Link this wallet", "Drain this wallet")

    with pytest.raises(InvalidArgument, match="not the challenge issued"):
        await gate.verify_wallet_ownership(tampered, signature)
    # ...and a signature of the right text by another key is no proof either.
    with pytest.raises(InvalidArgument) as caught:
        await gate.verify_wallet_ownership(challenge.message, sign(new_wallet(), challenge.message))
    assert caught.value.field == "signature"
    assert await gate.store.wallets_of("grace") == []


async def test_a_message_for_another_uri_or_unknown_nonce_fails(gate: TokenGate) -> None:
    owner = new_wallet()
    challenge = await gate.create_wallet_challenge("heidi", owner.address, 1)
    other_uri = challenge.message.replace("URI: https://localhost", "URI: https://evil.example")
    unknown_nonce = challenge.message.replace(challenge.nonce, "0123456789abcdef")

    with pytest.raises(InvalidArgument, match="URI"):
        await gate.verify_wallet_ownership(other_uri, sign(owner, other_uri))
    with pytest.raises(InvalidArgument, match="unknown nonce"):
        await gate.verify_wallet_ownership(unknown_nonce, sign(owner, unknown_nonce))


async def test_eip1271_contract_wallet_is_accepted_when_its_owner_signed(
    chain: ChainKit, gate: TokenGate
) -> None:
    owner = new_wallet()
    wallet = await chain.deploy("TestContractWallet", owner.address)
    challenge = await gate.create_wallet_challenge("ivan", wallet.address, 31337)

    link = await gate.verify_wallet_ownership(challenge.message, sign(owner, challenge.message))

    assert (link.address, link.wallet_type, link.chain_id) == (wallet.address, "contract", 31337)


async def test_eip1271_contract_wallet_rejects_another_signer_and_a_reverting_check(
    chain: ChainKit, gate: TokenGate
) -> None:
    owner = new_wallet()
    wallet = await chain.deploy("TestContractWallet", owner.address)
    challenge = await gate.create_wallet_challenge("judy", wallet.address, 31337)

    with pytest.raises(InvalidArgument, match="no contract wallet there accepts it"):
        await gate.verify_wallet_ownership(challenge.message, sign(new_wallet(), challenge.message))
    with pytest.raises(InvalidArgument):  # ECDSA.recover reverts on a 2-byte signature
        await gate.verify_wallet_ownership(challenge.message, "0x0102")
    assert await gate.store.wallets_of("judy") == []


async def test_eip1271_check_with_the_node_down_is_unavailable_not_a_rejection(
    chain: ChainKit, gate: TokenGate
) -> None:
    owner = new_wallet()
    wallet = await chain.deploy("TestContractWallet", owner.address)
    challenge = await gate.create_wallet_challenge("ken", wallet.address, 31337)
    dead = ChainReaders(
        [ChainReader("local", 31337, f"http://127.0.0.1:{free_port()}", timeout_seconds=1)]
    )
    offline = WalletOwnership(gate.store, dead, gate.settings)

    with pytest.raises(Unavailable):
        await offline.verify(challenge.message, sign(owner, challenge.message))
    await dead.close()
    # The nonce was not spent: the same message links once the node answers.
    link = await gate.verify_wallet_ownership(challenge.message, sign(owner, challenge.message))
    assert link.wallet_type == "contract"


async def test_linked_wallets_count_for_channel_access(
    chain: ChainKit, tokens: TestTokens, gate: TokenGate
) -> None:
    from entitlements.tokengate import RequirementDraft

    owner = new_wallet()
    await chain.transact(tokens.nft.functions.mint(owner.address, new_token_id()))
    await gate.create_requirement(
        RequirementDraft(
            channel_id="linked",
            token_type="ERC721",
            contract_address=tokens.nft.address,
            network="local",
        )
    )
    assert not (await gate.check_channel_access("linked", "mallory")).granted

    challenge = await gate.create_wallet_challenge("mallory", owner.address, 1)
    await gate.verify_wallet_ownership(challenge.message, sign(owner, challenge.message))

    decision = await gate.check_channel_access("linked", "mallory")
    assert decision.granted
    assert decision.results[0].wallet_address == owner.address


@pytest.mark.parametrize(
    ("user_id", "address", "chain_id", "field", "error"),
    [
        ("", "0x" + "1" * 40, 1, "user_id", InvalidArgument),
        ("u", "0x12", 1, "address", InvalidAddress),
        ("u", "0x" + "1" * 40, 0, "chain_id", InvalidArgument),
        ("u", "0x" + "1" * 40, 80001, "chain_id", UnknownNetwork),  # Mumbai is retired
    ],
)
async def test_bad_challenge_requests_name_the_field(
    gate: TokenGate,
    user_id: str,
    address: str,
    chain_id: int,
    field: str,
    error: type[InvalidArgument],
) -> None:
    with pytest.raises(error) as caught:
        await gate.create_wallet_challenge(user_id, address, chain_id)
    assert caught.value.field == field


async def test_a_wallet_counts_for_one_user_the_last_who_proved_it(
    chain: ChainKit, tokens: TestTokens, gate: TokenGate
) -> None:
    from entitlements.tokengate import RequirementDraft

    owner = new_wallet()
    await chain.transact(tokens.nft.functions.mint(owner.address, new_token_id()))
    await gate.create_requirement(
        RequirementDraft(
            channel_id="shared",
            token_type="ERC721",
            contract_address=tokens.nft.address,
            network="local",
        )
    )
    for user in ("alice", "bob"):
        challenge = await gate.create_wallet_challenge(user, owner.address, 1)
        await gate.verify_wallet_ownership(challenge.message, sign(owner, challenge.message))
        assert (await gate.check_channel_access("shared", user)).granted

    # One token must not open the channel for every account its holder signs for.
    assert not (await gate.check_channel_access("shared", "alice")).granted
    assert [link.address for link in await gate.store.wallets_of("alice")] == []
    assert [link.address for link in await gate.store.wallets_of("bob")] == [owner.address]


async def test_eip1271_check_against_a_node_of_another_chain_is_unavailable(
    chain: ChainKit, gate: TokenGate
) -> None:
    owner = new_wallet()
    wallet = await chain.deploy("TestContractWallet", owner.address)
    challenge = await gate.create_wallet_challenge("lena", wallet.address, 31337)
    other = AnvilNode(4242).start()  # unreachable at start, then up on another chain
    wrong = ChainReaders([ChainReader("local", 31337, other.url, timeout_seconds=2)])
    try:
        with pytest.raises(Unavailable, match="4242"):
            await WalletOwnership(gate.store, wrong, gate.settings).verify(
                challenge.message, sign(owner, challenge.message)
            )
    finally:
        await wrong.close()
        other.stop()
    assert await gate.store.wallets_of("lena") == []
