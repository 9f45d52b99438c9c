"""Token gating driven by blocks, on a real anvil node and real databases: a transfer revokes
(or grants) in the block after it, whatever the cache held, and the change is published; a reorg
undoes it; ERC-1155 batches and many contracts in one block are handled.

The cache TTL is the default minute throughout: answers change because of blocks, not time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.chains import ChainReaders
from adapters.chains.heads import HeadFollowers
from entitlements.store.repository import Store
from entitlements.store.tokengate_repository import TokenGateStore
from entitlements.tokengate import TokenGate, TransferListener
from entitlements.tokengate.requirements import RequirementDraft
from entitlements.watch import TokenAccessChanged
from tests.chain_fixtures import (
    AnvilNode,
    ChainKit,
    TestTokens,
    deploy_tokens,
    local_settings,
    new_token_id,
    new_wallet,
)

pytestmark = pytest.mark.slow

WAIT = 20.0  # generous (a loaded machine): the change is expected within a second of its block


@dataclass
class Gated:
    """A gate whose network "local" is followed block by block."""

    gate: TokenGate
    listener: TransferListener
    heads: HeadFollowers
    kit: ChainKit
    tokens: TestTokens
    node: AnvilNode
    events: asyncio.Queue[TokenAccessChanged]

    async def require(self, channel: str, token_type: str, contract: str, **fields: Any) -> None:
        await self.gate.create_requirement(
            RequirementDraft(
                channel_id=channel,
                token_type=token_type,
                contract_address=contract,
                network="local",
                **fields,
            )
        )

    async def access(self, channel: str, wallet: str) -> bool:
        """CheckChannelAccess as a trusted caller naming `wallet` (cached answers allowed)."""
        decision = await self.gate.check_channel_access(channel, "", [wallet], wallets_trusted=True)
        return decision.granted

    async def send(self, call: Any, sender: str) -> None:
        await self.kit.fund(sender)
        await self.kit.impersonate(sender)
        await self.kit.transact(call, sender=sender)

    async def caught_up(self) -> None:
        """Wait until the listener has handled the node's latest block."""
        head = await self.kit.w3.eth.block_number
        async with asyncio.timeout(WAIT):
            while True:
                if (self.listener.processed_block("local") or -1) >= head:
                    break
                await asyncio.sleep(0.02)

    async def change(self, channel: str) -> TokenAccessChanged:
        async with asyncio.timeout(WAIT):
            while True:
                event = await self.events.get()
                if event.channel_id == channel:
                    return event


@pytest.fixture(scope="module")
async def own_chain() -> AsyncIterator[tuple[AnvilNode, ChainKit, TestTokens]]:
    """A node of this module's own: reorgs and manual mining disturb no other test."""
    node = AnvilNode().start()
    kit = await ChainKit.connect(node)
    try:
        yield node, kit, await deploy_tokens(kit)
    finally:
        await kit.close()
        node.stop()


@pytest.fixture
async def gated(
    store: Store, own_chain: tuple[AnvilNode, ChainKit, TestTokens]
) -> AsyncIterator[Gated]:
    """A TokenGate (cache TTL 60 s) whose node is followed over its websocket, as `local` is by
    default, with the transfer listener."""
    node, kit, tokens = own_chain
    settings = local_settings(node, ws_urls={"local": node.url.replace("http://", "ws://")})
    gate = TokenGate(TokenGateStore(store.engine), ChainReaders.from_settings(settings), settings)
    heads = HeadFollowers.from_settings(settings)
    listener = TransferListener(gate, heads)
    try:
        await gate.start()
        listener.start()
        heads.start()
        yield Gated(gate, listener, heads, kit, tokens, node, gate.feed.subscribe())
    finally:
        await listener.stop()
        await heads.close()
        await gate.close()


async def test_an_nft_transferred_away_is_denied_after_its_block_and_published(
    gated: Gated,
) -> None:
    holder, buyer = new_wallet().address, new_wallet().address
    token_id = new_token_id()
    nft = gated.tokens.nft
    await gated.kit.transact(nft.functions.mint(holder, token_id))
    await gated.require("members", "ERC721", nft.address, token_ids=(str(token_id),))
    assert await gated.access("members", holder)
    rule = RequirementDraft(token_type="ERC721", contract_address=nft.address, network="local")
    assert (await gated.gate.verify_token(rule, holder)).verified  # now cached for a minute

    await gated.send(nft.functions.transferFrom(holder, buyer, token_id), holder)
    event = await gated.change("members")

    assert (event.wallet_addresses, event.granted) == ((holder,), False)
    assert not await gated.access("members", holder)
    verification = await gated.gate.verify_token(rule, holder)
    assert not verification.verified
    assert (await gated.gate.verify_token(rule, buyer)).verified


async def test_a_token_transferred_back_grants_again(gated: Gated) -> None:
    holder, friend = new_wallet().address, new_wallet().address
    usd = gated.tokens.usdc6
    await gated.kit.transact(usd.functions.mint(holder, 5_000_000))
    await gated.require("usd", "ERC20", usd.address, min_balance="5")
    assert await gated.access("usd", holder)

    await gated.send(usd.functions.transfer(friend, 1), holder)
    revoked = await gated.change("usd")
    await gated.send(usd.functions.transfer(holder, 1), friend)
    granted = await gated.change("usd")

    assert (revoked.granted, granted.granted) == (False, True)
    assert await gated.access("usd", holder)


