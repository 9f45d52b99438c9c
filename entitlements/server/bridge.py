"""Runs the asyncio servicers' methods for calls that gRPC's sync server handles on its threads.

The service's state (the store, the ledger's writer, the chain readers, the watch hub) belongs
to one asyncio loop. A call the handler thread cannot answer from memory is handed to that loop
(`asyncio.run_coroutine_threadsafe`) and the thread waits for the answer; the servicer method
runs unchanged against `LoopContext`, a stand-in for `grpc.aio.ServicerContext` whose `abort`
records the status the thread then sends (so codes and rich details are those of the aio server).
A caller that goes away (cancel, deadline) cancels the coroutine on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, NoReturn

import grpc
from grpc_status import rpc_status

from entitlements.server.status import status_proto

__all__ = ["LoopBridge", "LoopContext"]

UnaryMethod = Callable[[Any, Any], Coroutine[Any, Any, Any]]
StreamMethod = Callable[[Any, Any], AsyncIterator[Any]]

#: The answer when the loop is gone (the process is stopping): retryable.
_LOOP_GONE = rpc_status.to_status(
    status_proto(
        grpc.StatusCode.UNAVAILABLE,
        "the server is shutting down; retry (another replica or the restarted server answers)",
        reason="ERROR_REASON_DEPENDENCY_UNAVAILABLE",
        metadata={"dependency": "server", "state": "shutting_down"},
    )
)


class _Aborted(grpc.aio.AbortError):
    """What `LoopContext.abort` raises: the servicers' `@unary` wrapper lets AbortError through."""


class LoopContext:
    """The part of `grpc.aio.ServicerContext` the servicers use, for a call of the sync server.

    Built on the handler thread (the metadata and the peer are read there), used on the loop.
    """

    __slots__ = ("_code", "_details", "_metadata", "_peer", "_trailing", "_transport")

    def __init__(self, transport: grpc.ServicerContext) -> None:
        self._transport = transport
        self._metadata = transport.invocation_metadata()
        self._peer = transport.peer()
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()

    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return self._transport.time_remaining()

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._trailing = tuple(metadata)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        self._code = code
        self._details = details
        self._trailing = tuple(trailing_metadata or ())
        raise _Aborted()

    def send_abort(self) -> NoReturn:
        """On the handler thread: end the call with what `abort` recorded."""
        code = self._code or grpc.StatusCode.UNKNOWN
        self._transport.abort_with_status(_Status(code, self._details, self._trailing))
        raise AssertionError("unreachable: abort_with_status raises")  # pragma: no cover


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing


class LoopBridge:
    """Hands coroutines from gRPC's threads to `loop` and waits for them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def unary(self, method: UnaryMethod, request: Any, transport: grpc.ServicerContext) -> Any:
        """`await method(request, context)` on the loop; its answer, or its abort sent."""
        context = LoopContext(transport)
        try:
            future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
                method(request, context), self.loop
            )
        except RuntimeError:  # the loop is closed: the process is stopping
            transport.abort_with_status(_LOOP_GONE)
            raise
        # The caller went away (cancel, deadline): stop working for it.
        transport.add_callback(lambda: _cancel(future))
        try:
            return future.result()
        except _Aborted:
            context.send_abort()
        except concurrent.futures.CancelledError:
            if transport.is_active():  # cancelled on the loop (it is stopping), not by the caller
                transport.abort_with_status(_LOOP_GONE)
            return None  # the call is over; gRPC sends nothing more

    def stream(
        self, method: StreamMethod, request: Any, transport: grpc.ServicerContext
    ) -> Iterator[Any]:
        """The items of `method(request, context)`, an async generator run on the loop one
        item at a time; the thread waits between items (a thread per open stream)."""
        context = LoopContext(transport)
        items = method(request, context)
        pending: concurrent.futures.Future[Any] | None = None

        def cancel() -> None:
            if pending is not None:
                pending.cancel()

        transport.add_callback(cancel)
        try:
            while transport.is_active():
                try:
                    pending = asyncio.run_coroutine_threadsafe(_next(items), self.loop)
                except RuntimeError:
                    transport.abort_with_status(_LOOP_GONE)
                    raise
                try:
                    item = pending.result()
                except _Aborted:
                    context.send_abort()
                except concurrent.futures.CancelledError:
                    if transport.is_active():
                        transport.abort_with_status(_LOOP_GONE)
                    return
                if item is _END:
                    return
                yield item
        finally:
            if not self.loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(_close(items), self.loop)


_END = object()


def _cancel(future: concurrent.futures.Future[Any] | None) -> None:
    if future is not None:
        future.cancel()


async def _next(items: AsyncIterator[Any]) -> Any:
    try:
        return await anext(items)
    except StopAsyncIteration:
        return _END


async def _close(items: AsyncIterator[Any]) -> None:
    close = getattr(items, "aclose", None)
    if close is not None:
        with contextlib.suppress(RuntimeError):  # already running or closed
            await close()
