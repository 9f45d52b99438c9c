"""The hot path: cached checks answered on gRPC's handler thread, from memory, as bytes.

Each function here takes a decoded request (and its bytes) and returns the serialized answer,
or None when the answer needs the event loop: an account or counter not in memory (or stale),
a `min_revision` newer than the cache, or anything wrong with the request. None hands the call
to the servicer on the loop, which loads what is missing and words every error exactly as it
always has; this path only ever answers what the servicer would answer from the same memory.

Answers are kept serialized: per (account, feature) for `CanUseFeature`, per account for
`GetEntitlements`, per (account, limit) and counter value for `CheckLimit`, per cached chain
read for `VerifyToken`, each tagged with the exact cached value it was built from (the
`AccountEntitlements` object itself, compared by identity: a reload, even of the same
revision, builds a new answer). The kept maps are plain dicts: one `get` or one store is atomic
under the GIL, their values are immutable tuples replaced whole, and a map that grows past its
bound is cleared (a race loses a kept answer, never returns a wrong one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import token_gate_service_pb2 as gate_pb
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb

from entitlements.errors import EntitlementsError
from entitlements.policies import Catalog
from entitlements.server.entitlements_servicer import (
    MAX_CHECKS,
    entitlements_answer,
    feature_answer,
    minimum_plan_answer,
)
from entitlements.server.token_gate_servicer import draft, verify_answer
from entitlements.server.usage_servicer import limit_answer
from entitlements.service import EntitlementService
from entitlements.state import AccountEntitlements
from entitlements.tokengate import TokenGate
from entitlements.tokengate.requirements import normalize_address, validate_requirement
from entitlements.usage.ledger import UsageLedger
from entitlements.usage.periods import current_period

__all__ = ["HotPath"]

K = TypeVar("K")
V = TypeVar("V")

#: Kept answers per map before it is cleared (each a few hundred bytes).
MAX_KEPT = 100_000
#: Requests longer than this are not kept as keys (a caller could fill memory with big ones).
MAX_KEPT_REQUEST_BYTES = 512

#: (request, its bytes) -> the serialized answer, or None for the loop to answer.
Fast = Callable[[Any, bytes], bytes | None]


def _keep(kept: dict[K, V], key: K, value: V) -> None:
    if len(kept) >= MAX_KEPT:
        kept.clear()
    kept[key] = value


class HotPath:
    """The fast answers of one server's cached checks."""

    def __init__(
        self,
        service: EntitlementService,
        catalog: Catalog,
        ledger: UsageLedger | None,
        gate: TokenGate | None,
    ) -> None:
        self._service = service
        self._peek = service.cache.peek
        self._catalog = catalog
        self._features = catalog.features
        self._limits = catalog.limits
        self._ledger = ledger
        self._gate = gate
        self._feature_answers: dict[tuple[str, str], tuple[AccountEntitlements, bytes]] = {}
        self._entitlement_answers: dict[str, tuple[AccountEntitlements, bytes]] = {}
        self._limit_answers: dict[tuple[str, str], tuple[AccountEntitlements, int, bytes]] = {}
        self._requirements: dict[bytes, tuple[Any, str] | None] = {}
        self._verifications: dict[object, tuple[float, bytes]] = {}

    def methods(self) -> dict[str, Fast]:
        """The fast answer of each hot RPC, by "Service/Method"."""
        found: dict[str, Fast] = {
            "EntitlementsService/CanUseFeature": self.can_use_feature,
            "EntitlementsService/CheckFeatures": self.check_features,
            "EntitlementsService/CheckMinimumPlan": self.check_minimum_plan,
            "EntitlementsService/GetEntitlements": self.get_entitlements,
        }
        if self._ledger is not None:
            found["UsageService/CheckLimit"] = self.check_limit
        if self._gate is not None:
            found["TokenGateService/VerifyToken"] = self.verify_token
        return found

    def _cached(self, account_id: str, min_revision: int) -> AccountEntitlements | None:
        # Only ids the loop validated and loaded are in the cache: a miss covers a bad id too.
        ent = self._peek(account_id)
        if ent is None or not 0 <= min_revision <= ent.revision:
            return None
        return ent

    def can_use_feature(self, request: ent_pb.CanUseFeatureRequest, raw: bytes) -> bytes | None:
        account_id = request.account_id
        feature = request.feature
        ent = self._cached(account_id, request.min_revision)
        if ent is None:
            return None
        key = (account_id, feature)
        kept = self._feature_answers.get(key)
        if kept is not None and kept[0] is ent:
            return kept[1]
        decision = ent.effective.decisions.get(feature)
        if decision is None or feature not in self._features:
            return None
        data = feature_answer(feature, decision, ent).SerializeToString()
        _keep(self._feature_answers, key, (ent, data))
        return data

    def check_features(self, request: ent_pb.CheckFeaturesRequest, raw: bytes) -> bytes | None:
        checks = request.checks
        if len(checks) > MAX_CHECKS:
            return None
        response = ent_pb.CheckFeaturesResponse()
        add = response.results.add
        for check in checks:
            feature = check.feature
            ent = self._cached(check.account_id, check.min_revision)
            if ent is None or feature not in self._features:
                return None
            decision = ent.effective.decisions.get(feature)
            if decision is None:
                return None
            add(item=feature_answer(feature, decision, ent))
        return response.SerializeToString()

    def check_minimum_plan(
        self, request: ent_pb.CheckMinimumPlanRequest, raw: bytes
    ) -> bytes | None:
        ent = self._cached(request.account_id, request.min_revision)
        if ent is None:
            return None
        try:
            minimum = self._catalog.plan(request.minimum_plan_id, field="minimum_plan_id")
        except EntitlementsError:
            return None
        return minimum_plan_answer(self._catalog, ent, minimum.id).SerializeToString()

    def get_entitlements(self, request: ent_pb.GetEntitlementsRequest, raw: bytes) -> bytes | None:
        account_id = request.account_id
        ent = self._cached(account_id, request.min_revision)
        if ent is None:
            return None
        kept = self._entitlement_answers.get(account_id)
        if kept is not None and kept[0] is ent:
            return kept[1]
        data = entitlements_answer(self._catalog, ent).SerializeToString()
        _keep(self._entitlement_answers, account_id, (ent, data))
        return data

    def check_limit(self, request: usage_pb.CheckLimitRequest, raw: bytes) -> bytes | None:
        assert self._ledger is not None
        info = self._limits.get(request.limit)
        if info is None:
            return None
        account_id = request.account_id
        ent = self._cached(account_id, request.min_revision)
        if ent is None:
            return None
        if request.HasField("current"):
            current: int | None = request.current
            if current is None or current < 0:
                return None
        elif info.metric is None:
            return None
        else:
            period = current_period(self._service.now()) if info.monthly else ""
            current = self._ledger.peek((account_id, info.metric, period))
            if current is None:
                return None
        key = (account_id, request.limit)
        kept = self._limit_answers.get(key)
        if kept is not None and kept[0] is ent and kept[1] == current:
            return kept[2]
        data = limit_answer(ent, info.key, current).SerializeToString()
        _keep(self._limit_answers, key, (ent, current, data))
        return data

    def verify_token(self, request: gate_pb.VerifyTokenRequest, raw: bytes) -> bytes | None:
        """An inline requirement whose answer the verifier holds (a stored requirement is read
        from the database: the loop answers)."""
        assert self._gate is not None
        if request.WhichOneof("requirement_source") != "requirement":
            return None
        try:
            parsed = self._requirements[raw]
        except KeyError:  # validated once per distinct request (an address checksum hashes)
            parsed = self._parse_requirement(request)
            if len(raw) <= MAX_KEPT_REQUEST_BYTES:
                _keep(self._requirements, raw, parsed)
        if parsed is None:
            return None
        record, wallet = parsed
        cached = self._gate.verifier.peek(record, wallet)
        if cached is None:
            return None
        key, read_at, result = cached
        kept = self._verifications.get(key)
        if kept is not None and kept[0] == read_at:
            return kept[1]
        data = verify_answer(result, cached=True).SerializeToString()
        _keep(self._verifications, key, (read_at, data))
        return data

    def _parse_requirement(self, request: gate_pb.VerifyTokenRequest) -> tuple[Any, str] | None:
        assert self._gate is not None
        try:
            wallet = normalize_address(request.wallet_address, "wallet_address")
            record = validate_requirement(
                draft(request.requirement), self._gate.settings, require_channel=False
            )
        except EntitlementsError:
            return None
        return record, wallet
