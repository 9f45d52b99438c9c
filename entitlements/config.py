"""Typed settings, read once from the environment at start; nothing else reads os.environ."""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from adapters.chains.config import ChainConfigError, ChainSettings
from adapters.stripe.config import StripeConfigError, StripeSettings
from entitlements.crypto.config import CryptoConfigError, CryptoSettings
from entitlements.envparse import env_float
from entitlements.events.settings import EventSettings, EventSettingsError
from entitlements.store.engine import DEFAULT_DATABASE_URL, normalize_url

#: Every scope a caller can hold; an RPC needs exactly one of them (health and reflection none).
#: `tokengate:trusted-wallets` is no RPC's: it lets a caller name wallets it verified itself.
SCOPES = frozenset(
    {
        "entitlements:read",
        "usage:write",
        "usage:read",
        "tokengate:read",
        "tokengate:write",
        "tokengate:trusted-wallets",
        "billing:write",
        "crypto:read",
        "crypto:write",
        "admin",
    }
)


_GRPC_PORT = 50051
_HTTP_PORT = 8080


class ConfigError(ValueError):
    """The configuration is invalid; the message names the variable or file key."""


@dataclass(frozen=True, slots=True)
class Caller:
    """A configured caller: who it is and what it may do."""

    name: str
    scopes: frozenset[str]


