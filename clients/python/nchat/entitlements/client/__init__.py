"""A typed client of the nchat entitlements service, with optional local evaluation.

    from nchat.entitlements.client import EntitlementsClient

    with EntitlementsClient("entitlements:50051", token="...", local_evaluation=True) as client:
        if client.can_use_feature("ws-1", "customBranding").allowed:
            ...

Everything public is re-exported here; the underscore modules are private.
"""

from __future__ import annotations

import contextlib as _contextlib

from nchat.entitlements.client._async import AsyncEntitlementsClient
from nchat.entitlements.client._event_payloads import (
    CryptoPaymentConfirmed,
    CryptoPaymentReversed,
    CryptoPaymentUnderpaid,
    PaymentFailed,
    SubscriptionActivated,
    SubscriptionCanceled,
    SubscriptionChanged,
    SubscriptionPastDue,
    TokenAccessChanged,
)
from nchat.entitlements.client._events import (
    Event,
    EventVerificationError,
    RenewalUpcoming,
    ThresholdCrossed,
    verify_event,
)
from nchat.entitlements.client._exceptions import (
    AlreadyExists,
    BufferFull,
    DeadlineExceeded,
    EntitlementsError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    ReporterClosed,
    ReporterError,
    ServerError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from nchat.entitlements.client._models import (
    AnswerSource,
    Entitlements,
    FeatureCheck,
    FeatureDecisionReason,
    FeatureInfo,
    Limit,
    LimitCheck,
    LocalState,
    MetricUsage,
    MinimumPlanCheck,
    Plan,
    PlanCatalog,
    Price,
    SubscriptionStatus,
    UpgradePath,
    Usage,
    UsageEventResult,
    UsageEventStatus,
    UsageLevel,
)
from nchat.entitlements.client._options import ClientOptions
from nchat.entitlements.client._requests import UsageEvent
from nchat.entitlements.client._retry import RetryPolicy
from nchat.entitlements.client._sync import EntitlementsClient
from nchat.entitlements.client._usage import (
    AsyncUsageReporter,
    FailedUsage,
    UndeliveredUsage,
    UsageReporter,
)

__all__ = [
    "AlreadyExists",
    "AnswerSource",
    "AsyncEntitlementsClient",
    "AsyncUsageReporter",
    "BufferFull",
    "ClientOptions",
    "CryptoPaymentConfirmed",
    "CryptoPaymentReversed",
    "CryptoPaymentUnderpaid",
    "DeadlineExceeded",
    "Entitlements",
    "EntitlementsClient",
    "EntitlementsError",
    "Event",
    "EventVerificationError",
    "FailedPrecondition",
    "FailedUsage",
    "FeatureCheck",
    "FeatureDecisionReason",
    "FeatureInfo",
    "InvalidArgument",
    "Limit",
    "LimitCheck",
    "LocalState",
    "MetricUsage",
    "MinimumPlanCheck",
    "NotFound",
    "Overloaded",
    "PaymentFailed",
    "PermissionDenied",
    "Plan",
    "PlanCatalog",
    "Price",
    "RenewalUpcoming",
    "ReporterClosed",
    "ReporterError",
    "RetryPolicy",
    "ServerError",
    "SubscriptionActivated",
    "SubscriptionCanceled",
    "SubscriptionChanged",
    "SubscriptionPastDue",
    "SubscriptionStatus",
    "ThresholdCrossed",
    "TokenAccessChanged",
    "Unauthenticated",
    "Unavailable",
    "UndeliveredUsage",
    "Unimplemented",
    "UpgradePath",
    "Usage",
    "UsageEvent",
    "UsageEventResult",
    "UsageEventStatus",
    "UsageLevel",
    "UsageReporter",
    "verify_event",
]

# Public objects claim this package as their home, as httpx does, so reprs and docs show
# `nchat.entitlements.client.FeatureCheck` rather than a private module.
__locals = locals()
for __name in __all__:
    if not __name.startswith("__") and hasattr(__locals[__name], "__module__"):
        # typing aliases (AnswerSource) have no settable __module__
        with _contextlib.suppress(AttributeError, TypeError):
            __locals[__name].__module__ = "nchat.entitlements.client"
