"""Who may be granted token-gated access, over gRPC with a real store (SQLite and PostgreSQL)
and a real anvil node: a user's access rests on the wallets that user proved; wallets a caller
lists count only for callers trusted to have verified them (`tokengate:trusted-wallets`)."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from google.protobuf.field_mask_pb2 import FieldMask
from nchat.entitlements.v1 import token_gate_service_pb2 as pb
from nchat.entitlements.v1 import token_gate_service_pb2_grpc as pb_grpc

from adapters.chains import ChainMismatch, ChainSettings
from entitlements.config import Settings
from entitlements.store.repository import Store
from tests.chain_fixtures import (
    AnvilNode,
    ChainKit,
    TestTokens,
    anvil,
    chain,
    new_token_id,
    new_wallet,
    tokens,
)
from tests.server.conftest import OPS
from tests.server.helpers import details
from tests.server.test_token_gate_service import (
    TRUSTED,
    invalid,
    nft_requirement,
    settings,
    start,
    stub,
)

__all__ = ["anvil", "chain", "settings", "stub", "tokens"]

pytestmark = pytest.mark.slow

Stub = pb_grpc.TokenGateServiceStub


async def link(stub: Stub, user_id: str, wallet: LocalAccount) -> None:
    """Prove `wallet` for `user_id` with a signed Sign-In with Ethereum challenge."""
    challenge = await stub.CreateWalletChallenge(
        pb.CreateWalletChallengeRequest(user_id=user_id, address=wallet.address, chain_id=31337),
        metadata=OPS,
    )
    signature = Account.sign_message(encode_defunct(text=challenge.message), wallet.key).signature
    await stub.VerifyWalletOwnership(
        pb.VerifyWalletOwnershipRequest(
            message=challenge.message, signature="0x" + bytes(signature).hex()
        ),
        metadata=OPS,
    )


async def gated_channel(stub: Stub, chain: ChainKit, tokens: TestTokens, channel: str) -> str:
    """A channel gated on the test NFT and a wallet holding one; returns the holder's address."""
    holder = new_wallet()
    await chain.transact(tokens.nft.functions.mint(holder.address, new_token_id()))
    await stub.CreateTokenRequirement(
        pb.CreateTokenRequirementRequest(requirement=nft_requirement(tokens.nft.address, channel)),
        metadata=OPS,
    )
    return str(holder.address)