def token_digest(token: str) -> bytes:
    """Tokens are looked up by digest, so the table holds no secret and lookups leak no prefix."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with."""

    grpc_addr: str = "0.0.0.0:50051"
    http_addr: str = "0.0.0.0:8080"
    database_url: str = DEFAULT_DATABASE_URL
    dev_mode: bool = False
    #: sha256(token) -> caller
    callers: Mapping[bytes, Caller] = field(default_factory=dict)
    callers_file: Path | None = None
    #: How long a past_due subscription keeps its plan.
    past_due_grace: timedelta = timedelta(days=7)
    #: At most this many accounts are cached.
    cache_size: int = 200_000
    #: A cached account is reloaded from the database after this long, so replicas converge even
    #: when a change was made elsewhere; when the database is down the cached answer is kept.
    cache_ttl_seconds: float = 60.0
    #: Largest request or response, in bytes.
    max_message_bytes: int = 4 * 1024 * 1024
    #: In-flight calls finish within this many seconds of SIGTERM.
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    #: Chain nodes (ENTITLEMENTS_RPC_URL_*, INFURA_API_KEY, ALCHEMY_API_KEY) and token gating.
    chains: ChainSettings = field(default_factory=ChainSettings)
    #: Stripe (BillingService and the webhook shim); not configured by default.
    stripe: StripeSettings = field(default_factory=StripeSettings)
    #: Crypto payments (NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS, tokens, confirmation depths).
    crypto: CryptoSettings = field(default_factory=CryptoSettings)
    #: How long a usage counter read from the database is answered from memory (CheckLimit);
    #: this replica's own writes refresh it at once, other replicas' within this time.
    usage_counter_ttl_seconds: float = 1.0
    #: How long usage idempotency keys are kept: a retry within this window is counted once.
    usage_key_retention_seconds: float = 7 * 86400.0
    #: "uvloop" (default) or "asyncio".
    event_loop: str = "uvloop"
    #: Unary reads (calls that change nothing) handled at once; past it, reads are refused with
    #: RESOURCE_EXHAUSTED. Writes have their own budget, so neither kind can shed the other.
    max_in_flight_reads: int = 2000
    #: Unary writes (every call that is not a read) handled at once.
    max_in_flight_writes: int = 2000
    #: WatchEntitlements streams open at once (each holds a thread of its own pool while open).
    max_watchers: int = 10_000
    #: Threads of the gRPC server's unary pool: the hot checks run on them, and every other
    #: call waits on one while the event loop answers it (so this bounds such calls in flight).
    grpc_threads: int = 32
    #: How often each process polls the change feed (coherence across workers and replicas).
    change_feed_interval_seconds: float = 0.25
    #: On PostgreSQL, wake the change feed with LISTEN/NOTIFY (off for a pooler in transaction
    #: mode, which cannot LISTEN; the poll then carries every change).
    change_feed_listen: bool = True
    #: How long a check with `min_revision` waits for the database to reach it (well inside the
    #: clients' 0.5 s check deadline, so the caller gets STALE_REVISION, not DEADLINE_EXCEEDED).
    min_revision_wait_seconds: float = 0.2
    #: Share the gRPC port with other processes (set by `serve --workers N`).
    reuse_port: bool = False
    #: Accounts loaded into the cache before the server reports SERVING.
    warm_accounts: int = 10_000
    #: "text" (a terminal) or "json" (one object per line, for a log collector).
    log_format: str = "text"
    #: An RPC taking at least this long is logged (WARNING) with its caller and duration.
    slow_call_ms: float = 250.0
    #: Outbound events: endpoints (ENTITLEMENTS_EVENT_ENDPOINTS), retries, renewal notices.
    events: EventSettings = field(default_factory=EventSettings)
    #: Trace exporters ("otlp", "console"), from the standard OTEL_* variables; empty: no
    #: tracing (the default), see entitlements/observability/tracing.py.
    traces_exporters: tuple[str, ...] = ()
    #: OTLP transport: "grpc" (default) or "http/protobuf".
    traces_protocol: str = "grpc"
    #: PROMETHEUS_MULTIPROC_DIR: where `serve --workers N` keeps the workers' metrics (emptied at
    #: start); default a private temporary directory.
    metrics_dir: str | None = None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, require_callers: bool = True
    ) -> Settings:
        """Read the settings; `require_callers=False` for commands that authenticate nobody
        (migrate, report), which need neither a callers file nor dev mode."""
        env = os.environ if env is None else env
        dev_mode = _bool(env, "ENTITLEMENTS_DEV_MODE")
        callers_file = env.get("ENTITLEMENTS_CALLERS_FILE") or None
        callers: Mapping[bytes, Caller] = {}
        if dev_mode and callers_file:
            # Dev mode turns authentication off; beside a callers file it would silently win.
            raise ConfigError(
                "ENTITLEMENTS_DEV_MODE=1 and ENTITLEMENTS_CALLERS_FILE are both set: dev mode "
                "turns authentication off and would ignore the callers file. Unset "
                "ENTITLEMENTS_DEV_MODE to authenticate callers, or unset "
                "ENTITLEMENTS_CALLERS_FILE to run without authentication on a laptop"
            )
        if callers_file:
            callers = load_callers(Path(callers_file))
        elif not dev_mode and require_callers:
            raise ConfigError(
                "ENTITLEMENTS_CALLERS_FILE is not set: give a TOML file of callers, "
                "or set ENTITLEMENTS_DEV_MODE=1 to run without authentication on a laptop"
            )
        # The default of both budgets (reads, writes).
        max_in_flight = _number(env, "ENTITLEMENTS_MAX_IN_FLIGHT", 2000, minimum=1)
        # Dev mode opens everything, so it listens on loopback unless told otherwise.
        host = "127.0.0.1" if dev_mode else "0.0.0.0"
        try:
            database_url = normalize_url(
                env.get("ENTITLEMENTS_DATABASE_URL") or DEFAULT_DATABASE_URL
            )
        except ValueError as exc:
            raise ConfigError(f"ENTITLEMENTS_DATABASE_URL: {exc}") from exc
        return cls(
            grpc_addr=env.get("ENTITLEMENTS_GRPC_ADDR") or f"{host}:{_GRPC_PORT}",
            http_addr=env.get("ENTITLEMENTS_HTTP_ADDR") or f"{host}:{_HTTP_PORT}",
            database_url=database_url,
            dev_mode=dev_mode,
            callers=callers,
            callers_file=Path(callers_file) if callers_file else None,
            past_due_grace=timedelta(
                days=_number(env, "ENTITLEMENTS_PAST_DUE_GRACE_DAYS", 7.0, minimum=0)
            ),
            cache_size=int(_number(env, "ENTITLEMENTS_CACHE_SIZE", 200_000, minimum=1)),
            cache_ttl_seconds=_number(env, "ENTITLEMENTS_CACHE_TTL_SECONDS", 60.0, minimum=0),
            max_message_bytes=int(
                _number(env, "ENTITLEMENTS_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, minimum=1024)
            ),
            shutdown_grace_seconds=_number(
                env, "ENTITLEMENTS_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0
            ),
            log_level=(env.get("ENTITLEMENTS_LOG_LEVEL") or "INFO").upper(),
            chains=_chains(env),
            stripe=_stripe_settings(env),
            crypto=_crypto(env),
            usage_counter_ttl_seconds=_number(
                env, "ENTITLEMENTS_USAGE_COUNTER_TTL_SECONDS", 1.0, minimum=0
            ),
            max_in_flight_reads=int(
                _number(env, "ENTITLEMENTS_MAX_IN_FLIGHT_READS", max_in_flight, minimum=1)
            ),
            max_in_flight_writes=int(
                _number(env, "ENTITLEMENTS_MAX_IN_FLIGHT_WRITES", max_in_flight, minimum=1)
            ),
            max_watchers=int(_number(env, "ENTITLEMENTS_MAX_WATCHERS", 10_000, minimum=1)),
            grpc_threads=int(_number(env, "ENTITLEMENTS_GRPC_THREADS", 32, minimum=1)),
            change_feed_interval_seconds=_number(
                env, "ENTITLEMENTS_CHANGE_FEED_INTERVAL_SECONDS", 0.25, minimum=0.01
            ),
            change_feed_listen=_bool(env, "ENTITLEMENTS_CHANGE_FEED_LISTEN", default=True),
            min_revision_wait_seconds=_number(
                env, "ENTITLEMENTS_MIN_REVISION_WAIT_SECONDS", 0.2, minimum=0
            ),
            warm_accounts=int(_number(env, "ENTITLEMENTS_WARM_ACCOUNTS", 10_000, minimum=0)),
            log_format=_choice(env, "ENTITLEMENTS_LOG_FORMAT", ("text", "json")),
            slow_call_ms=_number(env, "ENTITLEMENTS_SLOW_CALL_MS", 250.0, minimum=0),
            event_loop=_choice(env, "ENTITLEMENTS_EVENT_LOOP", ("uvloop", "asyncio")),
            usage_key_retention_seconds=86400.0
            * _number(env, "ENTITLEMENTS_USAGE_KEY_RETENTION_DAYS", 7.0, minimum=1),
            events=_events(env),
            traces_exporters=_traces_exporters(env),
            traces_protocol=_traces_protocol(env),
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        )


_TRACE_EXPORTERS = ("otlp", "console")


def _traces_exporters(env: Mapping[str, str]) -> tuple[str, ...]:
    """Tracing is opt-in: on when OTEL_TRACES_EXPORTER names an exporter, or (unset) when an
    OTLP endpoint is given; OTEL_SDK_DISABLED=true turns it off whatever else says."""
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return ()
    named = env.get("OTEL_TRACES_EXPORTER")
    if named is None or not named.strip():
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ("otlp",) if endpoint else ()
    exporters = tuple(dict.fromkeys(n.strip().lower() for n in named.split(",") if n.strip()))
    if exporters == ("none",):
        return ()
    unknown = [n for n in exporters if n not in _TRACE_EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} "
            f"(expected {', '.join(_TRACE_EXPORTERS)} or none)"
        )
    return exporters


