"""Following a real anvil node's head (websocket subscription and poll), reorgs seen by hash, a
node that is down, and transfer logs of many contracts read in one eth_getLogs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.chains import ChainReader
from adapters.chains.heads import HeadFollower, HeadFollowers, HeadUpdate
from adapters.chains.transfers import transfer_logs
from tests.chain_fixtures import (
    AnvilNode,
    ChainKit,
    TestTokens,
    free_port,
    local_settings,
    new_token_id,
    new_wallet,
)

pytestmark = pytest.mark.slow

WAIT = 10.0  # generous: an event is expected well within it


@pytest.fixture
async def node() -> AsyncIterator[AnvilNode]:
    """A node of the test's own: reorgs (evm_revert) and manual mining must not disturb others."""
    own = AnvilNode().start()
    try:
        yield own
    finally:
        own.stop()


async def follower_on(node: AnvilNode, *, websocket: bool) -> HeadFollower:
    reader = ChainReader("local", node.chain_id, node.url, timeout_seconds=5)
    ws = node.url.replace("http://", "ws://") if websocket else None
    return HeadFollower(reader, poll_seconds=0.05, ws_url=ws)


async def next_update(updates: asyncio.Queue[HeadUpdate], number: int) -> HeadUpdate:
    async with asyncio.timeout(WAIT):
        while True:
            update = await updates.get()
            if update.head.number >= number:
                return update


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "poll"])
async def test_a_mined_block_reaches_the_listeners(node: AnvilNode, websocket: bool) -> None:
    follower = await follower_on(node, websocket=websocket)
    updates: asyncio.Queue[HeadUpdate] = asyncio.Queue()
    follower.subscribe(updates.put_nowait)
    follower.start()
    try:
        first = await next_update(updates, 0)
        node.rpc("evm_mine")
        mined = await next_update(updates, first.head.number + 1)
        status = follower.status()
    finally:
        await follower.stop()
        await follower.reader.close()

    assert mined.head.number == first.head.number + 1
    assert mined.head.parent_hash == first.head.hash
    assert mined.reorged_from is None
    assert (status.number, status.failures) == (mined.head.number, 0)
    assert status.source == ("websocket" if websocket else "poll")
    assert status.age_seconds is not None and status.age_seconds < WAIT


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "poll"])
async def test_a_block_replaced_at_the_same_height_is_reported_as_a_reorg(
    node: AnvilNode, websocket: bool
) -> None:
    follower = await follower_on(node, websocket=websocket)
    updates: asyncio.Queue[HeadUpdate] = asyncio.Queue()
    follower.subscribe(updates.put_nowait)
    node.rpc("evm_mine")
    follower.start()
    try:
        base = await next_update(updates, 1)
        snapshot = node.rpc("evm_snapshot")
        node.rpc("evm_mine")
        replaced = await next_update(updates, base.head.number + 1)
        assert node.rpc("evm_revert", [snapshot])
        # A different block at the same height: another timestamp.
        node.rpc("evm_mine", [replaced.head.timestamp + 100])
        reorg = await next_update(updates, base.head.number + 1)
    finally:
        await follower.stop()
        await follower.reader.close()

    assert reorg.head.number == replaced.head.number
    assert reorg.head.hash != replaced.head.hash
    assert reorg.reorged_from == replaced.head.number
    assert follower.hash_of(reorg.head.number) == reorg.head.hash


async def test_a_gap_is_filled_and_a_deeper_reorg_found_by_hash(node: AnvilNode) -> None:
    follower = await follower_on(node, websocket=False)
    await follower.poll_once()
    start = follower.head
    assert start is not None
    snapshot = node.rpc("evm_snapshot")
    node.rpc("anvil_mine", ["0x3"])
    grown = await follower.poll_once()
    node.rpc("evm_revert", [snapshot])
    node.rpc("anvil_mine", ["0x4", "0x64"])  # four other blocks, 100 s apart
    reorg = await follower.poll_once()
    await follower.reader.close()

    assert grown is not None and (grown.head.number, grown.reorged_from) == (start.number + 3, None)
    assert follower.hash_of(start.number) == start.hash
    assert reorg is not None and reorg.head.number == start.number + 4
    assert reorg.reorged_from == start.number + 1


async def test_a_node_that_is_down_is_reported_with_its_error() -> None:
    reader = ChainReader("local", 31337, f"http://127.0.0.1:{free_port()}", timeout_seconds=1)
    follower = HeadFollower(reader, poll_seconds=0.05)
    follower.start()
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if follower.status().failures >= 2:
                    break
                await asyncio.sleep(0.05)
        status = follower.status()
    finally:
        await follower.stop()
        await reader.close()

    assert (status.number, status.age_seconds) == (-1, None)
    assert status.last_error


def test_followers_are_built_per_configured_network_with_its_websocket(anvil: AnvilNode) -> None:
    ws = anvil.url.replace("http://", "ws://")
    heads = HeadFollowers.from_settings(local_settings(anvil, ws_urls={"local": ws}))

    follower = heads.get("local")

    assert heads.networks == ("local",)
    assert follower is not None and follower.ws_url == ws
    assert follower.poll_seconds == 0.1
    assert heads.status()["local"].number == -1


async def test_transfers_of_many_contracts_are_read_in_one_request(
    chain: ChainKit, tokens: TestTokens, local_reader: ChainReader
) -> None:
    a, b, c, d = (new_wallet().address for _ in range(4))
    token_id = new_token_id()
    await chain.transact(tokens.usdc6.functions.mint(a, 5))
    first = await chain.w3.eth.block_number
    await chain.transact(tokens.nft.functions.mint(b, token_id))
    await chain.transact(tokens.multi.functions.mint(c, 1, 2))
    await chain.fund(c)
    await chain.impersonate(c)
    await chain.transact(
        tokens.multi.functions.safeBatchTransferFrom(c, d, [1], [2], b""), sender=c
    )
    last = await chain.w3.eth.block_number
    before = local_reader.requests

    logs = await transfer_logs(
        local_reader,
        first,
        last,
        [tokens.usdc6.address, tokens.nft.address, tokens.multi.address],
    )

    assert local_reader.requests - before == 1
    moved = {(entry.contract, entry.wallets) for entry in logs}
    assert (tokens.usdc6.address, (a,)) in moved  # a mint names only the receiver
    assert (tokens.nft.address, (b,)) in moved
    assert (tokens.multi.address, (c,)) in moved
    assert (tokens.multi.address, (c, d)) in moved  # TransferBatch: from and to