async def denied(call: object, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()
    info, fields = details(caught.value)
    assert fields == [field]
    assert info is not None and info.reason == "ERROR_REASON_PERMISSION_DENIED"
    assert info.metadata["scope"] == "tokengate:trusted-wallets"
    assert "tokengate:trusted-wallets" in (caught.value.details() or "")


async def test_a_caller_cannot_lend_a_holders_wallet_to_another_user(
    stub: Stub, chain: ChainKit, tokens: TestTokens
) -> None:
    holder = await gated_channel(stub, chain, tokens, "vault")

    await denied(
        stub.CheckChannelAccess(
            pb.CheckChannelAccessRequest(
                channel_id="vault", user_id="mallory", wallet_addresses=[holder]
            ),
            metadata=OPS,
        ),
        "wallet_addresses",
    )
    await denied(
        stub.CheckChannelAccess(
            pb.CheckChannelAccessRequest(channel_id="vault", wallet_addresses=[holder]),
            metadata=OPS,
        ),
        "wallet_addresses",
    )
    mallory = await stub.CheckChannelAccess(
        pb.CheckChannelAccessRequest(channel_id="vault", user_id="mallory"), metadata=OPS
    )
    assert not mallory.granted


async def test_a_user_is_granted_on_the_wallets_they_proved(
    stub: Stub, chain: ChainKit, tokens: TestTokens
) -> None:
    holder = new_wallet()
    await chain.transact(tokens.nft.functions.mint(holder.address, new_token_id()))
    await stub.CreateTokenRequirement(
        pb.CreateTokenRequirementRequest(requirement=nft_requirement(tokens.nft.address, "proved")),
        metadata=OPS,
    )
    await link(stub, "neo", holder)

    neo = await stub.CheckChannelAccess(
        pb.CheckChannelAccessRequest(channel_id="proved", user_id="neo"), metadata=OPS
    )

    assert neo.granted
    assert [r.wallet_address for r in neo.results] == [holder.address]


async def test_a_trusted_caller_may_name_wallets_it_verified(
    stub: Stub, chain: ChainKit, tokens: TestTokens
) -> None:
    holder = await gated_channel(stub, chain, tokens, "bridge")

    for_user = await stub.CheckChannelAccess(
        pb.CheckChannelAccessRequest(channel_id="bridge", user_id="ada", wallet_addresses=[holder]),
        metadata=TRUSTED,
    )
    bare = await stub.CheckChannelAccess(
        pb.CheckChannelAccessRequest(channel_id="bridge", wallet_addresses=[holder.lower()]),
        metadata=TRUSTED,
    )

    assert for_user.granted and bare.granted
    assert bare.results[0].wallet_address == holder


async def test_a_minimum_of_nothing_is_refused_everywhere(
    stub: Stub, chain: ChainKit, tokens: TestTokens
) -> None:
    zero = pb.TokenRequirement(
        channel_id="free-for-all",
        token_type=pb.TOKEN_TYPE_ERC20,
        contract_address=tokens.usdc6.address,
        network="local",
        min_balance="0",
    )
    await invalid(
        stub.CreateTokenRequirement(
            pb.CreateTokenRequirementRequest(requirement=zero), metadata=OPS
        ),
        "requirement.min_balance",
    )
    await invalid(
        stub.VerifyToken(
            pb.VerifyTokenRequest(requirement=zero, wallet_address=new_wallet().address),
            metadata=OPS,
        ),
        "requirement.min_balance",
    )
    created = await stub.CreateTokenRequirement(
        pb.CreateTokenRequirementRequest(
            requirement=pb.TokenRequirement(
                channel_id="free-for-all",
                token_type=pb.TOKEN_TYPE_ERC20,
                contract_address=tokens.usdc6.address,
                network="local",
                min_balance="1",
            )
        ),
        metadata=OPS,
    )
    await invalid(
        stub.UpdateTokenRequirement(
            pb.UpdateTokenRequirementRequest(
                requirement=pb.TokenRequirement(id=created.requirement.id, min_balance="0.00"),
                update_mask=FieldMask(paths=["min_balance"]),
            ),
            metadata=OPS,
        ),
        "requirement.min_balance",
    )


async def test_a_count_of_zero_still_needs_one_token(
    stub: Stub, chain: ChainKit, tokens: TestTokens
) -> None:
    nobody = new_wallet().address
    for requirement in (
        pb.TokenRequirement(
            token_type=pb.TOKEN_TYPE_ERC1155,
            contract_address=tokens.multi.address,
            network="local",
            token_ids=[str(new_token_id())],
            min_token_count=0,
        ),
        pb.TokenRequirement(
            token_type=pb.TOKEN_TYPE_ERC721,
            contract_address=tokens.nft.address,
            network="local",
            min_token_count=0,
        ),
    ):
        answer = await stub.VerifyToken(
            pb.VerifyTokenRequest(requirement=requirement, wallet_address=nobody), metadata=OPS
        )
        assert (answer.verified, answer.balance) == (False, "0")


async def created_requirement(stub: Stub, contract: str, channel: str) -> pb.TokenRequirement:
    response = await stub.CreateTokenRequirement(
        pb.CreateTokenRequirementRequest(
            requirement=nft_requirement(contract, channel, description="first")
        ),
        metadata=OPS,
    )
    return response.requirement


async def update(stub: Stub, requirement: pb.TokenRequirement, *paths: str) -> pb.TokenRequirement:
    request = pb.UpdateTokenRequirementRequest(requirement=requirement)
    if paths:
        request.update_mask.paths.extend(paths)
    return (await stub.UpdateTokenRequirement(request, metadata=OPS)).requirement


async def test_an_update_without_a_mask_changes_only_the_fields_sent(
    stub: Stub, tokens: TestTokens
) -> None:
    created = await created_requirement(stub, tokens.nft.address, "masked")
    # The whole requirement sent back with a new name, `enabled` left out (proto3: false).
    resent = pb.TokenRequirement()
    resent.CopyFrom(created)
    resent.name = "renamed"
    resent.ClearField("enabled")

    renamed = await update(stub, resent)
    described = await update(stub, pb.TokenRequirement(id=created.id, description="second"))

    assert (renamed.name, renamed.enabled, renamed.description) == ("renamed", True, "first")
    assert (described.name, described.enabled, described.description) == (
        "renamed",
        True,
        "second",
    )
    assert (described.channel_id, described.contract_address) == ("masked", tokens.nft.address)
    listed = await stub.ListTokenRequirements(
        pb.ListTokenRequirementsRequest(channel_id="masked"), metadata=OPS
    )
    assert [r.enabled for r in listed.requirements] == [True]


async def test_an_update_with_a_mask_changes_exactly_the_named_fields(
    stub: Stub, tokens: TestTokens
) -> None:
    created = await created_requirement(stub, tokens.nft.address, "named")

    disabled = await update(
        stub, pb.TokenRequirement(id=created.id, name="ignored", enabled=False), "enabled"
    )
    cleared = await update(stub, pb.TokenRequirement(id=created.id), "description")
    replaced = await update(
        stub,
        pb.TokenRequirement(
            id=created.id,
            channel_id="named",
            token_type=pb.TOKEN_TYPE_ERC721,
            contract_address=tokens.nft.address,
            network="local",
            enabled=True,
        ),
        "*",
    )

    assert (disabled.enabled, disabled.name) == (False, "holders")
    assert (cleared.description, cleared.enabled) == ("", False)
    assert (replaced.enabled, replaced.name, replaced.description) == (True, "", "")


async def test_an_unknown_mask_path_is_refused_and_changes_nothing(
    stub: Stub, tokens: TestTokens
) -> None:
    created = await created_requirement(stub, tokens.nft.address, "strict")
    for paths in (["name", "nonsense"], ["requirement.name"], ["id"], ["*", "name"]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await update(stub, pb.TokenRequirement(id=created.id, name="x"), *paths)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        _, fields = details(caught.value)
        assert len(fields) == 1 and fields[0].startswith("update_mask"), fields

    listed = await stub.ListTokenRequirements(
        pb.ListTokenRequirementsRequest(channel_id="strict"), metadata=OPS
    )
    assert [(r.name, r.updated_at) for r in listed.requirements] == [
        (created.name, created.updated_at)
    ]


async def test_a_node_that_comes_up_on_the_wrong_chain_is_unavailable_and_not_ready(
    settings: Settings, store: Store
) -> None:
    wrong = AnvilNode(4242)  # not started yet: the server starts while nothing listens there
    running = await start(
        replace(
            settings,
            chains=ChainSettings(rpc_urls={"local": wrong.url}, request_timeout_seconds=2),
        ),
        store,
    )
    try:
        assert running.deps.token_gate is not None and running.deps.ops is not None
        await running.deps.token_gate.start()  # as serve() does: logs the node as unreachable
        wrong.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.TokenGateServiceStub(channel).VerifyToken(
                    pb.VerifyTokenRequest(
                        requirement=nft_requirement("0x" + "ab" * 20),
                        wallet_address=new_wallet().address,
                    ),
                    metadata=OPS,
                )
        probes = dict(running.deps.ops.optional_probes)  # reported apart: /readyz?verbose
        with pytest.raises(ChainMismatch):
            await probes["chain:local"]()
    finally:
        await running.stop(0)
        wrong.stop()

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    info, _ = details(caught.value)
    assert info is not None and info.reason == "ERROR_REASON_DEPENDENCY_UNAVAILABLE"
    message = caught.value.details() or ""
    assert all(word in message for word in ("local", "31337", "4242")), message


async def test_a_contract_that_is_not_the_token_is_a_failed_precondition(
    stub: Stub, tokens: TestTokens
) -> None:
    account = new_wallet().address
    with pytest.raises(grpc.aio.AioRpcError) as created:
        await stub.CreateTokenRequirement(
            pb.CreateTokenRequirementRequest(requirement=nft_requirement(account, "no-code")),
            metadata=OPS,
        )
    nft_as_erc20 = pb.TokenRequirement(
        token_type=pb.TOKEN_TYPE_ERC20, contract_address=tokens.nft.address, network="local"
    )
    with pytest.raises(grpc.aio.AioRpcError) as checked:
        await stub.VerifyToken(
            pb.VerifyTokenRequest(requirement=nft_as_erc20, wallet_address=new_wallet().address),
            metadata=OPS,
        )

    for caught, contract in ((created, account), (checked, tokens.nft.address)):
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
        info, _ = details(caught.value)
        assert info is not None and info.reason == "ERROR_REASON_TOKEN_CONTRACT_MISMATCH"
        assert info.metadata["contract_address"] == contract
        assert contract in (caught.value.details() or "")
    assert details(created.value)[1] == ["requirement.contract_address"]
    listed = await stub.ListTokenRequirements(
        pb.ListTokenRequirementsRequest(channel_id="no-code"), metadata=OPS
    )
    assert list(listed.requirements) == []


async def test_a_requirement_is_not_stored_unchecked_while_the_chain_is_down(
    settings: Settings, store: Store
) -> None:
    down = ChainSettings(rpc_urls={"local": AnvilNode().url}, request_timeout_seconds=2)
    running = await start(replace(settings, chains=down), store)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.TokenGateServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateTokenRequirement(
                    pb.CreateTokenRequirementRequest(
                        requirement=nft_requirement("0x" + "ab" * 20, "later")
                    ),
                    metadata=OPS,
                )
            listed = await stub.ListTokenRequirements(
                pb.ListTokenRequirementsRequest(channel_id="later"), metadata=OPS
            )
    finally:
        await running.stop(0)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert list(listed.requirements) == []
