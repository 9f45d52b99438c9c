"""UsageService over real gRPC, on SQLite and PostgreSQL: exact, idempotent, validated."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc
from nchat.entitlements.v1 import plan_pb2
from nchat.entitlements.v1 import usage_service_pb2 as pb
from nchat.entitlements.v1 import usage_service_pb2_grpc as pb_grpc

from entitlements.config import Settings
from entitlements.policies import check_limit
from entitlements.server.app import Running, build_deps, create_server
from entitlements.usage.periods import current_period
from tests.server.conftest import CALLERS_TOML, OPS, subscription
from tests.server.helpers import details

APPLIED = pb.USAGE_EVENT_STATUS_APPLIED
DUPLICATE = pb.USAGE_EVENT_STATUS_DUPLICATE
REFUSED = pb.USAGE_EVENT_STATUS_REFUSED


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.UsageServiceStub:
    return pb_grpc.UsageServiceStub(channel)


def event(
    account: str, key: str, delta: int = 1, metric: str = "messages", **fields: object
) -> pb.UsageEvent:
    return pb.UsageEvent(
        account_id=account, metric=metric, delta=delta, idempotency_key=key, **fields
    )


def at(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


async def report(
    stub: pb_grpc.UsageServiceStub, *events: pb.UsageEvent
) -> list[pb.UsageEventResult]:
    answer = await stub.ReportUsage(pb.ReportUsageRequest(events=events), metadata=OPS)
    return list(answer.results)


async def usage(stub: pb_grpc.UsageServiceStub, account: str, period: str = "") -> dict[str, int]:
    answer = await stub.GetUsage(
        pb.GetUsageRequest(account_id=account, period=period), metadata=OPS
    )
    return {m.metric: m.current for m in answer.metrics}


async def test_report_counts_and_answers_total_limit_and_level(stub) -> None:
    results = await report(stub, event("ws", "m-1", 7000), event("ws", "m-2", 600))
    assert [(r.status, r.total) for r in results] == [(APPLIED, 7000), (APPLIED, 7600)]
    last = results[1]
    assert (last.limit, last.unlimited) == (10000, False)
    assert last.level == plan_pb2.USAGE_LEVEL_WARNING
    assert last.percentage == pytest.approx(76.0)
    assert last.period == current_period(datetime.now(UTC))
    assert (await usage(stub, "ws"))["messages"] == 7600


async def test_each_result_has_the_policys_level_and_percentage_at_every_boundary(stub) -> None:
    """The per-event results agree with `check_limit` (the one definition of the levels) at
    the 75 %, 90 % and 100 % boundaries, exactly and one below, and past the limit."""
    totals = [1, 7499, 7500, 8999, 9000, 9999, 10000, 10001, 12345]
    deltas = [b - a for a, b in zip([0, *totals], totals, strict=False)]
    results = await report(stub, *(event("ws", f"b-{i}", d) for i, d in enumerate(deltas)))
    assert [r.total for r in results] == totals
    for r in results:
        expected = check_limit(10000, r.total)
        assert (r.limit, r.unlimited) == (10000, False)
        assert (r.level, r.percentage) == (expected.level, expected.percentage), r.total


async def test_a_repeated_key_is_counted_once_and_gets_the_first_answer(stub) -> None:
    first = await report(stub, event("ws", "k", 5))
    await report(stub, event("ws", "other", 3))
    again = await report(stub, event("ws", "k", 5), event("ws", "k", 5))
    assert first[0].status == APPLIED
    assert [(r.status, r.total) for r in again] == [(DUPLICATE, 5), (DUPLICATE, 5)]
    assert (await usage(stub, "ws"))["messages"] == 8


async def test_the_same_key_for_another_account_is_another_event(stub) -> None:
    await report(stub, event("ws-a", "k", 2), event("ws-b", "k", 2))
    assert (await usage(stub, "ws-a"))["messages"] == 2
    assert (await usage(stub, "ws-b"))["messages"] == 2


async def test_a_reused_key_with_another_payload_fails_the_batch_and_writes_nothing(stub) -> None:
    await report(stub, event("ws", "k", 5))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await report(stub, event("ws", "fresh", 1), event("ws", "k", 6))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "events[1].idempotency_key" in caught.value.details()
    info, _ = details(caught.value)
    assert info is not None and info.reason == "ERROR_REASON_IDEMPOTENCY_KEY_REUSED"
    assert (await usage(stub, "ws"))["messages"] == 5
    # the untouched event of the refused batch can still be sent on its own
    assert (await report(stub, event("ws", "fresh", 1)))[0].status == APPLIED


async def test_a_key_repeated_within_one_batch_is_counted_once(stub) -> None:
    results = await report(
        stub, event("ws", "a", 4), event("ws", "b", 2), event("ws", "a", 4), event("ws", "b", 2)
    )
    assert [(r.status, r.total) for r in results] == [
        (APPLIED, 4),
        (APPLIED, 6),
        (DUPLICATE, 4),
        (DUPLICATE, 6),
    ]
    assert (await usage(stub, "ws"))["messages"] == 6
    # and across batches: the repeats get the first answers back
    again = await report(stub, event("ws", "b", 2), event("ws", "c", 1), event("ws", "a", 4))
    assert [(r.status, r.total) for r in again] == [(DUPLICATE, 6), (APPLIED, 7), (DUPLICATE, 4)]
    assert (await usage(stub, "ws"))["messages"] == 7


async def test_a_key_reused_within_one_batch_fails_it_whole_and_leaves_no_trace(stub) -> None:
    await report(stub, event("ws", "old", 1), event("ws-2", "old", 1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await report(
            stub,
            event("ws", "n1", 5),
            event("ws-2", "n2", 5),
            event("ws", "old", 1),  # a duplicate, then the reuse
            event("ws", "n1", 6),
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "events[3].idempotency_key" in caught.value.details()
    assert (await usage(stub, "ws"))["messages"] == 1
    assert (await usage(stub, "ws-2"))["messages"] == 1
    # none of the refused batch's keys was kept: the same events count when sent alone
    results = await report(stub, event("ws", "n1", 5), event("ws-2", "n2", 5))
    assert [(r.status, r.total) for r in results] == [(APPLIED, 6), (APPLIED, 6)]


async def test_batches_committed_together_are_each_all_or_nothing(stub) -> None:
    """Concurrent batches share a group commit: one batch's reused key fails that batch
    alone, and the others' events, duplicates across them included, count once."""
    await report(stub, event("ws", "taken", 3))
    good = [
        [event("ws", f"g{b}-{i}", 1) for i in range(50)] + [event("ws", "g0-0", 1)]
        for b in range(8)
    ]
    bad = [event("ws", "fresh", 1), event("ws", "taken", 4)]
    answers = await asyncio.gather(
        *(report(stub, *batch) for batch in good), report(stub, *bad), return_exceptions=True
    )
    refused = answers[-1]
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.ALREADY_EXISTS
    statuses = [r.status for batch in answers[:-1] for r in batch]  # type: ignore[union-attr]
    # 400 distinct keys; g0-0, sent by every batch (twice by its own), counts once
    assert statuses.count(APPLIED) == 8 * 50
    assert statuses.count(DUPLICATE) == 8
    assert (await usage(stub, "ws"))["messages"] == 3 + 8 * 50


