"""Token-gated access: how fresh a CheckChannelAccess answer is, and access changes found on one
replica reaching every replica's watchers."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import token_gate_service_pb2 as pb
from nchat.entitlements.v1 import token_gate_service_pb2_grpc as pb_grpc

from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.chain_fixtures import (
    AnvilNode,
    ChainKit,
    TestTokens,
    anvil,
    chain,
    local_settings,
    new_token_id,
    new_wallet,
    tokens,
)
from tests.server.conftest import CHAT, OPS
from tests.server.test_token_gate_service import TRUSTED, settings

__all__ = ["anvil", "chain", "settings", "tokens"]

pytestmark = pytest.mark.slow


async def start(settings: Settings, url: str) -> Running:
    store = Store.open(url)
    running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
    running.deps.closers.insert(0, store.close)
    await running.server.start()
    await running.set_serving(True)
    return running


def nft_requirement(contract: str, channel: str, token_id: int) -> pb.TokenRequirement:
    return pb.TokenRequirement(
        channel_id=channel,
        token_type=pb.TOKEN_TYPE_ERC721,
        contract_address=contract,
        network="local",
        name="holders",
        enabled=True,
        token_ids=[str(token_id)],
    )


async def give_away(chain: ChainKit, tokens: TestTokens, holder: str, token_id: int) -> None:
    await chain.fund(holder)
    await chain.impersonate(holder)
    await chain.transact(
        tokens.nft.functions.transferFrom(holder, new_wallet().address, token_id), sender=holder
    )


async def test_a_transfer_denies_channel_access_soon_after_its_block_with_no_min_revision(
    settings: Settings,
    database_url: str,
    anvil: AnvilNode,
    chain: ChainKit,
    tokens: TestTokens,
) -> None:
    await upgrade(database_url)
    running = await start(replace(settings, chains=local_settings(anvil)), database_url)
    assert running.deps.token_gate is not None
    await running.deps.token_gate.start()  # as serve() does: follows heads, reads transfers
    holder, token_id = new_wallet().address, new_token_id()
    await chain.transact(tokens.nft.functions.mint(holder, token_id))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            gate = pb_grpc.TokenGateServiceStub(channel)
            await gate.CreateTokenRequirement(
                pb.CreateTokenRequirementRequest(
                    requirement=nft_requirement(tokens.nft.address, "block-club", token_id)
                ),
                metadata=OPS,
            )
            ask = pb.CheckChannelAccessRequest(channel_id="block-club", wallet_addresses=[holder])
            assert (await gate.CheckChannelAccess(ask, metadata=TRUSTED)).granted
            await give_away(chain, tokens, holder, token_id)
            # The cached grant would last the cache TTL (60 s); the transfer listener drops it
            # once the block is followed, so a plain check denies well within that.
            loop = asyncio.get_running_loop()
            mined = loop.time()
            while (await gate.CheckChannelAccess(ask, metadata=TRUSTED)).granted:
                assert loop.time() - mined < 10, "still granted 10 s after the transfer's block"
                await asyncio.sleep(0.02)
    finally:
        await running.stop(0)


async def test_min_revision_makes_channel_access_read_the_chain_when_blocks_are_not_followed(
    settings: Settings,
    database_url: str,
    anvil: AnvilNode,
    chain: ChainKit,
    tokens: TestTokens,
) -> None:
    await upgrade(database_url)
    unfollowed = local_settings(anvil, follow_blocks=False)  # only the TTL and the sweep
    running = await start(replace(settings, chains=unfollowed), database_url)
    assert running.deps.token_gate is not None
    await running.deps.token_gate.start()
    holder, token_id = new_wallet().address, new_token_id()
    await chain.transact(tokens.nft.functions.mint(holder, token_id))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            gate = pb_grpc.TokenGateServiceStub(channel)
            await gate.CreateTokenRequirement(
                pb.CreateTokenRequirementRequest(
                    requirement=nft_requirement(tokens.nft.address, "fresh-club", token_id)
                ),
                metadata=OPS,
            )
            ask = pb.CheckChannelAccessRequest(channel_id="fresh-club", wallet_addresses=[holder])
            first = await gate.CheckChannelAccess(ask, metadata=TRUSTED)
            assert first.granted and first.as_of.seconds > 0
            await give_away(chain, tokens, holder, token_id)
            cached = await gate.CheckChannelAccess(ask, metadata=TRUSTED)
            assert cached.granted  # nothing follows blocks: the answer lives its cache TTL
            ask.min_revision = 1
            fresh = await gate.CheckChannelAccess(ask, metadata=TRUSTED)
            assert not fresh.granted
            assert fresh.as_of.ToDatetime() >= first.as_of.ToDatetime()
    finally:
        await running.stop(0)


async def test_an_access_change_found_on_one_replica_reaches_the_others_watchers(
    settings: Settings,
    database_url: str,
    anvil: AnvilNode,
    chain: ChainKit,
    tokens: TestTokens,
) -> None:
    await upgrade(database_url)
    sweeping = local_settings(anvil, reverify_interval_seconds=0.2, verify_cache_ttl_seconds=0.1)
    a = await start(replace(settings, chains=sweeping), database_url)
    b = await start(
        replace(settings, chains=local_settings(anvil, reverify_interval_seconds=0)), database_url
    )
    assert a.deps.token_gate is not None
    await a.deps.token_gate.start()  # as serve() does: checks the chain, starts the sweep
    holder, token_id = new_wallet().address, new_token_id()
    await chain.transact(tokens.nft.functions.mint(holder, token_id))
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as to_a,
            grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as to_b,
        ):
            gate = pb_grpc.TokenGateServiceStub(to_a)
            await gate.CreateTokenRequirement(
                pb.CreateTokenRequirementRequest(
                    requirement=nft_requirement(tokens.nft.address, "far-lounge", token_id)
                ),
                metadata=OPS,
            )
            access = await gate.CheckChannelAccess(
                pb.CheckChannelAccessRequest(channel_id="far-lounge", wallet_addresses=[holder]),
                metadata=TRUSTED,
            )
            assert access.granted
            watches = [
                ent_grpc.EntitlementsServiceStub(ch).WatchEntitlements(
                    ent_pb.WatchEntitlementsRequest(channel_ids=["far-lounge"]), metadata=CHAT
                )
                for ch in (to_a, to_b)
            ]
            await asyncio.sleep(0.1)
            await give_away(chain, tokens, holder, token_id)
            for watch in watches:  # the sweep runs on A only; B hears it from the change feed
                change = (await asyncio.wait_for(watch.read(), 10)).token_access_changed
                assert (change.channel_id, list(change.wallet_addresses), change.granted) == (
                    "far-lounge",
                    [holder],
                    False,
                )
            for watch in watches:  # each replica pushes it once
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(watch.read(), 0.7)
                watch.cancel()
    finally:
        await a.stop(0)
        await b.stop(0)
