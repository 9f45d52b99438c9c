"""OpenTelemetry traces, opt-in from the standard `OTEL_*` variables; off by default.

On (`configure_tracing` with `Settings.traces_exporters` not empty), the process gets an SDK
tracer provider exporting over OTLP (endpoint, headers, protocol from `OTEL_EXPORTER_OTLP_*`)
or to the console, and these parts make spans:

- every RPC: a gRPC server interceptor from opentelemetry-instrumentation-grpc
  (`aio_server_interceptors` for grpc.aio, `server_interceptors` for grpc's sync server), whose
  parent is the caller's W3C `traceparent` metadata;
- the HTTP shim (webhooks, /admin): `http_middleware`, parented by a `traceparent` header;
- chain reads: `chain_read_observer` wraps the adapters' per-round-trip observer;
- database writes: `instrument_engine` adds a span per INSERT, UPDATE or DELETE.

Off, each of these returns nothing or the object it was given: no interceptor, middleware or
event listener is installed, so the hot path creates no span object and pays nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc
    import grpc.aio
    from aiohttp import web
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from sqlalchemy.ext.asyncio import AsyncEngine

    from entitlements.config import Settings

__all__ = [
    "aio_server_interceptors",
    "chain_read_observer",
    "configure_tracing",
    "flush",
    "http_middleware",
    "instrument_engine",
    "server_interceptors",
    "tracing_enabled",
]

log = logging.getLogger(__name__)

_SCOPE = "entitlements"
_DEFAULT_SERVICE_NAME = "nchat-entitlements"
#: Probes and scrapes come every few seconds and say nothing about a request's path.
_UNTRACED_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/favicon.ico"})
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "UPSERT", "REPLACE"})
_MAX_STATEMENT_CHARS = 2000

_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def tracing_enabled() -> bool:
    return _tracer is not None


def configure_tracing(settings: Settings) -> bool:
    """Install the process's tracer provider when the settings ask for traces; returns whether
    tracing is on. Call once per process, after any fork (the batch exporter runs a thread)."""
    global _provider, _tracer
    exporters = settings.traces_exporters
    if not exporters or _provider is not None:
        return _provider is not None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: _DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    for name in exporters:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(settings)))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer(_SCOPE)
    log.info(
        "tracing on: %s, service %s",
        ", ".join(exporters),
        resource.attributes.get(SERVICE_NAME),
    )
    return True


def _otlp_exporter(settings: Settings) -> Any:
    # Both exporters read OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT themselves.
    if settings.traces_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter()


async def flush() -> None:
    """Export the spans still queued (before the process exits: it ends with os._exit)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)


def aio_server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """For `grpc.aio.server(interceptors=...)`, first in the list; empty when tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider)]  # type: ignore[no-untyped-call]


def server_interceptors() -> list[grpc.ServerInterceptor]:
    """For grpc's sync `grpc.server(..., interceptors=...)`, first in the list; empty when off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import server_interceptor

    return [server_interceptor(tracer_provider=_provider)]  # type: ignore[no-untyped-call]


Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def http_middleware() -> list[Any]:
    """aiohttp middlewares for the HTTP shim: one SERVER span per request (probes and /metrics
    excepted) parented by the caller's `traceparent` header; empty when tracing is off."""
    tracer = _tracer
    if tracer is None:
        return []
    from aiohttp import web
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind, Status, StatusCode

    @web.middleware
    async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _UNTRACED_PATHS:
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "http.route": route,
                "url.path": request.path,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _http_status(span, exc.status, Status, StatusCode)
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            _http_status(span, response.status, Status, StatusCode)
            return response

    return [trace_request]


def _http_status(span: Any, status: int, status_type: Any, code: Any) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(status_type(code.ERROR))


ChainObserver = Callable[[str, str, float, "str | None"], None]


def chain_read_observer(observe: ChainObserver) -> ChainObserver:
    """`observe` (the metrics' per-round-trip observer), also recording each chain read as a
    CLIENT span under the current one when tracing is on; `observe` itself when it is off."""
    tracer = _tracer
    if tracer is None:
        return observe
    from opentelemetry.trace import SpanKind, Status, StatusCode

    def observe_and_trace(network: str, method: str, seconds: float, error: str | None) -> None:
        observe(network, method, seconds, error)
        end = time.time_ns()
        span = tracer.start_span(
            f"chain {method}",
            kind=SpanKind.CLIENT,
            start_time=end - int(seconds * 1e9),
            attributes={"rpc.system": "jsonrpc", "rpc.method": method, "chain.network": network},
        )
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end)

    return observe_and_trace


def instrument_engine(engine: AsyncEngine) -> None:
    """A CLIENT span for each write statement (INSERT, UPDATE, DELETE) `engine` runs, under the
    span of the RPC or task that ran it; nothing is installed when tracing is off."""
    tracer = _tracer
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from sqlalchemy import event

    system = "postgresql" if engine.dialect.name == "postgresql" else engine.dialect.name

    def operation(statement: str) -> str | None:
        word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        return word if word in _WRITES else None

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if operation(statement) is not None:
            _conn.info.setdefault("_otel_started", []).append(time.time_ns())

    def end_span(conn: Any, statement: str, error: BaseException | None) -> None:
        op = operation(statement)
        started = conn.info.get("_otel_started")
        if op is None or not started:
            return
        span = tracer.start_span(
            f"{op} {system}",
            kind=SpanKind.CLIENT,
            start_time=started.pop(),
            attributes={
                "db.system.name": system,
                "db.operation.name": op,
                "db.query.text": statement[:_MAX_STATEMENT_CHARS],
            },
        )
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        end_span(conn, statement, None)

    def failed(context: Any) -> None:
        conn = context.connection
        if conn is not None and context.statement is not None:
            end_span(conn, context.statement, context.original_exception)

    sync = engine.sync_engine
    event.listen(sync, "before_cursor_execute", before)
    event.listen(sync, "after_cursor_execute", after)
    event.listen(sync, "handle_error", failed)