async def test_a_user_whose_linked_wallet_sends_the_token_away_is_revoked(
    gated: Gated, store: Store
) -> None:
    holder = new_wallet()
    token_id = new_token_id()
    nft = gated.tokens.nft
    await gated.kit.transact(nft.functions.mint(holder.address, token_id))
    await gated.require("lounge", "ERC721", nft.address)
    await link(gated.gate, "u_1", holder)
    assert (await gated.gate.check_channel_access("lounge", "u_1")).granted

    await gated.send(
        nft.functions.transferFrom(holder.address, new_wallet().address, token_id), holder.address
    )
    event = await gated.change("lounge")

    assert (event.user_id, event.granted) == ("u_1", False)
    assert not (await gated.gate.check_channel_access("lounge", "u_1")).granted


async def test_a_reorg_that_undoes_the_transfer_grants_again(gated: Gated) -> None:
    holder, buyer = new_wallet().address, new_wallet().address
    token_id = new_token_id()
    nft = gated.tokens.nft
    await gated.kit.transact(nft.functions.mint(holder, token_id))
    await gated.require("reorged", "ERC721", nft.address)
    await gated.kit.fund(holder)
    await gated.kit.impersonate(holder)
    assert await gated.access("reorged", holder)
    snapshot = gated.node.rpc("evm_snapshot")

    await gated.kit.transact(nft.functions.transferFrom(holder, buyer, token_id), sender=holder)
    revoked = await gated.change("reorged")
    replaced = await gated.kit.w3.eth.get_block("latest")
    assert gated.node.rpc("evm_revert", [snapshot])
    gated.node.rpc("evm_mine", [replaced["timestamp"] + 100])  # another block in its place
    restored = await gated.change("reorged")

    assert (revoked.granted, restored.granted) == (False, True)
    assert await gated.access("reorged", holder)


async def test_an_erc1155_batch_transfer_revokes(gated: Gated) -> None:
    holder, buyer = new_wallet().address, new_wallet().address
    multi = gated.tokens.multi
    await gated.kit.transact(multi.functions.mint(holder, 7, 1))
    await gated.kit.transact(multi.functions.mint(holder, 8, 1))
    await gated.require("ids", "ERC1155", multi.address, token_ids=("7", "8"), min_token_count=2)
    assert await gated.access("ids", holder)

    await gated.send(
        multi.functions.safeBatchTransferFrom(holder, buyer, [7, 8], [1, 1], b""), holder
    )
    event = await gated.change("ids")

    assert (event.wallet_addresses, event.granted) == ((holder,), False)
    assert not await gated.access("ids", holder)


async def test_transfers_of_many_contracts_in_one_block_are_read_with_one_request(
    gated: Gated,
) -> None:
    usd, nft, multi = gated.tokens.usdc6, gated.tokens.nft, gated.tokens.multi
    a, b, c, sink = (new_wallet().address for _ in range(4))
    token_id = new_token_id()
    await gated.kit.transact(usd.functions.mint(a, 1_000_000))
    await gated.kit.transact(nft.functions.mint(b, token_id))
    await gated.kit.transact(multi.functions.mint(c, 3, 1))
    await gated.require("usd-room", "ERC20", usd.address, min_balance="1")
    await gated.require("nft-room", "ERC721", nft.address)
    await gated.require("multi-room", "ERC1155", multi.address, token_ids=("3",))
    for channel, wallet in (("usd-room", a), ("nft-room", b), ("multi-room", c)):
        assert await gated.access(channel, wallet)
        await gated.kit.fund(wallet)
        await gated.kit.impersonate(wallet)
    await gated.caught_up()
    reads: list[str] = []
    follower = gated.heads.get("local")
    assert follower is not None
    follower.reader.observer = lambda _network, method, _s, _e: reads.append(method)

    gated.node.rpc("evm_setAutomine", [False])
    sent = [
        await usd.functions.transfer(sink, 1_000_000).transact({"from": a}),
        await nft.functions.transferFrom(b, sink, token_id).transact({"from": b}),
        await multi.functions.safeTransferFrom(c, sink, 3, 1, b"").transact({"from": c}),
    ]
    gated.node.rpc("evm_mine")
    gated.node.rpc("evm_setAutomine", [True])
    blocks = {(await gated.kit.w3.eth.get_transaction_receipt(h))["blockNumber"] for h in sent}
    events = {
        (await gated.change(room)).channel_id for room in ("usd-room", "nft-room", "multi-room")
    }

    assert len(blocks) == 1
    assert events == {"usd-room", "nft-room", "multi-room"}
    assert reads.count("eth_getLogs") == 1


async def link(gate: TokenGate, user_id: str, wallet: Any) -> None:
    """Prove `wallet` for `user_id` with a signed SIWE challenge."""
    from eth_account.messages import encode_defunct

    challenge = await gate.create_wallet_challenge(user_id, wallet.address, 31337)
    signed = wallet.sign_message(encode_defunct(text=challenge.message))
    await gate.verify_wallet_ownership(challenge.message, "0x" + signed.signature.hex())
