"""TokenGate: the token-gating domain service the servicer calls (requirements, checks,
channel access, wallet ownership), with the chain readers behind it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation

from cachetools import TTLCache

from adapters.chains import (
    ChainMismatch,
    ChainReaders,
    ChainSettings,
    ChainUnavailable,
    ContractMismatch,
    NetworkNotConfigured,
)
from entitlements.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TokenContractMismatch,
    Unavailable,
)
from entitlements.store.records import utcnow
from entitlements.store.tokengate_records import (
    AccessGrantRecord,
    ChallengeRecord,
    RequirementRecord,
    WalletLinkRecord,
)
from entitlements.store.tokengate_repository import TokenGateStore
from entitlements.tokengate.requirements import (
    RequirementDraft,
    check_update_paths,
    merge,
    normalize_address,
    require_id,
    validate_requirement,
)
from entitlements.tokengate.verifier import (
    TokenVerifier,
    Verification,
    not_the_token,
    wrong_chain,
)
from entitlements.tokengate.wallets import WalletOwnership
from entitlements.watch import TokenAccessChanged, TokenAccessFeed

__all__ = ["TRUSTED_WALLETS_SCOPE", "AccessDecision", "RequirementResult", "TokenGate"]

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_WALLETS = 50
#: The scope a caller needs to name wallets whose ownership it verified itself.
TRUSTED_WALLETS_SCOPE = "tokengate:trusted-wallets"


@dataclass(frozen=True, slots=True)
class RequirementResult:
    requirement: RequirementRecord
    verified: bool
    wallet_address: str = ""
    balance: str = ""
    error: str = ""
    #: True when no wallet could be checked because the chain is down.
    unknown: bool = False
    #: Set when the requirement's contract is not its token (nobody can meet it).
    broken: TokenContractMismatch | None = None


@dataclass(frozen=True, slots=True)
class AccessDecision:
    granted: bool
    results: tuple[RequirementResult, ...]


class TokenGate:
    """Token gating over a `TokenGateStore` and the configured chains."""

    def __init__(
        self,
        store: TokenGateStore,
        readers: ChainReaders,
        settings: ChainSettings,
        *,
        verifier: TokenVerifier | None = None,
        wallets: WalletOwnership | None = None,
        feed: TokenAccessFeed | None = None,
    ) -> None:
        self.store = store
        self.readers = readers
        self.settings = settings
        self.verifier = verifier or TokenVerifier(
            readers,
            ttl_seconds=settings.verify_cache_ttl_seconds,
            stale_grace_seconds=settings.stale_grace_seconds,
        )
        self.wallets = wallets or WalletOwnership(store, readers, settings)
        self.feed = feed or TokenAccessFeed()
        # The last decision stored per (channel, user, wallets): an identical answer is not
        # written again within the cache TTL, so a cached check costs no database write, and
        # another replica's change to the row is overwritten by ours at most a TTL late.
        self._recorded: TTLCache[tuple[str, str, tuple[str, ...]], bool] = TTLCache(
            100_000, ttl=max(settings.verify_cache_ttl_seconds, 1.0)
        )

    async def start(self) -> None:
        """Check every configured node serves its network's chain (refuse to start if not)."""
        try:
            await self.readers.connect()
        except ChainMismatch as exc:
            raise FailedPrecondition(f"refusing to start: {exc}") from exc

    async def close(self) -> None:
        await self.readers.close()

    # -- requirements --

    async def create_requirement(self, draft: RequirementDraft) -> RequirementRecord:
        record = validate_requirement(draft, self.settings)
        await self.check_contract(record)
        now = utcnow()
        record = replace(record, id=str(uuid.uuid4()), created_at=now, updated_at=now)
        return await self.store.create_requirement(record)

    async def check_contract(self, record: RequirementRecord) -> None:
        """Refuse a requirement whose contract is not a token of its standard
        (TokenContractMismatch naming `requirement.contract_address`); UNAVAILABLE when the
        chain cannot say, so nothing unchecked is stored."""
        try:
            reader = self.readers.get(record.network)
            await reader.check_token(record.contract_address, record.token_type)
        except ContractMismatch as exc:
            raise not_the_token(exc, record, "requirement.contract_address") from exc
        except ChainMismatch as exc:
            raise wrong_chain(exc) from exc
        except (ChainUnavailable, NetworkNotConfigured) as exc:
            raise Unavailable(f"cannot check the token contract: {exc}") from exc

    async def get_requirement(self, requirement_id: str, field: str = "id") -> RequirementRecord:
        require_id(requirement_id, field)
        record = await self.store.get_requirement(requirement_id)
        if record is None:
            raise NotFound(f"token requirement {requirement_id!r} does not exist")
        return record

    async def update_requirement(
        self, requirement_id: str, change: RequirementDraft, paths: Sequence[str]
    ) -> RequirementRecord:
        """Change the fields named in `paths` (``*`` for all); no paths change nothing."""
        require_id(requirement_id, "requirement.id")
        settable = check_update_paths(paths)
        current = await self.get_requirement(requirement_id, "requirement.id")
        if not settable:
            return current
        merged = merge(RequirementDraft.of(current), change, settable)
        record = validate_requirement(merged, self.settings)
        if (record.network, record.contract_address, record.token_type) != (
            current.network,
            current.contract_address,
            current.token_type,
        ):
            await self.check_contract(record)
        updated = replace(record, id=current.id, created_at=current.created_at, updated_at=utcnow())
        return await self.store.update_requirement(updated)

    async def delete_requirement(self, requirement_id: str) -> None:
        require_id(requirement_id, "id")
        if not await self.store.delete_requirement(requirement_id):
            raise NotFound(f"token requirement {requirement_id!r} does not exist")

    async def list_requirements(
        self, channel_id: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[RequirementRecord], str]:
        require_id(channel_id, "channel_id")
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_page_token(page_token, channel_id) if page_token else None
        rows = await self.store.list_requirements(channel_id, limit=size + 1, after=after)
        page, more = rows[:size], len(rows) > size
        token = _encode_page_token(channel_id, page[-1]) if more and page else ""
        return page, token

    # -- checks --

    async def verify_token(
        self, requirement: RequirementRecord | RequirementDraft | str, wallet_address: str
    ) -> Verification:
        """Check a wallet against an inline requirement (a draft, validated here) or a stored
        one (an id)."""
        wallet = normalize_address(wallet_address, "wallet_address")
        if isinstance(requirement, str):
            record = await self.get_requirement(requirement, "requirement_id")
        elif isinstance(requirement, RequirementDraft):
            record = validate_requirement(requirement, self.settings, require_channel=False)
        else:
            record = requirement
        return await self.verifier.verify(record, wallet)

    async def check_channel_access(
        self,
        channel_id: str,
        user_id: str = "",
        wallet_addresses: Sequence[str] = (),
        *,
        wallets_trusted: bool = False,
        fresh: bool = False,
    ) -> AccessDecision:
        """Every enabled requirement of the channel over the user's verified wallets and the
        given ones. Granted when all are met (a channel without requirements is open). A
        requirement the chain cannot answer makes the whole check UNAVAILABLE unless another
        requirement is already unmet (then the answer is a denial either way).

        Naming wallets is a claim that they are the user's: it is honoured only when
        `wallets_trusted` (the caller verified ownership itself), else PermissionDenied."""
        require_id(channel_id, "channel_id")
        if user_id:
            require_id(user_id, "user_id")
        if wallet_addresses and not wallets_trusted:
            raise PermissionDenied(
                "wallet_addresses",
                TRUSTED_WALLETS_SCOPE,
                f"naming wallets needs the scope {TRUSTED_WALLETS_SCOPE!r} (a caller that "
                "verified their ownership itself); otherwise send only user_id and the user's "
                "proved wallets (VerifyWalletOwnership) are checked",
            )
        if len(wallet_addresses) > MAX_WALLETS:
            raise InvalidArgument("wallet_addresses", f"at most {MAX_WALLETS} wallets")
        given = list(
            dict.fromkeys(
                normalize_address(a, f"wallet_addresses[{i}]")
                for i, a in enumerate(wallet_addresses)
            )
        )
        if not user_id and not given:
            raise InvalidArgument("user_id", "give a user_id or wallet_addresses")
        links = await self.store.wallets_of(user_id) if user_id else []
        requirements = await self.store.list_requirements(channel_id, enabled_only=True)
        results = await asyncio.gather(
            *(self._check_requirement(r, given, links, fresh=fresh) for r in requirements)
        )
        broken = [r.broken for r in results if r.broken is not None]
        if broken:
            # A requirement nobody can meet denies the channel; the denial is stored (so the
            # sweep revokes an earlier grant) and the caller learns the channel is misconfigured.
            denial = AccessDecision(granted=False, results=tuple(results))
            await self._record(channel_id, user_id, tuple(given), denial)
            raise broken[0]
        unknown = [r for r in results if r.unknown]
        unmet = [r for r in results if not r.verified and not r.unknown]
        if unknown and not unmet:
            raise Unavailable(f"cannot read the chain for requirement(s): {unknown[0].error}")
        granted = not unknown and not unmet
        decision = AccessDecision(granted=granted, results=tuple(results))
        await self._record(channel_id, user_id, tuple(given), decision)
        return decision

    async def recheck(self, access: AccessGrantRecord) -> AccessDecision:
        """Check a stored access again with fresh chain reads (the sweep; a transfer of one of
        its wallets' tokens): a changed answer is stored and published to watchers."""
        # The wallets stored with an access were named by a trusted caller.
        return await self.check_channel_access(
            access.channel_id,
            access.user_id,
            access.wallet_addresses,
            wallets_trusted=True,
            fresh=True,
        )

    async def _check_requirement(
        self,
        requirement: RequirementRecord,
        given: list[str],
        links: list[WalletLinkRecord],
        *,
        fresh: bool,
    ) -> RequirementResult:
        chain_id = self.settings.chain_id(requirement.network)
        wallets = list(
            dict.fromkeys(
                [
                    *given,
                    # An EOA signs on every chain; a contract wallet is only its chain's.
                    *(
                        link.address
                        for link in links
                        if link.wallet_type == "eoa" or link.chain_id == chain_id
                    ),
                ]
            )
        )
        if not wallets:
            return RequirementResult(
                requirement,
                False,
                error="no wallet to check: link one with CreateWalletChallenge",
            )
        outcomes = await asyncio.gather(
            *(self.verifier.verify(requirement, w, fresh=fresh) for w in wallets),
            return_exceptions=True,
        )
        best: tuple[str, Verification] | None = None
        failure: BaseException | None = None
        for wallet, outcome in zip(wallets, outcomes, strict=True):
            if isinstance(outcome, Unavailable):
                failure = outcome
                continue
            if isinstance(outcome, TokenContractMismatch):
                return RequirementResult(requirement, False, error=outcome.message, broken=outcome)
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome.verified:
                return RequirementResult(requirement, True, wallet, outcome.balance)
            if best is None or _amount(outcome.balance) > _amount(best[1].balance):
                best = (wallet, outcome)
        if failure is not None:
            return RequirementResult(requirement, False, error=str(failure), unknown=True)
        assert best is not None
        return RequirementResult(requirement, False, "", best[1].balance, best[1].error)

    async def _record(
        self, channel_id: str, user_id: str, given: tuple[str, ...], decision: AccessDecision
    ) -> None:
        key = (channel_id, user_id, tuple(sorted(given)))
        if self._recorded.get(key) == decision.granted:
            return
        previous = await self.store.record_access(channel_id, user_id, given, decision.granted)
        self._recorded[key] = decision.granted
        if previous is not None and previous != decision.granted:
            log.info(
                "token access to channel %s %s for user %r wallets %s",
                channel_id,
                "granted" if decision.granted else "revoked",
                user_id,
                list(given),
            )
            await self.feed.announce(
                TokenAccessChanged(
                    channel_id=channel_id,
                    user_id=user_id,
                    wallet_addresses=key[2],
                    granted=decision.granted,
                    unmet_requirement_ids=tuple(
                        r.requirement.id for r in decision.results if not r.verified
                    ),
                )
            )

    # -- wallets --

    async def create_wallet_challenge(
        self, user_id: str, address: str, chain_id: int
    ) -> ChallengeRecord:
        return await self.wallets.create_challenge(user_id, address, chain_id)

    async def verify_wallet_ownership(self, message: str, signature: str) -> WalletLinkRecord:
        link = await self.wallets.verify(message, signature)
        # The user's wallets changed: their stored decisions must be re-made, not remembered.
        for key in [k for k in self._recorded if k[1] == link.user_id]:
            self._recorded.pop(key, None)
        return link


def _amount(balance: str) -> Decimal:
    try:
        return Decimal(balance or "0")
    except InvalidOperation:
        return Decimal(0)


def _encode_page_token(channel_id: str, last: RequirementRecord) -> str:
    payload = json.dumps({"c": channel_id, "t": last.created_at.isoformat(), "i": last.id})
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _decode_page_token(token: str, channel_id: str) -> tuple[datetime, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        created_at, last_id = datetime.fromisoformat(data["t"]), str(data["i"])
        token_channel = data["c"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument("page_token", "is not a token from an earlier call") from None
    if token_channel != channel_id:
        raise InvalidArgument("page_token", "belongs to another channel")
    return created_at, last_id
