"""Verifying wallets against requirements on a real chain: decimals, ids, the cache, single
flight, a node that goes down, channel access and re-verification."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from adapters.chains import ChainReader, ChainReaders
from entitlements.errors import Unavailable
from entitlements.store.tokengate_records import RequirementRecord
from entitlements.tokengate import Reverifier, TokenGate, TokenVerifier
from entitlements.tokengate.requirements import RequirementDraft
from tests.chain_fixtures import (
    AnvilNode,
    ChainKit,
    TestTokens,
    deploy_tokens,
    free_port,
    new_token_id,
    new_wallet,
)

pytestmark = pytest.mark.slow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def requirement(token_type: str, contract: str, **fields: object) -> RequirementRecord:
    return RequirementRecord(
        id=str(uuid.uuid4()),
        channel_id="c",
        token_type=token_type,  # type: ignore[arg-type]
        contract_address=contract,
        network="local",
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
async def reader(anvil: AnvilNode) -> AsyncIterator[ChainReader]:
    reader = ChainReader("local", anvil.chain_id, anvil.url, timeout_seconds=5)
    await reader.connect()
    try:
        yield reader
    finally:
        await reader.close()


@pytest.fixture
def verifier(reader: ChainReader) -> TokenVerifier:
    return TokenVerifier(ChainReaders([reader]), ttl_seconds=60, stale_grace_seconds=600)


@pytest.mark.parametrize(
    ("token", "held", "minimum", "verified", "balance"),
    [
        ("usdc6", 1_500_000, "1.5", True, "1.5"),  # exactly equal
        ("usdc6", 1_499_999, "1.5", False, "1.499999"),  # one base unit short
        ("usdc6", 100_000_000, "100", True, "100"),
        ("token18", 1_500_000_000_000_000_000, "1.5", True, "1.5"),
        ("token18", 1_499_999_999_999_999_999, "1.5", False, "1.499999999999999999"),
        ("token18", 1, None, True, "0.000000000000000001"),  # no minimum: any positive balance
        ("usdc6", 0, None, False, "0"),
    ],
)
async def test_erc20_minimum_is_compared_in_base_units(
    chain: ChainKit,
    tokens: TestTokens,
    verifier: TokenVerifier,
    token: str,
    held: int,
    minimum: str | None,
    verified: bool,
    balance: str,
) -> None:
    contract = getattr(tokens, token)
    holder = new_wallet().address
    if held:
        await chain.transact(contract.functions.mint(holder, held))

    result = await verifier.verify(
        requirement("ERC20", contract.address, min_balance=minimum), holder
    )

    assert (result.verified, result.balance) == (verified, balance)
    assert (result.error == "") is verified


async def test_erc721_collection_balance_counts_tokens(
    chain: ChainKit, tokens: TestTokens, verifier: TokenVerifier
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.nft.functions.mint(holder, new_token_id()))
    await chain.transact(tokens.nft.functions.mint(holder, new_token_id()))

    two = await verifier.verify(
        requirement("ERC721", tokens.nft.address, min_token_count=2), holder
    )
    three = await verifier.verify(
        requirement("ERC721", tokens.nft.address, min_token_count=3), holder
    )

    assert (two.verified, two.balance) == (True, "2")
    assert (three.verified, three.balance) == (False, "2")


async def test_erc721_specific_ids_use_owner_of_and_a_missing_token_is_not_owned(
    chain: ChainKit, tokens: TestTokens, verifier: TokenVerifier
) -> None:
    holder = new_wallet().address
    mine, theirs, missing = new_token_id(), new_token_id(), new_token_id()
    await chain.transact(tokens.nft.functions.mint(holder, mine))
    await chain.transact(tokens.nft.functions.mint(new_wallet().address, theirs))

    owned = await verifier.verify(
        requirement("ERC721", tokens.nft.address, token_ids=(str(mine), str(missing))), holder
    )
    others = await verifier.verify(
        requirement("ERC721", tokens.nft.address, token_ids=(str(theirs), str(missing))), holder
    )

    assert (owned.verified, owned.balance) == (True, "1")
    assert (others.verified, others.balance) == (False, "0")
    assert f"{theirs}, {missing}" in others.error


async def test_erc1155_counts_balances_of_the_listed_ids(
    chain: ChainKit, tokens: TestTokens, verifier: TokenVerifier
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.multi.functions.mint(holder, 5, 3))

    held = await verifier.verify(
        requirement("ERC1155", tokens.multi.address, token_ids=("4", "5"), min_token_count=3),
        holder,
    )
    not_held = await verifier.verify(
        requirement("ERC1155", tokens.multi.address, token_ids=("4", "6")), holder
    )

    assert (held.verified, held.balance) == (True, "3")
    assert (not_held.verified, not_held.balance) == (False, "0")


async def test_a_second_check_is_served_from_the_cache(
    chain: ChainKit, tokens: TestTokens, verifier: TokenVerifier
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.nft.functions.mint(holder, new_token_id()))
    rule = requirement("ERC721", tokens.nft.address)

    first = await verifier.verify(rule, holder)
    second = await verifier.verify(replace(rule, id="another id, same terms"), holder)

    assert (first.cached, second.cached) == (False, True)
    assert verifier.chain_reads == 1


async def test_1000_concurrent_identical_checks_make_one_chain_read(
    chain: ChainKit, tokens: TestTokens, verifier: TokenVerifier, reader: ChainReader
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.token18.functions.mint(holder, 10**18))
    rule = requirement("ERC20", tokens.token18.address, min_balance="1")
    before = reader.requests

    results = await asyncio.gather(*(verifier.verify(rule, holder) for _ in range(1000)))

    assert all(r.verified for r in results)
    assert verifier.chain_reads == 1
    assert reader.requests - before == 1


async def test_a_stopped_node_is_unavailable_except_for_a_recent_grant_within_the_grace() -> None:
    node = AnvilNode().start()
    kit = await ChainKit.connect(node)
    reader = ChainReader("local", node.chain_id, node.url, timeout_seconds=2)
    clock = FakeClock()
    verifier = TokenVerifier(
        ChainReaders([reader]), ttl_seconds=60, stale_grace_seconds=600, clock=clock
    )
    try:
        own = await deploy_tokens(kit)
        holder, stranger = new_wallet().address, new_wallet().address
        await kit.transact(own.nft.functions.mint(holder, 1))
        rule = requirement("ERC721", own.nft.address)
        assert (await verifier.verify(rule, holder)).verified
        assert not (await verifier.verify(rule, stranger)).verified

        node.stop()
        clock.now += 61  # past the cache TTL: the chain must be read again, and cannot be

        stale = await verifier.verify(rule, holder)
        assert (stale.verified, stale.cached, stale.stale) == (True, True, True)
        with pytest.raises(Unavailable):  # a cached denial is never stretched
            await verifier.verify(rule, stranger)
        with pytest.raises(Unavailable):  # a wallet never seen: no answer, never a grant
            await verifier.verify(rule, new_wallet().address)
        clock.now += 600  # past the grace window
        with pytest.raises(Unavailable):
            await verifier.verify(rule, holder)
    finally:
        node.stop()
        await kit.close()
        await reader.close()


async def test_channel_without_requirements_is_open(gate: TokenGate) -> None:
    decision = await gate.check_channel_access(
        "open-channel", "", [new_wallet().address], wallets_trusted=True
    )
    assert decision.granted
    assert decision.results == ()


async def test_channel_access_needs_every_enabled_requirement(
    chain: ChainKit, tokens: TestTokens, gate: TokenGate
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.nft.functions.mint(holder, new_token_id()))
    nft = await gate.create_requirement(
        RequirementDraft(
            channel_id="vip",
            token_type="ERC721",
            contract_address=tokens.nft.address,
            network="local",
            name="holders",
        )
    )
    usd = await gate.create_requirement(
        RequirementDraft(
            channel_id="vip",
            token_type="ERC20",
            contract_address=tokens.usdc6.address,
            network="local",
            min_balance="5",
            name="5 TUSD",
        )
    )

    denied = await gate.check_channel_access("vip", "", [holder], wallets_trusted=True)
    await gate.update_requirement(usd.id, RequirementDraft(enabled=False), ["enabled"])
    granted = await gate.check_channel_access("vip", "", [holder], wallets_trusted=True)

    assert not denied.granted
    assert [(r.requirement.id, r.verified) for r in denied.results] == [
        (nft.id, True),
        (usd.id, False),
    ]
    assert denied.results[0].wallet_address == holder
    assert granted.granted
    assert [r.requirement.id for r in granted.results] == [nft.id]


async def test_transferring_the_nft_away_is_revoked_by_reverification_and_published(
    chain: ChainKit, tokens: TestTokens, gate: TokenGate
) -> None:
    holder, buyer = new_wallet().address, new_wallet().address
    token_id = new_token_id()
    await chain.transact(tokens.nft.functions.mint(holder, token_id))
    await gate.create_requirement(
        RequirementDraft(
            channel_id="members",
            token_type="ERC721",
            contract_address=tokens.nft.address,
            network="local",
            token_ids=(str(token_id),),
        )
    )
    assert (await gate.check_channel_access("members", "", [holder], wallets_trusted=True)).granted
    events = gate.feed.subscribe()

    await chain.fund(holder)
    await chain.impersonate(holder)
    await chain.transact(tokens.nft.functions.transferFrom(holder, buyer, token_id), sender=holder)
    cached = await gate.check_channel_access("members", "", [holder], wallets_trusted=True)
    report = await Reverifier(gate, 3600).sweep()
    after = await gate.check_channel_access("members", "", [holder], wallets_trusted=True)

    assert cached.granted  # within the cache TTL the old answer stands...
    assert (report.checked, report.revoked, report.unavailable) == (1, 1, 0)  # ...the sweep ends it
    assert not after.granted
    event = events.get_nowait()
    assert (event.channel_id, event.wallet_addresses, event.granted) == (
        "members",
        (holder,),
        False,
    )
    # The revoked access is not swept again.
    assert (await Reverifier(gate, 3600).sweep()).checked == 0


async def test_reverification_revokes_nothing_while_the_chain_is_down(
    chain: ChainKit, tokens: TestTokens, gate: TokenGate
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.nft.functions.mint(holder, new_token_id()))
    await gate.create_requirement(
        RequirementDraft(
            channel_id="c6",
            token_type="ERC721",
            contract_address=tokens.nft.address,
            network="local",
        )
    )
    assert (await gate.check_channel_access("c6", "", [holder], wallets_trusted=True)).granted
    dead = ChainReaders(
        [ChainReader("local", 31337, f"http://127.0.0.1:{free_port()}", timeout_seconds=1)]
    )
    offline = TokenGate(gate.store, dead, gate.settings)

    report = await Reverifier(offline, 3600).sweep()

    assert (report.checked, report.revoked, report.unavailable) == (1, 0, 1)
    assert [g.granted for g in await gate.store.granted_accesses()] == [True]
    await dead.close()


async def test_a_node_swapped_to_another_chain_behind_its_url_is_unavailable_not_read() -> None:
    right = AnvilNode().start()
    other = AnvilNode(4242)
    other.port, other.url = right.port, right.url  # the same URL, later serving another chain
    reader = ChainReader("local", right.chain_id, right.url, timeout_seconds=2)
    verifier = TokenVerifier(ChainReaders([reader]), ttl_seconds=0)
    holder = new_wallet().address
    try:
        kit = await ChainKit.connect(right)
        nft = await kit.deploy("TestERC721")  # the deployer's first contract
        await kit.close()
        rule = requirement("ERC721", nft.address)
        assert not (await verifier.verify(rule, holder)).verified
        right.stop()
        other.start()
        kit = await ChainKit.connect(other)
        twin = await kit.deploy("TestERC721")  # same deployer and nonce: the same address
        await kit.transact(twin.functions.mint(holder, 1))
        await kit.close()
        assert twin.address == nft.address

        with pytest.raises(Unavailable, match="4242"):
            await verifier.verify(rule, holder)
        assert reader.mismatch is not None
    finally:
        await reader.close()
        right.stop()
        other.stop()
