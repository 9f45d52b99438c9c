"""Requests the two clients send, built in one place so the sync and asyncio clients agree."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc
from google.rpc import status_pb2

from nchat.entitlements.client import _convert
from nchat.entitlements.client._exceptions import EntitlementsError, error_from_status
from nchat.entitlements.client._models import FeatureCheck
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb

__all__ = ["UsageEvent"]

_CODES = {code.value[0]: code for code in grpc.StatusCode}
MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One usage increment for `report_usage`; a retry must reuse its `idempotency_key`."""

    account_id: str
    metric: str
    delta: int
    idempotency_key: str
    occurred_at: datetime | None = None
    enforce_limit: bool = False

    def to_proto(self) -> usage_pb.UsageEvent:
        msg = usage_pb.UsageEvent(
            account_id=self.account_id,
            metric=self.metric,
            delta=self.delta,
            idempotency_key=self.idempotency_key,
            enforce_limit=self.enforce_limit,
        )
        if self.occurred_at is not None:
            msg.occurred_at.FromDatetime(self.occurred_at)
        return msg


def valid_account_id(value: str) -> bool:
    """Whether the server would accept `value` as an account id (so it is safe to watch)."""
    return (
        bool(value)
        and len(value) <= MAX_ID_LENGTH
        and value.isprintable()
        and value.strip() == value
    )


def watch(accounts: Sequence[str]) -> ent_pb.WatchEntitlementsRequest:
    return ent_pb.WatchEntitlementsRequest(account_ids=accounts, send_initial=True)


def check_features(checks: Iterable[tuple[str, str]]) -> ent_pb.CheckFeaturesRequest:
    return ent_pb.CheckFeaturesRequest(
        checks=[ent_pb.CanUseFeatureRequest(account_id=a, feature=f) for a, f in checks]
    )


def check_features_results(
    response: ent_pb.CheckFeaturesResponse,
) -> list[FeatureCheck | EntitlementsError]:
    out: list[FeatureCheck | EntitlementsError] = []
    for result in response.results:
        if result.WhichOneof("response") == "item":
            out.append(_convert.feature_check(result.item))
        else:
            out.append(_status_error(result.error))
    return out


def _status_error(status: status_pb2.Status) -> EntitlementsError:
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return error_from_status(code, status.message, status)


def check_limit(
    account_id: str, limit: str, current: int | None, min_revision: int = 0
) -> usage_pb.CheckLimitRequest:
    request = usage_pb.CheckLimitRequest(
        account_id=account_id, limit=limit, min_revision=min_revision
    )
    if current is not None:
        request.current = current
    return request


def report_usage(events: Iterable[UsageEvent]) -> usage_pb.ReportUsageRequest:
    return usage_pb.ReportUsageRequest(events=[e.to_proto() for e in events])
