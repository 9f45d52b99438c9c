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
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from eth_utils.address import to_checksum_address
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nchat.entitlements.v1 import (
    admin_service_pb2,
    billing_service_pb2,
    crypto_payment_service_pb2,
    entitlements_service_pb2,
    token_gate_service_pb2,
    usage_service_pb2,
)
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import usage_service_pb2 as usage_pb
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.chains.config import NETWORKS, rpc_url_variable
from adapters.stripe.prices import INTERVALS, PAID_PLANS
from entitlements.config import Settings
from entitlements.policies import default_catalog
from entitlements.server.app import SERVICE_NAMES, Running, build_deps, create_server
from entitlements.store.migrate import upgrade
from entitlements.store.models import Base
from entitlements.store.repository import Store
from entitlements.store.tokengate_records import RequirementRecord
from tests.server.conftest import CALLERS_TOML, OPS, subscription
from tests.server.fuzz_strategies import (
    either,
    field_strings,
    message_strategy,
    strings,
    strings_in,
    undecodable,
    with_nul,
)
from tests.server.helpers import details

T = TypeVar("T")

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
STREAM_WAIT = 0.15
NEVER = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    # No shrinking: the failure message already shows the whole request, and against a server
    # whose state each call changes, shrinking is slow and its replays are not faithful.
    phases=[Phase.explicit, Phase.generate],
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
    tables: tuple[str, ...] = ()

    def on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` on the server's loop from hypothesis' thread."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def fingerprint(self) -> dict[str, list[str]]:
        if not self.tables:
            self.tables = self.on_loop(table_names(self.store.engine))
        return self.on_loop(fingerprint(self.store.engine, self.tables))


async def table_names(engine: AsyncEngine) -> tuple[str, ...]:
    """Every table in the database (reflected, so tables outside the models count too)."""
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return tuple(sorted(names))


async def fingerprint(engine: AsyncEngine, tables: tuple[str, ...]) -> dict[str, list[str]]:
    """Every row of every table, in an order that does not depend on the plan."""
    rows: dict[str, list[str]] = {}
    async with engine.connect() as connection:
        for name in tables:
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
NOTHING_CONFIGURED = Setup("nothing-configured", examples=8, dependencies_down=False)


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
    running = await create_server(settings, build_deps(settings, store), addr="127.0.0.1:0")
    await running.server.start()
    await running.set_serving(True)
    return running


#: Ids the strategies favour (see fuzz_strategies' hints): seeded with state, so that fuzzed
#: calls on them get past "not found" to the adapters behind.
SEEDED_ACCOUNTS = ("acct_1", "acct_2", "ws-42")
SEEDED_CHANNELS = ("chan_1", "id_1")


async def seed(running: Running) -> None:
    """Card subscriptions and token requirements, so calls reach Stripe and the chains."""
    for account in SEEDED_ACCOUNTS:
        record = replace(
            subscription(account, "pro"),
            stripe_customer_id=f"cus_{account}",
            stripe_subscription_id=f"sub_{account}",
            stripe_price_id="price_pro_monthly",
        )
        await running.deps.service.save_subscription(record)
    # Stored directly: CreateTokenRequirement probes the contract, and every chain here is down.
    assert running.deps.token_gate is not None
    for channel_id in SEEDED_CHANNELS:
        await running.deps.token_gate.gate.store.create_requirement(
            RequirementRecord(
                id=f"req_{channel_id}",
                channel_id=channel_id,
                token_type="ERC20",
                contract_address=to_checksum_address("0x" + "ab" * 20),
                network="ethereum",
                min_balance="1",
                name="holders",
            )
        )


@asynccontextmanager
async def serving(directory: Path, setup: Setup) -> AsyncIterator[Target]:
    """A server on a fresh SQLite file, configured as `setup` says."""
    url = f"sqlite+aiosqlite:///{directory / 'fuzz.db'}"
    await upgrade(url)
    store = Store.open(url)
    running = await _start(fuzz_settings(directory, setup), store)
    try:
        if setup.dependencies_down:
            await seed(running)
        yield Target(running, store, asyncio.get_running_loop(), setup.examples)
    finally:
        await running.stop(0)
        await store.close()


@pytest.fixture(
    scope="module",
    params=[DEPENDENCIES_DOWN, NOTHING_CONFIGURED],
    ids=[DEPENDENCIES_DOWN.name, NOTHING_CONFIGURED.name],
)
async def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    """One server per setup for the whole module: state left by one RPC's examples is input
    to the next RPC's, which is the point."""
    setup: Setup = request.param
    async with serving(tmp_path_factory.mktemp(setup.name), setup) as started:
        yield started


@pytest.fixture(scope="module")
def client(target: Target) -> Iterator[Client]:
    with grpc.insecure_channel(f"127.0.0.1:{target.running.port}") as channel:
        yield Client(channel)


@pytest.fixture(scope="module")
async def hot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    """A server of its own for the hot-path properties (they need no adapters)."""
    async with serving(tmp_path_factory.mktemp("hot"), NOTHING_CONFIGURED) as started:
        yield started


@pytest.fixture(scope="module")
def hot_client(hot: Target) -> Iterator[Client]:
    with grpc.insecure_channel(f"127.0.0.1:{hot.running.port}") as channel:
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
        rpc: grpc.UnaryUnaryMultiCallable[Message, Message] = self._channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            response = rpc(request, timeout=CALL_TIMEOUT, metadata=OPS)
        except grpc.RpcError as error:
            return _failed(error)
        return Outcome(grpc.StatusCode.OK, response=response)

    def call_raw(self, method: MethodDescriptor, body: bytes) -> Outcome:
        """Send `body` as the request, as is (it need not be a message)."""
        path = f"/{method.containing_service.full_name}/{method.name}"
        try:
            if method.server_streaming:
                stream = self._channel.unary_stream(path)(body, timeout=STREAM_WAIT, metadata=OPS)
                try:
                    next(stream)
                except StopIteration:
                    pass
                finally:
                    stream.cancel()
            else:
                self._channel.unary_unary(path)(body, timeout=CALL_TIMEOUT, metadata=OPS)
        except grpc.RpcError as error:
            outcome = _failed(error)
            if method.server_streaming and outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Outcome(grpc.StatusCode.OK)  # an open stream with nothing to say yet
            return outcome
        return Outcome(grpc.StatusCode.OK)

    def _first_message(self, path: str, response_type: Any, request: Message) -> Outcome:
        rpc: grpc.UnaryStreamMultiCallable[Message, Message] = self._channel.unary_stream(
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
        # A refusal that wrote is reported first: it is worse than the status it came with.
        if not outcome.ok:
            after = target.fingerprint()
            changed = {t: (before[t], after.get(t)) for t in before if before[t] != after.get(t)}
            assert not changed, (
                f"{method.containing_service.name}.{method.name} was refused "
                f"({outcome.code.name} {outcome.message!r}) but wrote {changed} for:\n"
                f"{shown(request)}"
            )
        assert_well_behaved(method, request, outcome)

    check()


def fuzz_undecodable(target: Target, client: Client, method: MethodDescriptor, n: int) -> None:
    """Bytes that are mostly no message: refused cleanly (INVALID_ARGUMENT, ErrorInfo), or
    answered as any request when they happen to decode; a refusal writes nothing."""
    where = f"{method.containing_service.name}.{method.name}"

    @settings(FUZZ, max_examples=n)
    @given(undecodable(method.input_type))
    def check(body: bytes) -> None:
        before = target.fingerprint()
        outcome = client.call_raw(method, body)
        said = f"{where} answered {outcome.code.name} {outcome.message!r} to bytes {body!r}"
        assert outcome.code not in (*NEVER, grpc.StatusCode.DEADLINE_EXCEEDED), said
        if not outcome.ok:
            assert target.fingerprint() == before, f"{said}, and wrote"
        if outcome.code == grpc.StatusCode.INVALID_ARGUMENT:
            assert outcome.reason, f"{said}, without an ErrorInfo"

    check()


def fuzz_nul(target: Target, client: Client, method: MethodDescriptor, n: int) -> None:
    """Any request with a NUL in a string field: INVALID_ARGUMENT naming a field, on either
    database (SQLite could store it, PostgreSQL cannot: one rule for both), nothing written."""

    @settings(FUZZ, max_examples=n)
    @given(with_nul(method.input_type))
    def check(request: Message) -> None:
        if not any("\x00" in text for text in strings_in(request)):
            return  # a request with no string field
        before = target.fingerprint()
        outcome = client.call(method, request)
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (
            f"{method.name} answered {outcome.code.name} {outcome.message!r} to a NUL in:\n"
            f"{shown(request)}"
        )
        assert_well_behaved(method, request, outcome)
        assert target.fingerprint() == before, f"{method.name} wrote for:\n{shown(request)}"

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
    assert set(Base.metadata.tables) <= set(await table_names(target.store.engine))


@pytest.mark.slow
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
            failures: list[str] = []
            for method in METHODS:  # every RPC, even after one fails
                for fuzz in (
                    lambda m: fuzz_method(target, client, m),
                    lambda m: fuzz_undecodable(target, client, m, 2),
                    lambda m: fuzz_nul(target, client, m, 2),
                ):
                    try:
                        fuzz(method)
                    except Exception as error:
                        failures.append(f"{method.full_name}: {error}")
            assert not failures, "\n\n".join(failures)

        await in_thread(run)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", METHODS, ids=[f"{m.containing_service.name}.{m.name}" for m in METHODS]
)
async def test_undecodable_bytes_and_nul_in_any_string_field_are_refused_and_write_nothing(
    hot: Target, hot_client: Client, method: MethodDescriptor
) -> None:
    def run() -> None:
        fuzz_undecodable(hot, hot_client, method, 12)
        fuzz_nul(hot, hot_client, method, 12)

    await in_thread(run)


async def test_fingerprint_sees_an_accepted_write(hot: Target, hot_client: Client) -> None:
    """The "a refusal writes nothing" check is only as good as the fingerprint."""
    before = await asyncio.to_thread(hot.fingerprint)
    request = usage_pb.SetUsageRequest(account_id="fuzz-fp", metric="users", value=3)
    outcome = await asyncio.to_thread(hot_client.call, USAGE.methods_by_name["SetUsage"], request)
    assert outcome.ok, outcome
    assert await asyncio.to_thread(hot.fingerprint) != before


# --- the hot path: validation names the field, a batch is all or nothing ------------------------

ENTITLEMENTS = entitlements_service_pb2.DESCRIPTOR.services_by_name["EntitlementsService"]
USAGE = usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"]
HOT = settings(FUZZ, max_examples=40)
PLAN_IDS = {plan.id for plan in default_catalog().plans}
METRICS = tuple(default_catalog().metrics)


def assert_answer_or_names(outcome: Outcome, allowed_fields: set[str], request: Message) -> None:
    """OK, or INVALID_ARGUMENT whose BadRequest names only fields of `allowed_fields`."""
    said = f"{outcome.code.name} {outcome.message!r} fields={outcome.fields}"
    assert outcome.code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (
        f"{said} for:\n{shown(request)}"
    )
    if not outcome.ok:
        assert outcome.fields, f"no BadRequest field: {said}"
        assert set(outcome.fields) <= allowed_fields, f"{said} for:\n{shown(request)}"


@pytest.mark.slow
async def test_can_use_feature_answers_or_names_the_bad_field(
    hot: Target, hot_client: Client
) -> None:
    method = ENTITLEMENTS.methods_by_name["CanUseFeature"]

    @HOT
    @given(account_id=field_strings("account_id"), feature=field_strings("feature"))
    def check(account_id: str, feature: str) -> None:
        request = ent_pb.CanUseFeatureRequest(account_id=account_id, feature=feature)
        outcome = hot_client.call(method, request)
        assert_answer_or_names(outcome, {"account_id", "feature"}, request)
        if outcome.ok:
            assert isinstance(outcome.response, ent_pb.CanUseFeatureResponse)
            assert outcome.response.plan_id in PLAN_IDS

    await in_thread(check)


@pytest.mark.slow
async def test_check_limit_answers_or_names_the_bad_field(hot: Target, hot_client: Client) -> None:
    method = USAGE.methods_by_name["CheckLimit"]
    currents = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(-2, 2_000_000))

    @HOT
    @given(account_id=field_strings("account_id"), limit=field_strings("limit"), current=currents)
    def check(account_id: str, limit: str, current: int | None) -> None:
        request = usage_pb.CheckLimitRequest(account_id=account_id, limit=limit, current=current)
        outcome = hot_client.call(method, request)
        assert_answer_or_names(outcome, {"account_id", "limit", "current"}, request)
        if outcome.ok and current is not None:
            assert isinstance(outcome.response, usage_pb.CheckLimitResponse)
            assert outcome.response.current == current

    await in_thread(check)


ACCOUNTS = ("fuzz-a", "fuzz-b")
#: Mostly deltas any caller sends; now and then one no caller should (negative, absurd).
DELTAS = either(
    st.integers(0, 1000), st.sampled_from([-1, -(2**63), 2**62, 2**63 - 1]), first_in_ten=9
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@st.composite
def usage_events(draw: st.DrawFn) -> usage_pb.UsageEvent:
    """Mostly valid events on two accounts, some of them wrong in one way or another."""
    event = usage_pb.UsageEvent(
        account_id=draw(either(st.sampled_from(ACCOUNTS), strings(), first_in_ten=9)),
        metric=draw(either(st.sampled_from(METRICS), strings(), first_in_ten=9)),
        delta=draw(DELTAS),
        idempotency_key=draw(
            either(st.sampled_from(["k1", "k2", "k3"]), st.uuids().map(str), first_in_ten=2)
        ),
        enforce_limit=draw(st.booleans()),
    )
    when = draw(
        either(
            st.none(), st.sampled_from(["future", "ancient", "nanos", "seconds"]), first_in_ten=9
        )
    )
    if when == "future":
        event.occurred_at.FromMilliseconds(_now_ms() + 3_600_000)
    elif when == "ancient":
        event.occurred_at.FromMilliseconds(_now_ms() - 400 * 86_400_000)
    elif when == "nanos":  # serializes, but is not a valid Timestamp
        event.occurred_at.seconds, event.occurred_at.nanos = _now_ms() // 1000, -1
    elif when == "seconds":
        event.occurred_at.seconds = -(2**63)
    return event


@pytest.mark.slow
async def test_report_usage_applies_every_event_of_a_batch_or_none(
    hot: Target, hot_client: Client
) -> None:
    report = USAGE.methods_by_name["ReportUsage"]
    get_usage = USAGE.methods_by_name["GetUsage"]

    def totals() -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        for account in ACCOUNTS:
            outcome = hot_client.call(get_usage, usage_pb.GetUsageRequest(account_id=account))
            assert outcome.ok, f"GetUsage({account}): {outcome.code.name} {outcome.message}"
            assert isinstance(outcome.response, usage_pb.GetUsageResponse)
            for metric in outcome.response.metrics:
                found[(account, metric.metric)] = metric.current
        return found

    @HOT
    @given(st.lists(usage_events(), min_size=1, max_size=6))
    def check(events: list[usage_pb.UsageEvent]) -> None:
        request = usage_pb.ReportUsageRequest(events=events)
        before = totals()
        outcome = hot_client.call(report, request)
        after = totals()
        if outcome.ok:
            assert isinstance(outcome.response, usage_pb.ReportUsageResponse)
            results = list(outcome.response.results)
            assert len(results) == len(events)
            expected = dict(before)
            for ev, result in zip(events, results, strict=True):
                tracked = (ev.account_id, ev.metric) in expected
                if tracked and result.status == usage_pb.USAGE_EVENT_STATUS_APPLIED:
                    expected[(ev.account_id, ev.metric)] += ev.delta
            assert after == expected, f"partly applied: {results} for:\n{shown(request)}"
        else:
            changed = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
            assert not changed, (
                f"refused ({outcome.code.name} {outcome.message!r}) yet changed {changed} "
                f"for:\n{shown(request)}"
            )
        assert_well_behaved(report, request, outcome)

    await in_thread(check)


# --- what the fuzzing found, pinned as plain examples ---------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-(2**63), 0), (253_402_300_800, 0), (1_795_000_000, -1), (1_795_000_000, 1_000_000_000)],
    ids=["seconds-min-int64", "seconds-after-9999", "nanos-negative", "nanos-too-large"],
)
async def test_report_usage_with_an_invalid_occurred_at_is_invalid_argument(
    hot: Target, hot_client: Client, seconds: int, nanos: int
) -> None:
    event = usage_pb.UsageEvent(
        account_id="fuzz-ts", metric="messages", delta=1, idempotency_key=f"ts-{seconds}-{nanos}"
    )
    event.occurred_at.seconds, event.occurred_at.nanos = seconds, nanos
    request = usage_pb.ReportUsageRequest(events=[event])
    outcome = await asyncio.to_thread(
        hot_client.call, USAGE.methods_by_name["ReportUsage"], request
    )
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert outcome.fields == ("events[0].occurred_at",)


@pytest.mark.parametrize("metric", ["channels", "messages"])
async def test_an_absurd_usage_amount_is_invalid_argument_and_writes_nothing(
    hot: Target, hot_client: Client, metric: str
) -> None:
    """Found by fuzzing: 2**63-1 then 1 more overflowed the counter (INTERNAL). Amounts are
    now bounded; the bound is the answer, and nothing is written."""
    account = f"fuzz-max-{metric}"
    report = USAGE.methods_by_name["ReportUsage"]
    set_usage = USAGE.methods_by_name["SetUsage"]
    event = usage_pb.UsageEvent(
        account_id=account, metric=metric, delta=2**63 - 1, idempotency_key="max"
    )
    snapshot = await asyncio.to_thread(hot.fingerprint)
    outcome = await asyncio.to_thread(
        hot_client.call, report, usage_pb.ReportUsageRequest(events=[event])
    )
    assert (outcome.code, outcome.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ("events[0].delta",),
    ), outcome
    if metric == "channels":  # a gauge: SetUsage takes it
        request = usage_pb.SetUsageRequest(account_id=account, metric=metric, value=2**63 - 1)
        outcome = await asyncio.to_thread(hot_client.call, set_usage, request)
        assert (outcome.code, outcome.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ("value",))
    assert await asyncio.to_thread(hot.fingerprint) == snapshot


ADMIN = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"]
BAD_TIMESTAMPS = pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-(2**63), 0), (1_795_000_000, -1)],
    ids=["seconds-min-int64", "nanos-negative"],
)


@BAD_TIMESTAMPS
async def test_revenue_metrics_with_an_invalid_as_of_is_invalid_argument(
    hot: Target, hot_client: Client, seconds: int, nanos: int
) -> None:
    request = admin_service_pb2.GetRevenueMetricsRequest()
    request.as_of.seconds, request.as_of.nanos = seconds, nanos
    outcome = await asyncio.to_thread(
        hot_client.call, ADMIN.methods_by_name["GetRevenueMetrics"], request
    )
    assert (outcome.code, outcome.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ("as_of",)), outcome


@pytest.mark.parametrize(
    ("seconds", "window_days"),
    [(-62_135_596_800, 30), (-62_135_596_800, 0), (253_402_300_799, 30)],
    ids=["year-1-with-a-window", "year-1", "year-9999"],
)
async def test_revenue_metrics_at_the_ends_of_time_answer_or_refuse_as_of(
    hot: Target, hot_client: Client, seconds: int, window_days: int
) -> None:
    """Valid Timestamps, but a day before 0001-01-01 or after 9999-12-31 is no datetime: the
    window arithmetic must not turn them into INTERNAL (found by fuzzing)."""
    request = admin_service_pb2.GetRevenueMetricsRequest(churn_window_days=window_days)
    request.as_of.seconds = seconds
    outcome = await asyncio.to_thread(
        hot_client.call, ADMIN.methods_by_name["GetRevenueMetrics"], request
    )
    assert outcome.ok or (outcome.code, outcome.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ("as_of",),
    ), outcome


@BAD_TIMESTAMPS
async def test_account_overrides_with_an_invalid_expiry_are_invalid_argument(
    hot: Target, hot_client: Client, seconds: int, nanos: int
) -> None:
    request = admin_service_pb2.SetAccountOverridesRequest(
        overrides=admin_service_pb2.AccountOverrides(
            account_id="fuzz-overrides", granted_features=["apiAccess"], reason="fuzz"
        )
    )
    request.overrides.expires_at.seconds, request.overrides.expires_at.nanos = seconds, nanos
    snapshot = await asyncio.to_thread(hot.fingerprint)
    outcome = await asyncio.to_thread(
        hot_client.call, ADMIN.methods_by_name["SetAccountOverrides"], request
    )
    assert (outcome.code, outcome.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ("overrides.expires_at",),
    ), outcome
    assert await asyncio.to_thread(hot.fingerprint) == snapshot
