"""TokenGateService over gRPC with a real store (SQLite and PostgreSQL) and a real anvil node:
bad input names the field and stores nothing, CRUD with field masks and pages, checks, SIWE."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import to_checksum_address
from google.protobuf.field_mask_pb2 import FieldMask
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import token_gate_service_pb2 as pb
from nchat.entitlements.v1 import token_gate_service_pb2_grpc as pb_grpc

from adapters.chains import ChainSettings
from entitlements.config import Settings
from entitlements.server.app import Running, build_deps, create_server
from entitlements.store.repository import Store
from tests.chain_fixtures import (
    AnvilNode,
    ChainKit,
    TestTokens,
    anvil,
    chain,
    free_port,
    local_settings,
    new_token_id,
    new_wallet,
    tokens,
)
from tests.server.conftest import CALLERS_TOML, CHAT, OPS
from tests.server.helpers import details

__all__ = ["anvil", "chain", "tokens"]

pytestmark = pytest.mark.slow

Stub = pb_grpc.TokenGateServiceStub

#: A caller that verified wallet ownership itself and may name wallets for a user.
TRUSTED = (("authorization", "Bearer gatekeeper-token-000001"),)

TRUSTED_CALLER = """
[[callers]]
name = "gatekeeper"
tokens = ["gatekeeper-token-000001"]
scopes = ["tokengate:read", "tokengate:trusted-wallets"]
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The server tests' callers and a trusted one (`TRUSTED`)."""
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML + TRUSTED_CALLER)
    return Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(callers)})


async def start(settings: Settings, store: Store) -> Running:
    running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
    await running.server.start()
    await running.set_serving(True)
    return running


@pytest.fixture
async def stub(settings: Settings, store: Store, anvil: AnvilNode) -> AsyncIterator[Stub]:
    """A TokenGateService stub on a server whose network "local" is the anvil node."""
    running = await start(replace(settings, chains=local_settings(anvil)), store)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.TokenGateServiceStub(channel)
    finally:
        await running.stop(0)


def nft_requirement(contract: str, channel: str = "vip", **fields: object) -> pb.TokenRequirement:
    return pb.TokenRequirement(
        channel_id=channel,
        token_type=pb.TOKEN_TYPE_ERC721,
        contract_address=contract,
        network="local",
        name="holders",
        enabled=True,
        **fields,  # type: ignore[arg-type]
    )


async def invalid(call: object, field: str, reason: str = "ERROR_REASON_INVALID_ARGUMENT") -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    info, fields = details(caught.value)
    assert fields == [field]
    assert info is not None and info.reason == reason


GOOD = "0x" + "ab" * 20


BAD_REQUIREMENTS: list[tuple[dict[str, object], str, str]] = [
    (
        {"contract_address": "0x1234"},
        "requirement.contract_address",
        "ERROR_REASON_INVALID_ADDRESS",
    ),
    (
        {"contract_address": "0xAbababababababababababababababababababab"},
        "requirement.contract_address",
        "ERROR_REASON_INVALID_ADDRESS",
    ),
    ({"network": "solana"}, "requirement.network", "ERROR_REASON_UNKNOWN_NETWORK"),
    ({"network": "ethereum"}, "requirement.network", "ERROR_REASON_UNKNOWN_NETWORK"),
    (
        {"token_type": pb.TOKEN_TYPE_ERC20, "min_balance": "-2"},
        "requirement.min_balance",
        "ERROR_REASON_INVALID_ARGUMENT",
    ),
    (
        {"token_type": pb.TOKEN_TYPE_ERC20, "min_balance": "1,5"},
        "requirement.min_balance",
        "ERROR_REASON_INVALID_ARGUMENT",
    ),
    (
        {"token_type": pb.TOKEN_TYPE_ERC1155},
        "requirement.token_ids",
        "ERROR_REASON_INVALID_ARGUMENT",
    ),
    ({"token_ids": ["1", "one"]}, "requirement.token_ids[1]", "ERROR_REASON_INVALID_ARGUMENT"),
    ({"min_token_count": -1}, "requirement.min_token_count", "ERROR_REASON_INVALID_ARGUMENT"),
    (
        {"token_type": pb.TOKEN_TYPE_UNSPECIFIED},
        "requirement.token_type",
        "ERROR_REASON_INVALID_ARGUMENT",
    ),
    ({"channel_id": ""}, "requirement.channel_id", "ERROR_REASON_INVALID_ARGUMENT"),
]


