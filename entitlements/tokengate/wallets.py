"""Wallet ownership: issue an EIP-4361 challenge, verify the signed message, link the wallet.

Checked on verification: the grammar; domain, URI and version against this server's; the nonce
exists, is unused and unexpired; chain id, address and the whole text equal the challenge
issued; issued-at / expiration / not-before; then the signature: an EOA by recovering the
signer, a contract wallet by EIP-1271 on the challenge's chain (a revert rejects, an RPC error is
UNAVAILABLE). The nonce is spent in the same transaction that links, so a replay fails.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from eth_account import Account
from eth_account.messages import defunct_hash_message, encode_defunct

from adapters.chains import ChainMismatch, ChainReaders, ChainSettings, ChainUnavailable
from entitlements.errors import FailedPrecondition, InvalidArgument, Unavailable, UnknownNetwork
from entitlements.store.records import utcnow
from entitlements.store.tokengate_records import ChallengeRecord, WalletLinkRecord, WalletType
from entitlements.store.tokengate_repository import TokenGateStore
from entitlements.tokengate.requirements import normalize_address, require_id
from entitlements.tokengate.siwe import SiweError, SiweMessage, format_time, parse_time
from entitlements.tokengate.verifier import wrong_chain

__all__ = ["STATEMENT", "WalletOwnership"]

STATEMENT = "Link this wallet to your nchat account to unlock token-gated channels."
MAX_MESSAGE = 4096
#: Clocks differ: an issued-at or not-before this far in the future is still accepted.
CLOCK_SKEW = timedelta(seconds=60)


class WalletOwnership:
    def __init__(
        self,
        store: TokenGateStore,
        readers: ChainReaders,
        settings: ChainSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._readers = readers
        self._settings = settings
        self._clock = clock

    async def create_challenge(self, user_id: str, address: str, chain_id: int) -> ChallengeRecord:
        require_id(user_id, "user_id")
        checksummed = normalize_address(address, "address")
        if chain_id <= 0:
            raise InvalidArgument("chain_id", "is required (e.g. 1 for ethereum)")
        if self._settings.network_for_chain_id(chain_id) is None:
            raise UnknownNetwork("chain_id", f"unknown chain id {chain_id}")
        issued = self._clock().replace(microsecond=0)
        expires = issued + timedelta(seconds=self._settings.challenge_ttl_seconds)
        nonce = secrets.token_hex(16)
        message = SiweMessage(
            domain=self._settings.siwe_domain,
            address=checksummed,
            statement=STATEMENT,
            uri=self._settings.siwe_uri,
            chain_id=chain_id,
            nonce=nonce,
            issued_at=format_time(issued),
            expiration_time=format_time(expires),
        )
        record = ChallengeRecord(
            nonce=nonce,
            user_id=user_id,
            address=checksummed,
            chain_id=chain_id,
            message=message.to_text(),
            issued_at=issued,
            expires_at=expires,
        )
        await self._store.create_challenge(record)
        return record

    async def verify(self, message: str, signature: str) -> WalletLinkRecord:
        if not message:
            raise InvalidArgument("message", "is required")
        if len(message) > MAX_MESSAGE:
            raise InvalidArgument("message", f"at most {MAX_MESSAGE} characters")
        signature_bytes = _signature_bytes(signature)
        try:
            parsed = SiweMessage.parse(message)
        except SiweError as exc:
            raise InvalidArgument("message", f"not an EIP-4361 message: {exc}") from exc
        if parsed.domain != self._settings.siwe_domain:
            raise InvalidArgument(
                "message", f"domain {parsed.domain!r} is not this service's domain"
            )
        if parsed.uri != self._settings.siwe_uri:
            raise InvalidArgument("message", f"URI {parsed.uri!r} is not this service's URI")
        challenge = await self._store.get_challenge(parsed.nonce)
        if challenge is None:
            raise InvalidArgument("message", "unknown nonce: ask CreateWalletChallenge for one")
        if parsed.chain_id != challenge.chain_id:
            raise InvalidArgument(
                "message",
                f"chain id {parsed.chain_id} is not the challenge's chain id {challenge.chain_id}",
            )
        if parsed.address != challenge.address:
            raise InvalidArgument("message", "the address is not the challenge's address")
        if message != challenge.message:
            raise InvalidArgument("message", "the message is not the challenge issued, unchanged")
        now = self._clock()
        if challenge.used_at is not None:
            raise FailedPrecondition("the challenge was already used: ask for a new one")
        if now >= challenge.expires_at or (
            parsed.expiration_time is not None
            and now >= parse_time(parsed.expiration_time, "Expiration Time")
        ):
            raise FailedPrecondition("the challenge has expired: ask for a new one")
        if parse_time(parsed.issued_at, "Issued At") > now + CLOCK_SKEW:
            raise InvalidArgument("message", "issued in the future")
        if (
            parsed.not_before is not None
            and parse_time(parsed.not_before, "Not Before") > now + CLOCK_SKEW
        ):
            raise FailedPrecondition("the message is not valid yet (Not Before)")
        wallet_type = await self._check_signature(challenge, message, signature_bytes)
        link = WalletLinkRecord(
            user_id=challenge.user_id,
            address=challenge.address,
            chain_id=challenge.chain_id,
            wallet_type=wallet_type,
            verified_at=self._clock(),
        )
        return await self._store.link_wallet(challenge.nonce, link)

    async def _check_signature(
        self, challenge: ChallengeRecord, message: str, signature: bytes
    ) -> WalletType:
        if len(signature) == 65:
            # Recovery is CPU work (pure-Python curve math without coincurve): off the loop.
            signer = await asyncio.to_thread(_recover, message, signature)
            if signer == challenge.address:
                return "eoa"
        network = self._settings.network_for_chain_id(challenge.chain_id)
        reader = None if network is None else self._readers.by_chain_id(challenge.chain_id)
        if reader is None:
            raise InvalidArgument(
                "signature",
                "not signed by the address; a contract wallet (EIP-1271) can only be checked "
                f"on a configured network, and chain {challenge.chain_id} is not configured",
            )
        try:
            valid = await reader.is_valid_signature(
                challenge.address, defunct_hash_message(text=message), signature
            )
        except ChainUnavailable as exc:
            raise Unavailable(f"cannot ask the contract wallet: {exc}") from exc
        except ChainMismatch as exc:
            raise wrong_chain(exc) from exc
        if not valid:
            raise InvalidArgument(
                "signature", "not signed by the address, and no contract wallet there accepts it"
            )
        return "contract"


def _recover(message: str, signature: bytes) -> str | None:
    try:
        return str(Account.recover_message(encode_defunct(text=message), signature=signature))
    except Exception:  # a malformed signature (bad v, s out of range) is simply not a match
        return None


def _signature_bytes(signature: str) -> bytes:
    if not signature:
        raise InvalidArgument("signature", "is required")
    text = signature[2:] if signature.startswith(("0x", "0X")) else signature
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise InvalidArgument("signature", "is not hex") from None
    if not data or len(data) > 2048:
        raise InvalidArgument("signature", "must be 1 to 2048 bytes")
    return data
