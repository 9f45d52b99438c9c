"""Token gating: requirements, on-chain verification (cached, single-flight, stale grace),
channel access, periodic re-verification and wallet ownership (Sign-In with Ethereum)."""

from __future__ import annotations

from entitlements.tokengate.requirements import RequirementDraft, validate_requirement
from entitlements.tokengate.reverify import Reverifier, SweepReport
from entitlements.tokengate.service import (
    TRUSTED_WALLETS_SCOPE,
    AccessDecision,
    RequirementResult,
    TokenGate,
)
from entitlements.tokengate.transfers import TransferListener
from entitlements.tokengate.verifier import TokenVerifier, Verification
from entitlements.tokengate.wallets import WalletOwnership

__all__ = [
    "TRUSTED_WALLETS_SCOPE",
    "AccessDecision",
    "RequirementDraft",
    "RequirementResult",
    "Reverifier",
    "SweepReport",
    "TokenGate",
    "TokenVerifier",
    "TransferListener",
    "Verification",
    "WalletOwnership",
    "validate_requirement",
]
