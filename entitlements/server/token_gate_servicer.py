"""TokenGateService: proto in, the token-gating domain, proto out; errors via `@unary`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
from nchat.entitlements.v1 import token_gate_service_pb2 as pb
from nchat.entitlements.v1 import token_gate_service_pb2_grpc as pb_grpc

from entitlements.config import Caller
from entitlements.errors import InvalidArgument
from entitlements.server import convert
from entitlements.server.auth import Authenticator
from entitlements.server.status import unary
from entitlements.server.validation import require_min_revision
from entitlements.store.tokengate_records import RequirementRecord
from entitlements.tokengate import (
    TRUSTED_WALLETS_SCOPE,
    RequirementDraft,
    TokenGate,
    Verification,
)
from entitlements.tokengate.requirements import SETTABLE_FIELDS

__all__ = ["TokenGateServicer"]

Ctx = grpc.aio.ServicerContext[Any, Any]

_TOKEN_TYPES = {
    pb.TOKEN_TYPE_ERC20: "ERC20",
    pb.TOKEN_TYPE_ERC721: "ERC721",
    pb.TOKEN_TYPE_ERC1155: "ERC1155",
}
_TOKEN_TYPE_VALUES = {name: value for value, name in _TOKEN_TYPES.items()}


def verify_answer(result: Verification, *, cached: bool) -> pb.VerifyTokenResponse:
    return pb.VerifyTokenResponse(
        verified=result.verified,
        balance=result.balance,
        error=result.error,
        cached=cached,
        checked_at=convert.timestamp(result.checked_at),
    )


def draft(message: pb.TokenRequirement) -> RequirementDraft:
    """A caller's requirement, unchecked (the domain validates it)."""
    token_type = _TOKEN_TYPES.get(message.token_type)
    if token_type is None and message.token_type != pb.TOKEN_TYPE_UNSPECIFIED:
        token_type = f"TokenType({message.token_type})"  # refused by validation, named
    return RequirementDraft(
        channel_id=message.channel_id,
        role_id=message.role_id,
        feature_id=message.feature_id,
        token_type=token_type or "",
        contract_address=message.contract_address,
        network=message.network,
        min_balance=message.min_balance,
        token_ids=tuple(message.token_ids),
        min_token_count=message.min_token_count,
        name=message.name,
        description=message.description,
        enabled=message.enabled,
    )


def requirement(record: RequirementRecord) -> pb.TokenRequirement:
    return pb.TokenRequirement(
        id=record.id,
        channel_id=record.channel_id,
        role_id=record.role_id or "",
        feature_id=record.feature_id or "",
        token_type=_TOKEN_TYPE_VALUES[record.token_type],
        contract_address=record.contract_address,
        network=record.network,
        min_balance=record.min_balance or "",
        token_ids=list(record.token_ids),
        min_token_count=record.min_token_count or 0,
        name=record.name,
        description=record.description,
        enabled=record.enabled,
        created_at=convert.timestamp(record.created_at),
        updated_at=convert.timestamp(record.updated_at),
    )