@pytest.mark.parametrize(
    ("events", "field"),
    [
        (list, "events"),
        (lambda: [event("ws", "a", metric="teleports")], "events[0].metric"),
        (lambda: [event("ws", "a"), event("ws", "b", -1)], "events[1].delta"),
        (lambda: [event("ws", "a", 2**62)], "events[0].delta"),
        (lambda: [event("ws", "")], "events[0].idempotency_key"),
        (lambda: [event("ws", "x" * 201)], "events[0].idempotency_key"),
        (lambda: [event("", "a")], "events[0].account_id"),
        # Times are taken when the test runs, not when it is collected: a slow run must not
        # bring "10 minutes from now" within the 5 minutes' tolerance.
        (
            lambda: [event("ws", "a", occurred_at=at(datetime.now(UTC) + timedelta(minutes=10)))],
            "events[0].occurred_at",
        ),
        (
            lambda: [event("ws", "a", occurred_at=at(datetime.now(UTC) - timedelta(days=30)))],
            "events[0].occurred_at",
        ),
        (lambda: [event("ws", str(i)) for i in range(1001)], "events"),
    ],
    ids=[
        "none",
        "unknown-metric",
        "negative-delta",
        "huge-delta",
        "empty-key",
        "long-key",
        "no-account",
        "future",
        "past-retention",
        "too-many",
    ],
)
async def test_bad_events_are_invalid_argument_naming_the_field_and_nothing_is_written(
    stub, events: Callable[[], list[pb.UsageEvent]], field: str
) -> None:
    batch = events()
    # a good event first, so a partial write would show
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await report(stub, event("ws", "good-1"), *batch) if field != "events" else await report(
            stub, *batch
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, fields = details(caught.value)
    expected = field
    if field != "events":
        index = int(field.split("[")[1].split("]")[0])
        expected = field.replace(f"[{index}]", f"[{index + 1}]")
    assert fields == [expected]
    assert (await usage(stub, "ws"))["messages"] == 0


@pytest.fixture
async def long_memory_stub(tmp_path, sqlite_store) -> AsyncIterator[pb_grpc.UsageServiceStub]:
    """A server that keeps idempotency keys for 40 days, so last month's events are accepted."""
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS_TOML)
    settings = Settings.from_env(
        {
            "ENTITLEMENTS_CALLERS_FILE": str(callers),
            "ENTITLEMENTS_USAGE_KEY_RETENTION_DAYS": "40",
        }
    )
    running = await create_server(settings, build_deps(settings, sqlite_store), addr="127.0.0.1:0")
    await running.server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.UsageServiceStub(channel)
    finally:
        await running.stop(0)


