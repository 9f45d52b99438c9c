"""Token gating's storage: requirements, SIWE challenges, wallet links and access grants."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, and_, delete, or_, select, update

from entitlements.errors import FailedPrecondition, NotFound
from entitlements.events.transitions import token_access_changed
from entitlements.store.events_repository import append_event
from entitlements.store.models import (
    TokenAccessGrant,
    TokenRequirement,
    WalletChallenge,
    WalletLink,
)
from entitlements.store.records import utcnow
from entitlements.store.sessions import Sessions
from entitlements.store.tokengate_records import (
    AccessGrantRecord,
    ChallengeRecord,
    RequirementRecord,
    TokenType,
    WalletLinkRecord,
    WalletType,
)

__all__ = ["REQUIREMENT_UPDATABLE", "TokenGateStore"]

#: What an update may change: not the id, nor the creation time.
REQUIREMENT_UPDATABLE = (
    "channel_id",
    "role_id",
    "feature_id",
    "token_type",
    "contract_address",
    "network",
    "min_balance",
    "token_ids",
    "min_token_count",
    "name",
    "description",
    "enabled",
)


class TokenGateStore(Sessions):
    """Token-gating rows in SQLite or PostgreSQL, on the same engine as `Store`.

    Every method runs in its own session and transaction, returns frozen records and raises
    `entitlements.errors.Unavailable` when the database cannot be reached.
    """

    # -- requirements --

    async def create_requirement(self, record: RequirementRecord) -> RequirementRecord:
        async with self._transaction(write=True) as session:
            session.add(_requirement_row(record))
        return record

    async def get_requirement(self, requirement_id: str) -> RequirementRecord | None:
        async with self._transaction() as session:
            row = await session.get(TokenRequirement, requirement_id)
            return None if row is None else _requirement_record(row)

    async def update_requirement(self, record: RequirementRecord) -> RequirementRecord:
        """Store every updatable field of `record`; NotFound if its id is unknown."""
        values: dict[str, Any] = {name: getattr(record, name) for name in REQUIREMENT_UPDATABLE}
        values["token_ids"] = list(record.token_ids)
        values["updated_at"] = record.updated_at
        async with self._transaction(write=True) as session:
            result = await session.execute(
                update(TokenRequirement)
                .where(TokenRequirement.id == record.id)
                .values(values)
                .returning(TokenRequirement.id)
            )
            if result.first() is None:
                raise NotFound(f"token requirement {record.id!r} does not exist")
        return record

    async def delete_requirement(self, requirement_id: str) -> bool:
        async with self._transaction(write=True) as session:
            result = await session.execute(
                delete(TokenRequirement)
                .where(TokenRequirement.id == requirement_id)
                .returning(TokenRequirement.id)
            )
            return result.first() is not None

    async def list_requirements(
        self,
        channel_id: str,
        *,
        limit: int | None = None,
        after: tuple[datetime, str] | None = None,
        enabled_only: bool = False,
    ) -> list[RequirementRecord]:
        """A channel's requirements by (created_at, id), starting after `after`."""
        query = select(TokenRequirement).where(TokenRequirement.channel_id == channel_id)
        if enabled_only:
            query = query.where(TokenRequirement.enabled.is_(True))
        if after is not None:
            created_at, last_id = after
            query = query.where(
                or_(
                    TokenRequirement.created_at > created_at,
                    and_(TokenRequirement.created_at == created_at, TokenRequirement.id > last_id),
                )
            )
        query = query.order_by(TokenRequirement.created_at, TokenRequirement.id)
        if limit is not None:
            query = query.limit(limit)
        async with self._transaction() as session:
            rows = (await session.execute(query)).scalars().all()
            return [_requirement_record(row) for row in rows]

    async def enabled_requirements(self, network: str) -> list[RequirementRecord]:
        """Every enabled requirement on `network`: the contracts whose transfers matter."""
        async with self._transaction() as session:
            rows = (
                (
                    await session.execute(
                        select(TokenRequirement).where(
                            TokenRequirement.network == network,
                            TokenRequirement.enabled.is_(True),
                        )
                    )
                )
                .scalars()
                .all()
            )
            return [_requirement_record(row) for row in rows]

    # -- wallet challenges and links --

    async def create_challenge(self, record: ChallengeRecord) -> None:
        async with self._transaction(write=True) as session:
            session.add(
                WalletChallenge(
                    nonce=record.nonce,
                    user_id=record.user_id,
                    address=record.address,
                    chain_id=record.chain_id,
                    message=record.message,
                    issued_at=record.issued_at,
                    expires_at=record.expires_at,
                    used_at=None,
                )
            )

    async def get_challenge(self, nonce: str) -> ChallengeRecord | None:
        async with self._transaction() as session:
            row = await session.get(WalletChallenge, nonce)
            if row is None:
                return None
            return ChallengeRecord(
                nonce=row.nonce,
                user_id=row.user_id,
                address=row.address,
                chain_id=row.chain_id,
                message=row.message,
                issued_at=row.issued_at,
                expires_at=row.expires_at,
                used_at=row.used_at,
            )

    async def link_wallet(self, nonce: str, link: WalletLinkRecord) -> WalletLinkRecord:
        """Spend the challenge's nonce and link the wallet, in ONE transaction: of two
        concurrent verifications of one message exactly one links; a replay fails. The wallet's
        links to other users are removed in the same transaction.

        Raises FailedPrecondition if the nonce was already used or has expired.
        """
        now = link.verified_at
        async with self._transaction(write=True) as session:
            spent = await session.execute(
                update(WalletChallenge)
                .where(
                    WalletChallenge.nonce == nonce,
                    WalletChallenge.used_at.is_(None),
                    WalletChallenge.expires_at > now,
                )
                .values(used_at=now)
                .returning(WalletChallenge.nonce)
            )
            if spent.first() is None:
                raise FailedPrecondition(
                    "the challenge was already used or has expired: ask for a new one"
                )
            # A wallet counts for one user: the last who proved it. Otherwise one holder could
            # sign for any number of accounts and open a channel to all of them. A contract
            # wallet is only its chain's, so another chain's link at the address stays.
            moved = delete(WalletLink).where(
                WalletLink.address == link.address, WalletLink.user_id != link.user_id
            )
            if link.wallet_type != "eoa":
                moved = moved.where(
                    or_(WalletLink.chain_id == link.chain_id, WalletLink.wallet_type == "eoa")
                )
            await session.execute(moved)
            insert = self._insert(WalletLink).values(
                user_id=link.user_id,
                address=link.address,
                chain_id=link.chain_id,
                wallet_type=link.wallet_type,
                verified_at=link.verified_at,
            )
            await session.execute(
                insert.on_conflict_do_update(
                    index_elements=[WalletLink.user_id, WalletLink.address],
                    set_={
                        "chain_id": insert.excluded.chain_id,
                        "wallet_type": insert.excluded.wallet_type,
                        "verified_at": insert.excluded.verified_at,
                    },
                )
            )
        return link

    async def wallets_of(self, user_id: str) -> list[WalletLinkRecord]:
        return await self._links(
            select(WalletLink)
            .where(WalletLink.user_id == user_id)
            .order_by(WalletLink.verified_at, WalletLink.id)
        )

    async def users_of_wallets(self, addresses: Sequence[str]) -> list[WalletLinkRecord]:
        """The links of `addresses` (checksummed) to users."""
        if not addresses:
            return []
        return await self._links(select(WalletLink).where(WalletLink.address.in_(addresses)))

    async def _links(self, statement: Select[WalletLink]) -> list[WalletLinkRecord]:
        async with self._transaction() as session:
            rows = (await session.execute(statement)).scalars().all()
            return [
                WalletLinkRecord(
                    user_id=r.user_id,
                    address=r.address,
                    chain_id=r.chain_id,
                    wallet_type=cast(WalletType, r.wallet_type),
                    verified_at=r.verified_at,
                )
                for r in rows
            ]

    async def delete_expired_challenges(self, before: datetime) -> int:
        async with self._transaction(write=True) as session:
            result = await session.execute(
                delete(WalletChallenge)
                .where(WalletChallenge.expires_at < before)
                .returning(WalletChallenge.nonce)
            )
            return len(result.all())

    # -- access grants --

    async def record_access(
        self,
        channel_id: str,
        user_id: str,
        wallet_addresses: Sequence[str],
        granted: bool,
        *,
        now: datetime | None = None,
    ) -> bool | None:
        """Store the decision; return the previous one (None if there was none).

        A decision that turns a stored one (granted to revoked or back) writes its
        `token_access.*` event in the same transaction. The stored row is read locked, so
        replicas re-verifying the same access at once turn it, and report it, once.
        """
        now = now or utcnow()
        wallets = sorted(set(wallet_addresses))
        key = ",".join(wallets)
        async with self._transaction(write=True) as session:
            stored = (
                await session.execute(
                    select(
                        TokenAccessGrant.id, TokenAccessGrant.granted, TokenAccessGrant.changed_at
                    )
                    .where(
                        TokenAccessGrant.channel_id == channel_id,
                        TokenAccessGrant.user_id == user_id,
                        TokenAccessGrant.wallets_key == key,
                    )
                    .with_for_update()
                )
            ).one_or_none()
            previous = None if stored is None else bool(stored.granted)
            insert = self._insert(TokenAccessGrant).values(
                channel_id=channel_id,
                user_id=user_id,
                wallets_key=key,
                wallet_addresses=wallets,
                granted=granted,
                checked_at=now,
                changed_at=now,
            )
            set_: dict[str, Any] = {"granted": insert.excluded.granted, "checked_at": now}
            if previous is not None and previous != granted:
                set_["changed_at"] = now
            await session.execute(
                insert.on_conflict_do_update(
                    index_elements=[
                        TokenAccessGrant.channel_id,
                        TokenAccessGrant.user_id,
                        TokenAccessGrant.wallets_key,
                    ],
                    set_=set_,
                )
            )
            if stored is not None and previous != granted:
                await append_event(
                    session,
                    token_access_changed(
                        channel_id=channel_id,
                        user_id=user_id,
                        wallet_addresses=wallets,
                        granted=granted,
                        grant_id=stored.id,
                        since_ms=int(stored.changed_at.timestamp() * 1000),
                        now=now,
                    ),
                )
        return previous

    async def granted_accesses(
        self, *, after_id: int = 0, limit: int = 500
    ) -> list[AccessGrantRecord]:
        """Granted accesses by id, for the re-verification sweep to page through."""
        async with self._transaction() as session:
            rows = (
                (
                    await session.execute(
                        select(TokenAccessGrant)
                        .where(TokenAccessGrant.granted.is_(True), TokenAccessGrant.id > after_id)
                        .order_by(TokenAccessGrant.id)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
            return [_grant_record(r) for r in rows]

    async def accesses_touching(
        self, channel_ids: Sequence[str], wallets: Sequence[str], user_ids: Sequence[str]
    ) -> list[AccessGrantRecord]:
        """The stored decisions (granted or not) in `channel_ids` that were made for one of
        `user_ids` or over one of `wallets` (given by a trusted caller): whom a transfer of
        those wallets' tokens may have changed."""
        if not channel_ids or not (wallets or user_ids):
            return []
        # wallets_key is the sorted, comma-joined checksummed addresses: a whole address (42
        # fixed characters) found in it is one of them.
        touching = [TokenAccessGrant.wallets_key.contains(w, autoescape=True) for w in wallets]
        if user_ids:
            touching.append(TokenAccessGrant.user_id.in_(user_ids))
        async with self._transaction() as session:
            rows = (
                (
                    await session.execute(
                        select(TokenAccessGrant)
                        .where(TokenAccessGrant.channel_id.in_(channel_ids), or_(*touching))
                        .order_by(TokenAccessGrant.id)
                    )
                )
                .scalars()
                .all()
            )
            return [_grant_record(r) for r in rows]

    # -- plumbing --


def _grant_record(r: TokenAccessGrant) -> AccessGrantRecord:
    return AccessGrantRecord(
        id=r.id,
        channel_id=r.channel_id,
        user_id=r.user_id,
        wallet_addresses=tuple(r.wallet_addresses),
        granted=r.granted,
        checked_at=r.checked_at,
        changed_at=r.changed_at,
    )


def _requirement_row(record: RequirementRecord) -> TokenRequirement:
    return TokenRequirement(
        id=record.id,
        channel_id=record.channel_id,
        role_id=record.role_id,
        feature_id=record.feature_id,
        token_type=record.token_type,
        contract_address=record.contract_address,
        network=record.network,
        min_balance=record.min_balance,
        token_ids=list(record.token_ids),
        min_token_count=record.min_token_count,
        name=record.name,
        description=record.description,
        enabled=record.enabled,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _requirement_record(row: TokenRequirement) -> RequirementRecord:
    return RequirementRecord(
        id=row.id,
        channel_id=row.channel_id,
        role_id=row.role_id,
        feature_id=row.feature_id,
        token_type=cast(TokenType, row.token_type),
        contract_address=row.contract_address,
        network=row.network,
        min_balance=row.min_balance,
        token_ids=tuple(row.token_ids),
        min_token_count=row.min_token_count,
        name=row.name,
        description=row.description,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