class TokenGateServicer(pb_grpc.TokenGateServiceServicer):
    """`callers` are the configured callers (None in dev mode, where every caller has every
    scope): whether a caller may name wallets for a user depends on its scopes."""

    def __init__(self, gate: TokenGate, callers: Mapping[bytes, Caller] | None) -> None:
        self._gate = gate
        self._auth = Authenticator(callers) if callers is not None else None

    def _has_scope(self, context: Ctx, scope: str) -> bool:
        if self._auth is None:
            return True
        caller = self._auth.caller_for(context.invocation_metadata())
        return caller is not None and scope in caller.scopes

    @unary
    async def VerifyToken(
        self, request: pb.VerifyTokenRequest, context: Ctx
    ) -> pb.VerifyTokenResponse:
        source = request.WhichOneof("requirement_source")
        if source is None:
            raise InvalidArgument("requirement", "give a requirement or a requirement_id")
        given: RequirementDraft | str = (
            draft(request.requirement) if source == "requirement" else request.requirement_id
        )
        result = await self._gate.verify_token(given, request.wallet_address)
        return verify_answer(result, cached=result.cached)

    @unary
    async def CheckChannelAccess(
        self, request: pb.CheckChannelAccessRequest, context: Ctx
    ) -> pb.CheckChannelAccessResponse:
        # No account revision applies (see min_revision in the proto): any token reads the
        # balances from the chain now rather than from the cache.
        fresh = require_min_revision(request.min_revision, "min_revision") > 0
        as_of = datetime.now(UTC)
        decision = await self._gate.check_channel_access(
            request.channel_id,
            request.user_id,
            list(request.wallet_addresses),
            wallets_trusted=bool(request.wallet_addresses)
            and self._has_scope(context, TRUSTED_WALLETS_SCOPE),
            fresh=fresh,
        )
        return pb.CheckChannelAccessResponse(
            granted=decision.granted,
            as_of=convert.timestamp(as_of),
            results=[
                pb.RequirementResult(
                    requirement_id=r.requirement.id,
                    name=r.requirement.name,
                    verified=r.verified,
                    wallet_address=r.wallet_address,
                    balance=r.balance,
                    error=r.error,
                )
                for r in decision.results
            ],
        )

    @unary
    async def CreateTokenRequirement(
        self, request: pb.CreateTokenRequirementRequest, context: Ctx
    ) -> pb.CreateTokenRequirementResponse:
        if not request.HasField("requirement"):
            raise InvalidArgument("requirement", "is required")
        # proto3 cannot tell an unset `enabled` from false, and a requirement created disabled
        # by omission would leave its channel open: new requirements are enabled (the seed's
        # default); disable one with UpdateTokenRequirement and the mask "enabled".
        given = replace(draft(request.requirement), enabled=True)
        record = await self._gate.create_requirement(given)
        return pb.CreateTokenRequirementResponse(requirement=requirement(record))

    @unary
    async def UpdateTokenRequirement(
        self, request: pb.UpdateTokenRequirementRequest, context: Ctx
    ) -> pb.UpdateTokenRequirementResponse:
        if not request.HasField("requirement"):
            raise InvalidArgument("requirement", "is required")
        paths = list(request.update_mask.paths)
        if not paths:
            # AIP-134: no mask means the fields the request populated. proto3 cannot send a
            # false `enabled` or an empty string as "set", so leaving a field out never resets
            # it (a requirement is never disabled by omission); name it in the mask to clear it.
            paths = [
                f.name for f, _ in request.requirement.ListFields() if f.name in SETTABLE_FIELDS
            ]
        record = await self._gate.update_requirement(
            request.requirement.id, draft(request.requirement), paths
        )
        return pb.UpdateTokenRequirementResponse(requirement=requirement(record))

    @unary
    async def DeleteTokenRequirement(
        self, request: pb.DeleteTokenRequirementRequest, context: Ctx
    ) -> pb.DeleteTokenRequirementResponse:
        await self._gate.delete_requirement(request.id)
        return pb.DeleteTokenRequirementResponse()

    @unary
    async def ListTokenRequirements(
        self, request: pb.ListTokenRequirementsRequest, context: Ctx
    ) -> pb.ListTokenRequirementsResponse:
        records, token = await self._gate.list_requirements(
            request.channel_id, request.page_size, request.page_token
        )
        return pb.ListTokenRequirementsResponse(
            requirements=[requirement(r) for r in records], next_page_token=token
        )

    @unary
    async def CreateWalletChallenge(
        self, request: pb.CreateWalletChallengeRequest, context: Ctx
    ) -> pb.CreateWalletChallengeResponse:
        challenge = await self._gate.create_wallet_challenge(
            request.user_id, request.address, request.chain_id
        )
        return pb.CreateWalletChallengeResponse(
            message=challenge.message,
            nonce=challenge.nonce,
            issued_at=convert.timestamp(challenge.issued_at),
            expires_at=convert.timestamp(challenge.expires_at),
        )

    @unary
    async def VerifyWalletOwnership(
        self, request: pb.VerifyWalletOwnershipRequest, context: Ctx
    ) -> pb.VerifyWalletOwnershipResponse:
        link = await self._gate.verify_wallet_ownership(request.message, request.signature)
        return pb.VerifyWalletOwnershipResponse(
            user_id=link.user_id,
            address=link.address,
            chain_id=link.chain_id,
            verified_at=convert.timestamp(link.verified_at),
        )
