"""The domain's error hierarchy; the server turns each into one gRPC status in one place.

EntitlementsError
├── InvalidArgument          bad input: names the offending field (INVALID_ARGUMENT)
│   ├── UnknownPlan
│   ├── UnknownFeature
│   ├── UnknownLimit
│   ├── UnknownMetric
│   ├── UnknownNetwork       a network that is unknown or has no node configured
│   ├── UnsupportedCurrency  a currency the network cannot be paid in (no token configured)
│   └── InvalidAddress       not a 0x-prefixed 20-byte address, or a bad EIP-55 checksum
├── PermissionDenied         the caller may call the RPC, but not set this field (PERMISSION_DENIED)
├── NotFound                 a named object that must exist does not (NOT_FOUND)
├── AlreadyExists            same key, different payload (ALREADY_EXISTS)
│   └── IdempotencyKeyReused (e.g. Stripe's idempotency_error)
├── FailedPrecondition       the request is valid but the state forbids it (FAILED_PRECONDITION)
│   ├── UnknownPrice         a Stripe price no plan is configured for
│   ├── TokenContractMismatch  a token requirement's contract is not the declared token
│   └── StaleRevision        min_revision is newer than this replica and the database hold
├── Unavailable              a dependency (database, Stripe, a chain) is down (UNAVAILABLE)
└── CatalogError             the plan catalog file is invalid (raised at load, never at request)
"""

from __future__ import annotations


class EntitlementsError(Exception):
    """Base of every error the domain raises on purpose."""

    #: A stable machine-readable reason (google.rpc.ErrorInfo.reason), see error_reason.proto.
    reason: str = "ERROR_REASON_UNSPECIFIED"
    #: google.rpc.ErrorInfo.metadata: what a caller may branch on besides the reason.
    metadata: dict[str, str] | None = None

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        #: Extra google.rpc.ErrorInfo metadata (what the error is about), never secrets.
        self.metadata: dict[str, str] = dict(metadata or {})
        if reason is not None:
            self.reason = reason


class InvalidArgument(EntitlementsError):
    """A request field holds a value the service cannot accept."""

    reason = "ERROR_REASON_INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {message}", reason=reason)
        self.field = field
        self.description = message


class UnknownPlan(InvalidArgument):
    reason = "ERROR_REASON_UNKNOWN_PLAN"

    def __init__(self, field: str, plan_id: str) -> None:
        super().__init__(field, f"unknown plan {plan_id!r}")
        self.plan_id = plan_id


class UnknownFeature(InvalidArgument):
    reason = "ERROR_REASON_UNKNOWN_FEATURE"

    def __init__(self, field: str, feature: str) -> None:
        super().__init__(field, f"unknown feature {feature!r}")
        self.feature = feature


class UnknownLimit(InvalidArgument):
    reason = "ERROR_REASON_UNKNOWN_LIMIT"

    def __init__(self, field: str, limit: str) -> None:
        super().__init__(field, f"unknown limit {limit!r}")
        self.limit = limit


class UnknownMetric(InvalidArgument):
    reason = "ERROR_REASON_UNKNOWN_METRIC"

    def __init__(self, field: str, metric: str) -> None:
        super().__init__(field, f"unknown metric {metric!r}")
        self.metric = metric


class PermissionDenied(EntitlementsError):
    """The caller holds the RPC's scope but not the one a field it set needs (e.g. naming
    wallets for a user needs `tokengate:trusted-wallets`); names the field and the scope."""

    reason = "ERROR_REASON_PERMISSION_DENIED"

    def __init__(self, field: str, scope: str, message: str) -> None:
        super().__init__(f"{field}: {message}", metadata={"scope": scope})
        self.field = field
        self.scope = scope
        self.description = message


class NotFound(EntitlementsError):
    reason = "ERROR_REASON_NOT_FOUND"


class AlreadyExists(EntitlementsError):
    reason = "ERROR_REASON_ALREADY_EXISTS"


class FailedPrecondition(EntitlementsError):
    reason = "ERROR_REASON_FAILED_PRECONDITION"


class Unavailable(EntitlementsError):
    """A dependency is down; the caller may retry.

    `message` is what a caller is told; `detail`, when given, is what an operator needs (which
    database, where, the driver's error) and goes only to logs and the command line: `str()`
    of the error is the detail.
    """

    reason = "ERROR_REASON_DEPENDENCY_UNAVAILABLE"

    def __init__(
        self, message: str, *, reason: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail or self.message


class CatalogError(EntitlementsError):
    """The plan catalog is invalid; `key` is the dotted path of the offending entry."""

    reason = "ERROR_REASON_CATALOG_INVALID"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"plan catalog: {key}: {message}")
        self.key = key


class IdempotencyKeyReused(AlreadyExists):
    """An idempotency key was used before with other parameters (e.g. Stripe said so)."""

    reason = "ERROR_REASON_IDEMPOTENCY_KEY_REUSED"


class UnknownPrice(FailedPrecondition):
    """A Stripe price that no configured plan and interval maps to; never guessed."""

    def __init__(self, price_id: str) -> None:
        super().__init__(
            f"Stripe price {price_id!r} is not configured for any plan and interval "
            "(STRIPE_<PLAN>_<INTERVAL>_PRICE_ID)"
        )
        self.price_id = price_id


class TokenContractMismatch(FailedPrecondition):
    """The contract of a token requirement is not a token of the declared standard (no code at
    the address, an empty contract, another standard). Not retryable: the requirement, not the
    chain, must change. `field` names the request field when the caller sent the contract."""

    reason = "ERROR_REASON_TOKEN_CONTRACT_MISMATCH"

    def __init__(self, message: str, *, metadata: dict[str, str], field: str | None = None) -> None:
        super().__init__(message, metadata=metadata)
        self.field = field
        self.description = message


class StaleRevision(FailedPrecondition):
    """A check asked for `min_revision`, and the database has not reached it within the wait."""

    reason = "ERROR_REASON_STALE_REVISION"

    def __init__(self, account_id: str, min_revision: int, revision: int) -> None:
        super().__init__(
            f"account {account_id!r} is at revision {revision}, older than min_revision "
            f"{min_revision}: the database has no such revision (yet)"
        )
        self.metadata = {"min_revision": str(min_revision), "revision": str(revision)}


class UnknownNetwork(InvalidArgument):
    """A network (or chain id) the service does not know, or has no node configured for."""

    reason = "ERROR_REASON_UNKNOWN_NETWORK"


class InvalidAddress(InvalidArgument):
    """Not a 0x-prefixed 20-byte hex address, or mixed case that fails the EIP-55 checksum."""

    reason = "ERROR_REASON_INVALID_ADDRESS"


class UnsupportedCurrency(InvalidArgument):
    """A currency that is not ETH, USDC or USDT, or that cannot be paid on the network."""

    reason = "ERROR_REASON_UNSUPPORTED_CURRENCY"
