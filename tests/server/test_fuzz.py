"""Property-based fuzzing of every RPC over real gRPC: whatever a caller sends, the answer is
never UNKNOWN or INTERNAL, never a hang, an INVALID_ARGUMENT names a field of the request, and
a rejected call leaves every table of the database exactly as it was.

The RPCs are read from the service descriptors, so a new RPC is fuzzed without a line here.
Hypothesis runs in a worker thread with a blocking gRPC channel, while the server runs on the
session's event loop; database fingerprints are taken on that loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, event, given, settings
from nchat.entitlements.v1 import (
    admin_service_pb2,
    billing_service_pb2,
    crypto_payment_service_pb2,
    entitlements_service_pb2,
    token_gate_service_pb2,
    usage_service_pb2,
)
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.chains.config import NETWORKS, rpc_url_variable
from adapters.stripe.prices import INTERVALS, PAID_PLANS
from entitlements.config import Settings
from entitlements.server.app import SERVICE_NAMES, Deps, Running, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.models import Base
from entitlements.store.repository import Store
from tests.server.conftest import CALLERS_TOML, OPS
from tests.server.fuzz_strategies import message_strategy
from tests.server.helpers import details

pytestmark = pytest.mark.slow

SERVICE_MODULES = (
    entitlements_service_pb2,
    usage_service_pb2,
    token_gate_service_pb2,
    billing_service_pb2,
    crypto_payment_service_pb2,
    admin_service_pb2,
)
METHODS: tuple[MethodDescriptor, ...] = tuple(
    method
    for module in SERVICE_MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
)

#: A unary call that takes longer than this is a hang.
CALL_TIMEOUT = 5.0
#: A watch stream is read this long for its first message, then cancelled.
STREAM_WAIT = 0.3
NEVER = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


# --- the server and a blocking client for hypothesis' thread ---------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    message: str = ""
    fields: tuple[str, ...] = ()
    reason: str = ""
    response: Message | None = None

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK


@dataclass
class Target:
    """A running server, its store, and the loop both live on."""

    running: Running
    store: Store
    loop: asyncio.AbstractEventLoop
    examples: int = FUZZ.max_examples

    def on_loop(self, coro: Any, timeout: float = 30.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def fingerprint(self) -> dict[str, list[str]]:
        return self.on_loop(fingerprint(self.store.engine))


async def fingerprint(engine: AsyncEngine) -> dict[str, list[str]]:
    """Every row of every table (reflected, so tables outside the models count too)."""
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        rows: dict[str, list[str]] = {}
        for name in sorted(names):
            result = await connection.execute(text(f'SELECT * FROM "{name}"'))
            rows[name] = sorted(repr(tuple(row)) for row in result)
        return rows


@dataclass(frozen=True)
class Setup:
    """How the fuzzed server is configured, and how many examples each RPC gets there."""

    name: str
    examples: int
    dependencies_down: bool


#: Stripe and every chain configured, all pointing at a port nobody listens on: every RPC is
#: live and each dependency is down, so calls must get past validation and then fail cleanly.
DEPENDENCIES_DOWN = Setup("dependencies-down", examples=40, dependencies_down=True)
#: The defaults: no Stripe, no chain node.
NOTHING_CONFIGURED = Setup("nothing-configured", examples=10, dependencies_down=False)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fuzz_settings(directory: Path, setup: Setup) -> Settings:
    callers = directory / "callers.toml"
    callers.write_text(CALLERS_TOML)
    env = {"ENTITLEMENTS_CALLERS_FILE": str(callers)}
    if setup.dependencies_down:
        dead = f"http://127.0.0.1:{closed_port()}"
        env |= {
            "STRIPE_SECRET_KEY": "sk_test_fuzz",
            "STRIPE_API_BASE": dead,
            "STRIPE_MAX_NETWORK_RETRIES": "0",
            "ENTITLEMENTS_RPC_TIMEOUT_SECONDS": "1",
            "NEXT_PUBLIC_PAYMENT_WALLET_ADDRESS": "0x" + "ab" * 20,
        }
        for plan in PAID_PLANS:
            for word in INTERVALS.values():
                env[f"STRIPE_{plan.upper()}_{word}_PRICE_ID"] = f"price_{plan}_{word.lower()}"
        for network in NETWORKS:
            env[rpc_url_variable(network)] = dead
    return Settings.from_env(env)


async def _start(settings: Settings, store: Store) -> Running:
    running = await create_server(settings, Deps.build(settings, store), addr="127.0.0.1:0")
    await running.server.start()
    await running.set_serving(True)
    return running


@pytest.fixture(
    scope="module",
    params=[DEPENDENCIES_DOWN, NOTHING_CONFIGURED],
    ids=[DEPENDENCIES_DOWN.name, NOTHING_CONFIGURED.name],
)
async def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    """One server on SQLite per setup for the whole module: state left by one RPC's examples
    is input to the next RPC's, which is the point."""
    setup: Setup = request.param
    directory = tmp_path_factory.mktemp(setup.name)
    url = f"sqlite+aiosqlite:///{directory / 'fuzz.db'}"
    await upgrade(url)
    store = Store.open(url)
    running = await _start(fuzz_settings(directory, setup), store)
    try:
        yield Target(running, store, asyncio.get_running_loop(), setup.examples)
    finally:
        await running.stop(0)
        await store.close()


@pytest.fixture(scope="module")
def client(target: Target) -> Iterator[Client]:
    with grpc.insecure_channel(f"127.0.0.1:{target.running.port}") as channel:
        yield Client(channel)