def _traces_protocol(env: Mapping[str, str]) -> str:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if protocol not in ("grpc", "http/protobuf"):
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported "
            "(expected grpc or http/protobuf)"
        )
    return protocol


def load_callers(path: Path) -> dict[bytes, Caller]:
    """Read the callers file: ``[[callers]]`` tables with ``name``, ``tokens`` and ``scopes``."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"ENTITLEMENTS_CALLERS_FILE: cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"ENTITLEMENTS_CALLERS_FILE: {path} is not valid TOML: {exc}") from exc
    entries = data.get("callers")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected one or more [[callers]] tables")
    callers: dict[bytes, Caller] = {}
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{path}: callers[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table")
        unknown = set(entry) - {"name", "tokens", "scopes"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: a non-empty string is required")
        if name in names:
            raise ConfigError(f"{where}.name: caller {name!r} is defined twice")
        names.add(name)
        tokens = entry.get("tokens")
        if not isinstance(tokens, list) or not tokens:
            raise ConfigError(f"{where}.tokens: a non-empty list of strings is required")
        scopes = entry.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ConfigError(f"{where}.scopes: a list of strings is required")
        for scope in scopes:
            if scope not in SCOPES:
                raise ConfigError(f"{where}.scopes: unknown scope {scope!r}")
        caller = Caller(name=name, scopes=frozenset(scopes))
        for j, token in enumerate(tokens):
            if not isinstance(token, str) or len(token) < 16:
                raise ConfigError(
                    f"{where}.tokens[{j}]: tokens are strings of 16 characters or more"
                )
            digest = token_digest(token)
            if digest in callers:
                raise ConfigError(f"{where}.tokens[{j}]: token is already used by another caller")
            callers[digest] = caller
    return callers


def _bool(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    value = env.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}: expected 1 or 0, got {value!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or choices[0]).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    return env_float(env, name, default, minimum=minimum, error=ConfigError)


def _crypto(env: Mapping[str, str]) -> CryptoSettings:
    try:
        return CryptoSettings.from_env(env)
    except CryptoConfigError as exc:
        raise ConfigError(str(exc)) from exc


def _stripe_settings(env: Mapping[str, str]) -> StripeSettings:
    try:
        return StripeSettings.from_env(env)
    except StripeConfigError as exc:
        raise ConfigError(str(exc)) from exc


def _chains(env: Mapping[str, str]) -> ChainSettings:
    try:
        return ChainSettings.from_env(env)
    except ChainConfigError as exc:
        raise ConfigError(str(exc)) from exc


def _events(env: Mapping[str, str]) -> EventSettings:
    try:
        return EventSettings.from_env(env)
    except EventSettingsError as exc:
        raise ConfigError(str(exc)) from exc