async def test_create_with_bad_input_names_the_field_and_stores_nothing(stub: Stub) -> None:
    # One server per backend for all the cases (a database per case would cost seconds).
    for bad, field, reason in BAD_REQUIREMENTS:
        message = nft_requirement(GOOD)
        for name, value in bad.items():
            if isinstance(value, list):
                message.ClearField(name)  # type: ignore[arg-type]
                getattr(message, name).extend(value)
            else:
                setattr(message, name, value)

        await invalid(
            stub.CreateTokenRequirement(
                pb.CreateTokenRequirementRequest(requirement=message), metadata=OPS
            ),
            field,
            reason,
        )

    listed = await stub.ListTokenRequirements(
        pb.ListTokenRequirementsRequest(channel_id="vip"), metadata=OPS
    )
    assert list(listed.requirements) == []


async def test_requirement_crud_with_field_mask(stub: Stub, tokens: TestTokens) -> None:
    upper_case = "0x" + tokens.nft.address[2:].upper()
    omitted_enabled = nft_requirement(upper_case)
    omitted_enabled.ClearField("enabled")
    created = (
        await stub.CreateTokenRequirement(
            pb.CreateTokenRequirementRequest(requirement=omitted_enabled),
            metadata=OPS,
        )
    ).requirement
    assert created.id
    assert created.enabled  # even when the caller left it out (proto3 has no "unset" bool)
    assert created.contract_address == to_checksum_address(upper_case)  # stored EIP-55
    assert created.created_at.seconds > 0

    renamed = (
        await stub.UpdateTokenRequirement(
            pb.UpdateTokenRequirementRequest(
                requirement=pb.TokenRequirement(id=created.id, name="renamed", network="nowhere"),
                update_mask=FieldMask(paths=["name"]),
            ),
            metadata=OPS,
        )
    ).requirement
    assert (renamed.name, renamed.network, renamed.enabled) == ("renamed", "local", True)

    await invalid(
        stub.UpdateTokenRequirement(
            pb.UpdateTokenRequirementRequest(
                requirement=pb.TokenRequirement(id=created.id, network="nowhere"),
                update_mask=FieldMask(paths=["network"]),
            ),
            metadata=OPS,
        ),
        "requirement.network",
        "ERROR_REASON_UNKNOWN_NETWORK",
    )
    await invalid(
        stub.UpdateTokenRequirement(
            pb.UpdateTokenRequirementRequest(
                requirement=pb.TokenRequirement(id=created.id),
                update_mask=FieldMask(paths=["created_at"]),
            ),
            metadata=OPS,
        ),
        "update_mask.paths[0]",
    )
    stored = (
        await stub.ListTokenRequirements(
            pb.ListTokenRequirementsRequest(channel_id="vip"), metadata=OPS
        )
    ).requirements
    assert [(r.name, r.network) for r in stored] == [("renamed", "local")]

    await stub.DeleteTokenRequirement(pb.DeleteTokenRequirementRequest(id=created.id), metadata=OPS)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteTokenRequirement(
            pb.DeleteTokenRequirementRequest(id=created.id), metadata=OPS
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_requirement_id_is_not_found(stub: Stub) -> None:
    for call in (
        stub.VerifyToken(
            pb.VerifyTokenRequest(requirement_id="nope", wallet_address=GOOD), metadata=OPS
        ),
        stub.UpdateTokenRequirement(
            pb.UpdateTokenRequirementRequest(requirement=pb.TokenRequirement(id="nope")),
            metadata=OPS,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_pages_through_a_channels_requirements(stub: Stub, tokens: TestTokens) -> None:
    ids = []
    for i in range(5):
        created = await stub.CreateTokenRequirement(
            pb.CreateTokenRequirementRequest(
                requirement=nft_requirement(tokens.nft.address, channel="paged", description=str(i))
            ),
            metadata=OPS,
        )
        ids.append(created.requirement.id)
    await stub.CreateTokenRequirement(
        pb.CreateTokenRequirementRequest(
            requirement=nft_requirement(tokens.nft.address, channel="other")
        ),
        metadata=OPS,
    )

    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListTokenRequirements(
            pb.ListTokenRequirementsRequest(channel_id="paged", page_size=2, page_token=token),
            metadata=OPS,
        )
        seen += [r.id for r in page.requirements]
        token = page.next_page_token
        if not token:
            break

    assert seen == ids
    await invalid(
        stub.ListTokenRequirements(
            pb.ListTokenRequirementsRequest(channel_id="paged", page_token="garbage!"),
            metadata=OPS,
        ),
        "page_token",
    )


async def test_verify_token_inline_and_stored(
    stub: Stub, chain: ChainKit, tokens: TestTokens
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.usdc6.functions.mint(holder, 2_500_000))
    inline = pb.TokenRequirement(
        token_type=pb.TOKEN_TYPE_ERC20,
        contract_address=tokens.usdc6.address,
        network="local",
        min_balance="2.5",
    )
    first = await stub.VerifyToken(
        pb.VerifyTokenRequest(requirement=inline, wallet_address=holder.lower()), metadata=OPS
    )
    again = await stub.VerifyToken(
        pb.VerifyTokenRequest(requirement=inline, wallet_address=holder), metadata=OPS
    )
    stored = await stub.CreateTokenRequirement(
        pb.CreateTokenRequirementRequest(
            requirement=pb.TokenRequirement(
                channel_id="c",
                token_type=pb.TOKEN_TYPE_ERC20,
                contract_address=tokens.usdc6.address,
                network="local",
                min_balance="3",
            )
        ),
        metadata=OPS,
    )
    short = await stub.VerifyToken(
        pb.VerifyTokenRequest(requirement_id=stored.requirement.id, wallet_address=holder),
        metadata=OPS,
    )

    assert (first.verified, first.balance, first.cached) == (True, "2.5", False)
    assert again.cached and first.checked_at == again.checked_at
    assert (short.verified, short.balance) == (False, "2.5")
    assert "below the required 3" in short.error


async def test_a_cached_verify_token_is_answered_while_the_event_loop_is_blocked(
    settings: Settings, store: Store, anvil: AnvilNode, chain: ChainKit, tokens: TestTokens
) -> None:
    """The hot path: a cached inline check is answered on gRPC's handler thread, from memory
    (the loop owns the chain readers; a bridged call could not finish while it is blocked)."""
    holder = new_wallet().address
    await chain.transact(tokens.usdc6.functions.mint(holder, 2_000_000))
    request = pb.VerifyTokenRequest(
        requirement=pb.TokenRequirement(
            token_type=pb.TOKEN_TYPE_ERC20,
            contract_address=tokens.usdc6.address,
            network="local",
            min_balance="1.5",
        ),
        wallet_address=holder,
    )
    running = await start(replace(settings, chains=local_settings(anvil)), store)
    try:
        target = f"127.0.0.1:{running.port}"
        async with grpc.aio.insecure_channel(target) as channel:
            first = await pb_grpc.TokenGateServiceStub(channel).VerifyToken(request, metadata=OPS)
        assert first.verified and not first.cached
        answers: list[tuple[float, pb.VerifyTokenResponse]] = []
        stop = threading.Event()

        def call() -> None:
            with grpc.insecure_channel(target) as sync_channel:
                sync_stub = pb_grpc.TokenGateServiceStub(sync_channel)
                while not stop.is_set():
                    answer = sync_stub.VerifyToken(request, metadata=OPS, timeout=10)
                    answers.append((time.monotonic(), answer))

        caller = threading.Thread(target=call)
        caller.start()
        blocked_at = time.monotonic()
        time.sleep(1.0)  # noqa: ASYNC251 - blocks the event loop on purpose
        unblocked_at = time.monotonic()
        stop.set()
        caller.join(10)
        during = [a for t, a in answers if blocked_at < t < unblocked_at]
        assert len(during) >= 3
        assert all(a.verified and a.cached and a.checked_at == first.checked_at for a in during)
    finally:
        await running.stop(0)


BAD_VERIFICATIONS: list[tuple[pb.VerifyTokenRequest, str]] = [
    (pb.VerifyTokenRequest(requirement_id="r", wallet_address="0xnope"), "wallet_address"),
    (pb.VerifyTokenRequest(wallet_address=GOOD), "requirement"),
    (
        pb.VerifyTokenRequest(
            requirement=pb.TokenRequirement(
                token_type=pb.TOKEN_TYPE_ERC20,
                contract_address=GOOD,
                network="local",
                min_balance="abc",
            ),
            wallet_address=GOOD,
        ),
        "requirement.min_balance",
    ),
    (
        pb.VerifyTokenRequest(
            requirement=pb.TokenRequirement(
                token_type=pb.TOKEN_TYPE_ERC1155,
                contract_address=GOOD,
                network="local",
                token_ids=["0x01"],
            ),
            wallet_address=GOOD,
        ),
        "requirement.token_ids[0]",
    ),
]


async def test_verify_token_with_bad_input_names_the_field(stub: Stub) -> None:
    for request, field in BAD_VERIFICATIONS:
        reason = "ERROR_REASON_INVALID_ADDRESS" if field == "wallet_address" else None
        await invalid(
            stub.VerifyToken(request, metadata=OPS),
            field,
            reason or "ERROR_REASON_INVALID_ARGUMENT",
        )


async def test_check_channel_access_reports_each_requirement(
    stub: Stub, chain: ChainKit, tokens: TestTokens
) -> None:
    holder = new_wallet().address
    await chain.transact(tokens.nft.functions.mint(holder, new_token_id()))
    created = await stub.CreateTokenRequirement(
        pb.CreateTokenRequirementRequest(requirement=nft_requirement(tokens.nft.address, "club")),
        metadata=OPS,
    )

    granted = await stub.CheckChannelAccess(
        pb.CheckChannelAccessRequest(channel_id="club", wallet_addresses=[holder]),
        metadata=TRUSTED,
    )
    denied = await stub.CheckChannelAccess(
        pb.CheckChannelAccessRequest(channel_id="club", wallet_addresses=[new_wallet().address]),
        metadata=TRUSTED,
    )
    open_ = await stub.CheckChannelAccess(
        pb.CheckChannelAccessRequest(channel_id="lobby", user_id="u1"), metadata=OPS
    )

    assert granted.granted
    assert [
        (r.requirement_id, r.verified, r.wallet_address, r.balance) for r in granted.results
    ] == [(created.requirement.id, True, holder, "1")]
    assert not denied.granted and denied.results[0].error
    assert open_.granted and not open_.results
    await invalid(
        stub.CheckChannelAccess(pb.CheckChannelAccessRequest(channel_id="club"), metadata=OPS),
        "user_id",
    )
    await invalid(
        stub.CheckChannelAccess(
            pb.CheckChannelAccessRequest(channel_id="club", wallet_addresses=[GOOD, "0x1"]),
            metadata=TRUSTED,
        ),
        "wallet_addresses[1]",
        "ERROR_REASON_INVALID_ADDRESS",
    )


async def test_a_chain_that_is_down_is_unavailable_never_a_grant(
    settings: Settings, store: Store
) -> None:
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    down = replace(
        settings,
        chains=ChainSettings(rpc_urls={"local": nothing_listens}, request_timeout_seconds=2),
    )
    running = await start(down, store)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.TokenGateServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.VerifyToken(
                    pb.VerifyTokenRequest(
                        requirement=nft_requirement(GOOD), wallet_address=new_wallet().address
                    ),
                    metadata=OPS,
                )
    finally:
        await running.stop(0)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info, _ = details(caught.value)
    assert info is not None and info.reason == "ERROR_REASON_DEPENDENCY_UNAVAILABLE"


async def test_wallet_challenge_and_verification_over_grpc(stub: Stub) -> None:
    owner = new_wallet()
    challenge = await stub.CreateWalletChallenge(
        pb.CreateWalletChallengeRequest(user_id="neo", address=owner.address, chain_id=1),
        metadata=OPS,
    )
    signature = Account.sign_message(encode_defunct(text=challenge.message), owner.key).signature

    linked = await stub.VerifyWalletOwnership(
        pb.VerifyWalletOwnershipRequest(
            message=challenge.message, signature="0x" + bytes(signature).hex()
        ),
        metadata=OPS,
    )
    with pytest.raises(grpc.aio.AioRpcError) as replay:
        await stub.VerifyWalletOwnership(
            pb.VerifyWalletOwnershipRequest(
                message=challenge.message, signature="0x" + bytes(signature).hex()
            ),
            metadata=OPS,
        )

    assert (linked.user_id, linked.address, linked.chain_id) == ("neo", owner.address, 1)
    assert challenge.nonce in challenge.message
    assert challenge.expires_at.seconds - challenge.issued_at.seconds == 600
    assert replay.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await invalid(
        stub.VerifyWalletOwnership(
            pb.VerifyWalletOwnershipRequest(message=challenge.message, signature="zz"),
            metadata=OPS,
        ),
        "signature",
    )


async def test_token_gate_rpcs_need_their_scope(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListTokenRequirements(
            pb.ListTokenRequirementsRequest(channel_id="vip"), metadata=CHAT
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_revoked_access_reaches_watchers_of_the_channel(
    settings: Settings, store: Store, anvil: AnvilNode, chain: ChainKit, tokens: TestTokens
) -> None:
    chains = local_settings(anvil, reverify_interval_seconds=0.2, verify_cache_ttl_seconds=0.1)
    running = await start(replace(settings, chains=chains), store)
    assert running.deps.token_gate is not None
    await running.deps.token_gate.start()  # as serve() does: checks the chain, starts the sweep
    holder, buyer = new_wallet().address, new_wallet().address
    token_id = new_token_id()
    await chain.transact(tokens.nft.functions.mint(holder, token_id))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            gate = pb_grpc.TokenGateServiceStub(channel)
            await gate.CreateTokenRequirement(
                pb.CreateTokenRequirementRequest(
                    requirement=nft_requirement(
                        tokens.nft.address, channel="lounge", token_ids=[str(token_id)]
                    )
                ),
                metadata=OPS,
            )
            access = await gate.CheckChannelAccess(
                pb.CheckChannelAccessRequest(channel_id="lounge", wallet_addresses=[holder]),
                metadata=TRUSTED,
            )
            assert access.granted
            watch = ent_grpc.EntitlementsServiceStub(channel).WatchEntitlements(
                ent_pb.WatchEntitlementsRequest(channel_ids=["lounge"]), metadata=CHAT
            )
            await asyncio.sleep(0.1)
            await chain.fund(holder)
            await chain.impersonate(holder)
            await chain.transact(
                tokens.nft.functions.transferFrom(holder, buyer, token_id), sender=holder
            )
            event = await asyncio.wait_for(watch.read(), 10)
            watch.cancel()
        change = event.token_access_changed
        assert (change.channel_id, list(change.wallet_addresses), change.granted) == (
            "lounge",
            [holder],
            False,
        )
    finally:
        await running.stop(0)


async def test_a_transfer_reaches_watchers_in_the_block_after_it_without_the_sweep(
    settings: Settings, store: Store, anvil: AnvilNode, chain: ChainKit, tokens: TestTokens
) -> None:
    # Sweep off, answers cached for an hour: only the block can bring the change.
    chains = local_settings(anvil, reverify_interval_seconds=0, verify_cache_ttl_seconds=3600)
    running = await start(replace(settings, chains=chains), store)
    assert running.deps.token_gate is not None
    await running.deps.token_gate.start()  # as serve() does: follows the heads
    holder, buyer = new_wallet().address, new_wallet().address
    token_id = new_token_id()
    await chain.transact(tokens.nft.functions.mint(holder, token_id))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            gate = pb_grpc.TokenGateServiceStub(channel)
            await gate.CreateTokenRequirement(
                pb.CreateTokenRequirementRequest(
                    requirement=nft_requirement(
                        tokens.nft.address, channel="by-block", token_ids=[str(token_id)]
                    )
                ),
                metadata=OPS,
            )
            check = pb.CheckChannelAccessRequest(channel_id="by-block", wallet_addresses=[holder])
            assert (await gate.CheckChannelAccess(check, metadata=TRUSTED)).granted
            watch = ent_grpc.EntitlementsServiceStub(channel).WatchEntitlements(
                ent_pb.WatchEntitlementsRequest(channel_ids=["by-block"]), metadata=CHAT
            )
            await asyncio.sleep(0.1)
            await chain.fund(holder)
            await chain.impersonate(holder)
            await chain.transact(
                tokens.nft.functions.transferFrom(holder, buyer, token_id), sender=holder
            )
            event = await asyncio.wait_for(watch.read(), 10)
            watch.cancel()
            after = await gate.CheckChannelAccess(check, metadata=TRUSTED)
        change = event.token_access_changed
        assert (change.channel_id, list(change.wallet_addresses), change.granted) == (
            "by-block",
            [holder],
            False,
        )
        assert not after.granted
        heads = running.deps.heads
        assert heads is not None and heads.status()["local"].number >= 0
    finally:
        await running.stop(0)


async def test_chain_reads_are_measured_for_metrics(
    stub: Stub, chain: ChainKit, tokens: TestTokens
) -> None:
    from entitlements.observability.metrics import REGISTRY

    def reads() -> float:
        total = 0.0
        for family in REGISTRY.collect():
            if family.name == "entitlements_chain_read_duration_seconds":
                total += sum(
                    s.value
                    for s in family.samples
                    if s.name.endswith("_count") and s.labels["network"] == "local"
                )
        return total

    before = reads()
    holder = new_wallet().address
    await stub.VerifyToken(
        pb.VerifyTokenRequest(
            requirement=pb.TokenRequirement(
                token_type=pb.TOKEN_TYPE_ERC20,
                contract_address=tokens.usdc6.address,
                network="local",
                min_balance="1",
            ),
            wallet_address=holder,
        ),
        metadata=OPS,
    )
    assert reads() > before