async def test_an_event_counts_in_the_utc_month_it_happened(long_memory_stub) -> None:
    stub = long_memory_stub
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_second_of_last_month = month_start - timedelta(seconds=1)
    results = await report(
        stub,
        event("ws", "late", 4, occurred_at=at(last_second_of_last_month)),
        event("ws", "first", 5, occurred_at=at(month_start)),
        event("ws", "now", 6),
    )
    previous, this = current_period(last_second_of_last_month), current_period(month_start)
    assert previous != this
    assert [r.period for r in results] == [previous, this, this]
    assert [r.total for r in results] == [4, 5, 11]
    assert (await usage(stub, "ws", previous))["messages"] == 4
    assert (await usage(stub, "ws"))["messages"] == 11
    assert (await usage(stub, "ws", this))["messages"] == 11


async def test_events_older_than_the_idempotency_window_are_refused(long_memory_stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await report(
            long_memory_stub,
            event("ws", "old", 1, occurred_at=at(datetime.now(UTC) - timedelta(days=41))),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency window" in caught.value.details()


async def test_gauges_are_set_and_do_not_roll_over(stub) -> None:
    answer = await stub.SetUsage(
        pb.SetUsageRequest(account_id="ws", metric="users", value=8), metadata=OPS
    )
    assert (answer.usage.current, answer.usage.limit, answer.usage.period) == (8, 10, "")
    assert answer.usage.level == plan_pb2.USAGE_LEVEL_WARNING
    assert (await usage(stub, "ws", "2020-01"))["users"] == 8
    await report(stub, event("ws", "u1", 1, metric="users"))
    assert (await usage(stub, "ws"))["users"] == 9


async def test_set_usage_refuses_monthly_metrics_and_negative_values(stub) -> None:
    for request, field in (
        (pb.SetUsageRequest(account_id="ws", metric="messages", value=1), "metric"),
        (pb.SetUsageRequest(account_id="ws", metric="users", value=-1), "value"),
        (pb.SetUsageRequest(account_id="ws", metric="nope", value=1), "metric"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SetUsage(request, metadata=OPS)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value)[1] == [field]


async def test_check_limit_judges_the_callers_number_like_the_seed(stub) -> None:
    answer = await stub.CheckLimit(
        pb.CheckLimitRequest(account_id="ws", limit="maxUsers", current=8), metadata=OPS
    )
    assert (answer.allowed, answer.limit, answer.current, answer.remaining) == (True, 10, 8, 2)
    assert answer.percentage == pytest.approx(80.0)
    assert answer.level == plan_pb2.USAGE_LEVEL_WARNING
    assert answer.plan_id == "free"
    full = await stub.CheckLimit(
        pb.CheckLimitRequest(account_id="ws", limit="maxUsers", current=10), metadata=OPS
    )
    assert not full.allowed and full.level == plan_pb2.USAGE_LEVEL_EXCEEDED


async def test_check_limit_without_current_uses_tracked_usage(stub, server: Running) -> None:
    await report(stub, event("ws", "a", 9500))
    answer = await stub.CheckLimit(
        pb.CheckLimitRequest(account_id="ws", limit="maxMessages"), metadata=OPS
    )
    assert (answer.current, answer.allowed, answer.level) == (
        9500,
        True,
        plan_pb2.USAGE_LEVEL_UPGRADE_PROMPT,
    )
    await server.deps.service.save_subscription(subscription("ws", "enterprise"))
    answer = await stub.CheckLimit(
        pb.CheckLimitRequest(account_id="ws", limit="maxMessages"), metadata=OPS
    )
    assert answer.unlimited and answer.allowed and answer.plan_id == "enterprise"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.CheckLimitRequest(account_id="ws", limit="maxTeleports"), "limit"),
        (pb.CheckLimitRequest(account_id="ws", limit="maxCallParticipants"), "current"),
        (pb.CheckLimitRequest(account_id="ws", limit="maxUsers", current=-1), "current"),
        (pb.CheckLimitRequest(account_id="", limit="maxUsers"), "account_id"),
    ],
)
async def test_check_limit_bad_input(
    lone_channel, request_: pb.CheckLimitRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.UsageServiceStub(lone_channel).CheckLimit(request_, metadata=OPS)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == [field]


async def test_get_usage_reports_every_metric_with_limits(stub) -> None:
    await report(stub, event("ws", "a", 100, metric="aiQueries"))
    answer = await stub.GetUsage(pb.GetUsageRequest(account_id="ws"), metadata=OPS)
    metrics = {m.metric: m for m in answer.metrics}
    assert set(metrics) == {
        "users",
        "channels",
        "messages",
        "storageGB",
        "integrations",
        "bots",
        "aiMinutes",
        "aiQueries",
        "callMinutes",
        "recordingGB",
    }
    assert (metrics["aiQueries"].current, metrics["aiQueries"].limit) == (100, 100)
    assert metrics["aiQueries"].level == plan_pb2.USAGE_LEVEL_EXCEEDED
    assert metrics["aiQueries"].monthly and not metrics["users"].monthly
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUsage(pb.GetUsageRequest(account_id="ws", period="2026-13"), metadata=OPS)
    assert details(caught.value)[1] == ["period"]


async def test_enforced_event_past_the_limit_is_refused_and_changes_nothing(stub) -> None:
    await report(stub, event("ws", "base", 9990))
    refused, fits = await report(
        stub,
        event("ws", "big", 20, enforce_limit=True),
        event("ws", "exact", 10, enforce_limit=True),
    )
    assert (refused.status, refused.total) == (REFUSED, 9990)
    assert (fits.status, fits.total) == (APPLIED, 10000)
    assert (await usage(stub, "ws"))["messages"] == 10000
    # a refused key was not recorded: the same event may be tried again later
    retry = await report(stub, event("ws", "big", 20, enforce_limit=True))
    assert retry[0].status == REFUSED


async def test_concurrent_enforced_events_never_pass_the_limit(stub) -> None:
    await report(stub, event("ws", "base", 9990))
    results = await asyncio.gather(
        *(report(stub, event("ws", f"e{i}", 1, enforce_limit=True)) for i in range(40))
    )
    statuses = [r[0].status for r in results]
    assert statuses.count(APPLIED) == 10
    assert statuses.count(REFUSED) == 30
    assert (await usage(stub, "ws"))["messages"] == 10000


async def test_concurrent_reports_with_duplicates_end_with_exact_totals(stub) -> None:
    rng = random.Random(7)
    accounts = [f"ws-{i}" for i in range(5)]
    events = [(rng.choice(accounts), f"key-{i}", rng.randint(1, 5)) for i in range(2000)]
    expected: dict[str, int] = {}
    for account, _, delta in events:
        expected[account] = expected.get(account, 0) + delta
    # every event is sent once, a third of them again (retries), in shuffled batches
    sends = events + rng.sample(events, 700)
    rng.shuffle(sends)
    batches = [sends[i : i + 100] for i in range(0, len(sends), 100)]
    results = await asyncio.gather(
        *(report(stub, *(event(a, k, d) for a, k, d in batch)) for batch in batches)
    )
    statuses = [r.status for batch in results for r in batch]
    assert statuses.count(APPLIED) == 2000
    assert statuses.count(DUPLICATE) == 700
    for account in accounts:
        assert (await usage(stub, account))["messages"] == expected[account]


async def test_threshold_crossings_are_pushed_once_per_level(stub, channel) -> None:
    watch = ent_grpc.EntitlementsServiceStub(channel).WatchEntitlements(
        ent_pb.WatchEntitlementsRequest(account_ids=["ws"]), metadata=OPS
    )
    await asyncio.sleep(0.1)
    await report(stub, event("ws", "a", 7600))  # 76 %: warning
    first = await asyncio.wait_for(watch.read(), 1)
    assert first.WhichOneof("event") == "threshold_crossed"
    crossed = first.threshold_crossed
    assert (crossed.metric, crossed.limit_key, crossed.level) == (
        "messages",
        "maxMessages",
        plan_pb2.USAGE_LEVEL_WARNING,
    )
    assert (crossed.current, crossed.limit) == (7600, 10000)
    await report(stub, event("ws", "b", 3000))  # 106 %: upgrade prompt and exceeded at once
    levels = [(await asyncio.wait_for(watch.read(), 1)).threshold_crossed.level for _ in range(2)]
    assert levels == [plan_pb2.USAGE_LEVEL_UPGRADE_PROMPT, plan_pb2.USAGE_LEVEL_EXCEEDED]
    await report(stub, event("ws", "c", 10))  # no new level
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(watch.read(), 0.3)
    watch.cancel()


async def test_usage_scopes_are_enforced(lone_channel) -> None:
    stub = pb_grpc.UsageServiceStub(lone_channel)
    chat = (("authorization", "Bearer chat-backend-token-0001"),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReportUsage(pb.ReportUsageRequest(events=[event("ws", "a")]), metadata=chat)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    messages = (("authorization", "Bearer message-service-token-01"),)
    ok = await stub.ReportUsage(pb.ReportUsageRequest(events=[event("ws", "a")]), metadata=messages)
    assert ok.results[0].status == APPLIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUsage(pb.GetUsageRequest(account_id="ws"), metadata=messages)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
