"""Logging set-up (`ENTITLEMENTS_LOG_FORMAT` text or json) and the per-RPC log line.

An RPC is logged only when it fails or is slow (`ENTITLEMENTS_SLOW_CALL_MS`), never on the happy
hot path: a log record costs more than the check it would describe.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CLIENT_ERRORS",
    "JsonFormatter",
    "configure_logging",
    "log_rpc",
    "set_caller_resolver",
    "set_slow_call_seconds",
]

rpc_log = logging.getLogger("entitlements.rpc")

#: Codes that say the caller sent something wrong (logged at INFO, not WARNING).
CLIENT_ERRORS = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "OUT_OF_RANGE",
        "CANCELLED",
        "RESOURCE_EXHAUSTED",
    }
)
#: Fields a record may carry (`extra=`) that the JSON format writes out.
_EXTRA_FIELDS = ("caller", "method", "code", "duration_ms", "account_id", "event_id", "status")

_slow_call_seconds = 0.25
_caller_resolver: Callable[[Any], str] = lambda metadata: "unknown"  # noqa: E731


def set_slow_call_seconds(seconds: float) -> None:
    global _slow_call_seconds
    _slow_call_seconds = seconds


def slow_call_seconds() -> float:
    return _slow_call_seconds


def set_caller_resolver(resolver: Callable[[Any], str]) -> None:
    """How an RPC's caller name is found from its metadata (set up with the server's callers)."""
    global _caller_resolver
    _caller_resolver = resolver


def log_rpc(service: str, method: str, code: str, seconds: float, metadata: Any) -> None:
    """One line for a failed or slow RPC: caller, method, code and duration."""
    slow = seconds >= _slow_call_seconds
    if code == "OK" and not slow:
        return
    if code == "OK" or code in CLIENT_ERRORS:
        level = logging.WARNING if slow else logging.INFO
    else:
        level = logging.WARNING
    if not rpc_log.isEnabledFor(level):
        return
    try:
        caller = _caller_resolver(metadata)
    except Exception:  # never let logging fail a call
        caller = "unknown"
    duration_ms = round(seconds * 1000, 3)
    rpc_log.log(
        level,
        "%s/%s %s in %.1f ms%s (caller %s)",
        service,
        method,
        code,
        duration_ms,
        " (slow)" if slow else "",
        caller,
        extra={
            "caller": caller,
            "method": f"{service}/{method}",
            "code": code,
            "duration_ms": duration_ms,
        },
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any RPC fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                body[name] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO", fmt: str = "text", *, force: bool = False) -> None:
    """Root logging to stderr: `text` for a terminal, `json` for a log collector. Like
    `logging.basicConfig`, it leaves a root logger that already has handlers alone unless
    `force` (an embedding program, or pytest, configured logging first)."""
    root = logging.getLogger()
    if root.handlers and not force:
        return
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # alembic announces each of its plugins at INFO on every start; the migrations it runs
    # (alembic.runtime.migration) stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
