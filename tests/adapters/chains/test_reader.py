"""ChainReader against a real anvil node and real OpenZeppelin contracts."""

from __future__ import annotations

import time

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_defunct

from adapters.chains import (
    ChainMismatch,
    ChainReader,
    ChainReaders,
    ChainUnavailable,
    ContractMismatch,
)
from adapters.chains.config import ChainSettings
from tests.chain_fixtures import AnvilNode, ChainKit, TestTokens, free_port, new_wallet

pytestmark = pytest.mark.slow


async def test_erc20_balance_comes_with_the_tokens_decimals_read_once(
    chain: ChainKit, tokens: TestTokens, local_reader: ChainReader
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.usdc6.functions.mint(holder, 1_500_000))

    first = await local_reader.erc20_balance(tokens.usdc6.address, holder)
    requests = local_reader.requests
    second = await local_reader.erc20_balance(tokens.usdc6.address, holder)

    assert (first.raw, first.decimals) == (1_500_000, 6)
    assert second == first
    assert local_reader.requests == requests + 1  # one round trip, decimals from the cache


async def test_erc721_owner_of_a_missing_token_is_not_the_owner(
    chain: ChainKit, tokens: TestTokens, local_reader: ChainReader
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.nft.functions.mint(holder, 7001))
    before = local_reader.requests

    owned = await local_reader.erc721_owned(tokens.nft.address, holder, [7001, 7002, 99999999])

    assert owned == [True, False, False]
    assert local_reader.requests == before + 1  # the three ownerOf calls went out as one batch
    assert await local_reader.erc721_balance(tokens.nft.address, holder) == 1


async def test_erc1155_balances_of_several_ids_in_one_call(
    chain: ChainKit, tokens: TestTokens, local_reader: ChainReader
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.multi.functions.mint(holder, 1, 5))
    await chain.transact(tokens.multi.functions.mint(holder, 3, 2))

    assert await local_reader.erc1155_balances(tokens.multi.address, holder, [1, 2, 3]) == [5, 0, 2]


async def test_reading_an_address_without_code_is_a_contract_mismatch_not_zero(
    local_reader: ChainReader,
) -> None:
    with pytest.raises(ContractMismatch, match="no contract at this address"):
        await local_reader.erc20_balance(new_wallet().address, new_wallet().address)


async def test_eip1271_wallet_accepts_its_owners_signature_and_rejects_others(
    chain: ChainKit, local_reader: ChainReader
) -> None:
    owner = new_wallet()
    wallet = await chain.deploy("TestContractWallet", owner.address)
    digest = _hash_eip191_message(encode_defunct(text="hello"))
    good = Account.sign_message(encode_defunct(text="hello"), owner.key).signature
    bad = Account.sign_message(encode_defunct(text="hello"), new_wallet().key).signature

    assert await local_reader.is_valid_signature(wallet.address, digest, bytes(good)) is True
    assert await local_reader.is_valid_signature(wallet.address, digest, bytes(bad)) is False
    # A malformed signature makes the wallet revert: rejected, not unknown.
    assert await local_reader.is_valid_signature(wallet.address, digest, b"\x01\x02") is False
    # An EOA has no code: never a contract wallet's yes.
    assert await local_reader.is_valid_signature(owner.address, digest, bytes(good)) is False


async def test_a_node_of_another_chain_is_refused_at_connect(anvil: AnvilNode) -> None:
    reader = ChainReader("ethereum", 1, anvil.url, timeout_seconds=5)
    try:
        with pytest.raises(ChainMismatch, match="chain id 31337, but ethereum is chain 1"):
            await reader.connect()
    finally:
        await reader.close()


async def test_readers_refuse_a_mismatched_node_but_tolerate_an_unreachable_one(
    anvil: AnvilNode,
) -> None:
    down = ChainReaders.from_settings(
        ChainSettings(rpc_urls={"local": f"http://127.0.0.1:{free_port()}"})
    )
    await down.connect()  # logged, checked again on first use
    await down.close()
    wrong = ChainReaders.from_settings(
        ChainSettings(rpc_urls={"local": anvil.url}, local_chain_id=5)
    )
    with pytest.raises(ChainMismatch):
        await wrong.connect()
    await wrong.close()


async def test_a_node_that_is_down_is_unavailable() -> None:
    reader = ChainReader("local", 31337, f"http://127.0.0.1:{free_port()}", timeout_seconds=2)
    try:
        with pytest.raises(ChainUnavailable):
            await reader.erc721_balance(new_wallet().address, new_wallet().address)
    finally:
        await reader.close()


async def test_a_lagging_node_is_unavailable_rather_than_answering_zero() -> None:
    day_old = str(int(time.time()) - 86_400)
    node = AnvilNode(31337, "--timestamp", day_old).start()  # its head never moves
    lagging = ChainReader("local", 31337, node.url, timeout_seconds=5, max_head_age_seconds=300)
    following = ChainReader("local", 31337, node.url, timeout_seconds=5)
    try:
        with pytest.raises(ChainUnavailable, match="lagging"):
            await lagging.erc721_balance(new_wallet().address, new_wallet().address)
        # without the check the same node answers (here: there is no contract at the address)
        with pytest.raises(ContractMismatch, match="no contract"):
            await following.erc721_balance(new_wallet().address, new_wallet().address)
    finally:
        await lagging.close()
        await following.close()
        node.stop()


def test_only_hosted_networks_check_head_freshness() -> None:
    readers = ChainReaders.from_settings(
        ChainSettings(rpc_urls={"local": "http://127.0.0.1:1", "ethereum": "http://127.0.0.1:2"})
    )
    assert readers.get("local")._max_head_age == 0
    assert readers.get("ethereum")._max_head_age == 300