class Client:
    """Calls any RPC by its descriptor, blocking (for hypothesis' thread)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel

    def call(self, method: MethodDescriptor, request: Message) -> Outcome:
        path = f"/{method.containing_service.full_name}/{method.name}"
        response_type = GetMessageClass(method.output_type)
        if method.server_streaming:
            return self._first_message(path, response_type, request)
        rpc = self._channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            response = rpc(request, timeout=CALL_TIMEOUT, metadata=OPS)
        except grpc.RpcError as error:
            return _failed(error)
        return Outcome(grpc.StatusCode.OK, response=response)

    def _first_message(self, path: str, response_type: Any, request: Message) -> Outcome:
        rpc = self._channel.unary_stream(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        stream = rpc(request, timeout=STREAM_WAIT, metadata=OPS)
        try:
            first = next(stream)
        except StopIteration:
            return Outcome(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            outcome = _failed(error)
            if outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                # Our own short wait ran out: the stream is open with nothing to say yet.
                return Outcome(grpc.StatusCode.OK)
            return outcome
        finally:
            stream.cancel()
        return Outcome(grpc.StatusCode.OK, response=first)


def _failed(error: Any) -> Outcome:
    info, fields = details(error)
    return Outcome(
        error.code(),
        error.details() or "",
        tuple(fields),
        info.reason if info is not None else "",
    )


# --- what every answer must satisfy ------------------------------------------------------------


def field_exists(descriptor: Descriptor, path: str) -> bool:
    """Whether a BadRequest field path ("events[3].metric", "requirement.token_ids[0]") names a
    field, or a oneof, of the request."""
    current: Descriptor | None = descriptor
    for part in path.split("."):
        name = part.split("[", 1)[0]
        if current is None:
            return False
        field = current.fields_by_name.get(name)
        if field is None:
            return name in current.oneofs_by_name and "[" not in part
        current = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            current = None  # "labels[key]": a map key is not a field
    return True


def shown(request: Message, limit: int = 1500) -> str:
    body = text_format.MessageToString(request, as_utf8=False)
    return body if len(body) <= limit else body[:limit] + f"... ({len(body)} characters)"


def assert_well_behaved(method: MethodDescriptor, request: Message, outcome: Outcome) -> None:
    where = f"{method.containing_service.name}.{method.name}"
    said = f"{outcome.code.name} {outcome.reason} {outcome.message!r} fields={outcome.fields}"
    assert outcome.code not in NEVER, f"{where} answered {said} to:\n{shown(request)}"
    assert outcome.code != grpc.StatusCode.DEADLINE_EXCEEDED, (
        f"{where} did not answer within {CALL_TIMEOUT}s: {said} to:\n{shown(request)}"
    )
    if outcome.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert outcome.fields, f"{where} INVALID_ARGUMENT names no field: {said}"
        unknown = [f for f in outcome.fields if not field_exists(method.input_type, f)]
        assert not unknown, (
            f"{where} INVALID_ARGUMENT names {unknown}, not fields of "
            f"{method.input_type.name}: {said}"
        )


def fuzz_method(target: Target, client: Client, method: MethodDescriptor) -> None:
    """Hypothesis over one RPC (blocking: run it in a thread)."""

    @settings(FUZZ, max_examples=target.examples)
    @given(message_strategy(method.input_type))
    def check(request: Message) -> None:
        before = target.fingerprint()
        outcome = client.call(method, request)
        event(f"{outcome.code.name} {outcome.reason}".strip())  # --hypothesis-show-statistics
        assert_well_behaved(method, request, outcome)
        if not outcome.ok:
            after = target.fingerprint()
            changed = {t: (before[t], after.get(t)) for t in before if before[t] != after.get(t)}
            assert not changed, (
                f"{method.containing_service.name}.{method.name} was refused "
                f"({outcome.code.name} {outcome.message!r}) but wrote {changed} for:\n"
                f"{shown(request)}"
            )

    check()


async def in_thread(function: Callable[[], None]) -> None:
    """Run blocking hypothesis code off the loop, so the server keeps serving."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def run() -> None:
        try:
            function()
        except BaseException as error:  # handed back to the test as is
            loop.call_soon_threadsafe(done.set_exception, error)
        else:
            loop.call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=run, name="hypothesis", daemon=True).start()
    await done


# --- every RPC ---------------------------------------------------------------------------------


def test_every_served_service_is_fuzzed() -> None:
    fuzzed = {m.containing_service.full_name for m in METHODS}
    assert fuzzed == set(SERVICE_NAMES)


async def test_fingerprint_covers_every_model_table(target: Target) -> None:
    tables = await fingerprint(target.store.engine)
    assert set(Base.metadata.tables) <= set(tables)


@pytest.mark.parametrize(
    "method", METHODS, ids=[f"{m.containing_service.name}.{m.name}" for m in METHODS]
)
async def test_any_request_gets_a_deliberate_answer_and_a_refusal_writes_nothing(
    target: Target, client: Client, method: MethodDescriptor
) -> None:
    await in_thread(lambda: fuzz_method(target, client, method))


@pytest.mark.postgres
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_any_request_on_postgresql_gets_a_deliberate_answer(
    server: Running, store: Store
) -> None:
    """A smoke run of every RPC on PostgreSQL: fewer examples, same properties."""
    target = Target(server, store, asyncio.get_running_loop(), examples=5)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        client = Client(channel)

        def run() -> None:
            for method in METHODS:
                fuzz_method(target, client, method)

        await in_thread(run)
