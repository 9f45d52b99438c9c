"""BillingService over gRPC: validation, Stripe's answers and failures, the mirror it keeps."""

from __future__ import annotations

import socket
import time

import grpc
import pytest
from nchat.entitlements.v1 import billing_service_pb2 as pb
from nchat.entitlements.v1 import subscription_pb2

from tests.billing.conftest import Harness
from tests.billing.helpers import MONTH, YEAR, checkout_request, subscribe
from tests.server.conftest import CHAT
from tests.server.helpers import details


async def rpc_error(h: Harness, method: str, request: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.call(method, request)
    return caught.value


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"account_id": ""}, "account_id"),
        ({"plan_id": ""}, "plan_id"),
        ({"plan_id": "gold"}, "plan_id"),
        ({"plan_id": "free"}, "plan_id"),
        ({"plan_id": "enterprise"}, "plan_id"),
        ({"interval": 0}, "interval"),
        ({"interval": 7}, "interval"),
        ({"success_url": ""}, "success_url"),
        ({"success_url": "nchat.example/done"}, "success_url"),
        ({"cancel_url": "ftp://nchat.example/"}, "cancel_url"),
        ({"user_email": "not-an-address"}, "user_email"),
    ],
)
async def test_checkout_with_bad_input_is_invalid_argument_naming_the_field(
    lone_harness: Harness, overrides: dict[str, object], field: str
) -> None:
    request = checkout_request("acct-bad")
    for name, value in overrides.items():
        setattr(request, name, value)

    error = await rpc_error(lone_harness, "CreateCheckoutSession", request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields = details(error)
    assert fields == [field]
    assert info is not None and info.metadata["field"] == field
    assert lone_harness.double.checkout_sessions == {}


async def test_checkout_session_is_in_subscription_mode_for_the_plan_and_interval(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    answer = await h.call(
        "CreateCheckoutSession", checkout_request("acct-co", "pro", interval=YEAR)
    )

    session = h.double.checkout_sessions[answer.session_id]
    assert answer.url == session["url"]
    assert session["mode"] == "subscription"
    assert session["_price"] == "price_pro_yearly"
    assert session["client_reference_id"] == "acct-co"
    assert session["metadata"]["account_id"] == "acct-co"
    assert session["subscription_data"]["metadata"]["account_id"] == "acct-co"
    assert session["customer_email"] == "owner@example.com"
    method, path, _, key = h.double.requests[-1]
    assert (method, path) == ("POST", "checkout/sessions") and key


async def test_checkout_reuses_the_accounts_existing_customer(lone_harness: Harness) -> None:
    h = lone_harness
    session, _ = await subscribe(h, "acct-again")
    await h.call("CancelSubscription", pb.CancelSubscriptionRequest(account_id="acct-again"))

    answer = await h.call("CreateCheckoutSession", checkout_request("acct-again", "business"))

    again = h.double.checkout_sessions[answer.session_id]
    assert again["customer"] == session["customer"]
    assert again["customer_email"] is None


async def test_checkout_while_subscribed_is_failed_precondition(lone_harness: Harness) -> None:
    h = lone_harness
    await subscribe(h, "acct-twice")

    error = await rpc_error(h, "CreateCheckoutSession", checkout_request("acct-twice", "pro"))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "UpdateSubscription" in (error.details() or "")


async def test_checkout_retried_with_the_same_key_creates_one_session(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    request = checkout_request("acct-idem", idempotency_key="client-key-1")

    first = await h.call("CreateCheckoutSession", request)
    second = await h.call("CreateCheckoutSession", request)
    derived = [
        await h.call("CreateCheckoutSession", checkout_request("acct-derived")) for _ in range(2)
    ]

    assert first.session_id == second.session_id
    assert derived[0].session_id == derived[1].session_id
    assert len(h.double.checkout_sessions) == 2


async def test_same_idempotency_key_with_other_parameters_is_surfaced(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    await h.call("CreateCheckoutSession", checkout_request("acct-k", idempotency_key="reused-key"))

    error = await rpc_error(
        h, "CreateCheckoutSession", checkout_request("acct-k", "pro", idempotency_key="reused-key")
    )

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    info, _ = details(error)
    assert info is not None and info.reason == "ERROR_REASON_IDEMPOTENCY_KEY_REUSED"


async def test_stripe_down_is_unavailable(lone_harness: Harness) -> None:
    h = lone_harness
    h.double.outage = True

    error = await rpc_error(h, "CreateCheckoutSession", checkout_request("acct-down"))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    info, _ = details(error)
    assert info is not None and info.reason == "ERROR_REASON_DEPENDENCY_UNAVAILABLE"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("env_extra", [{"STRIPE_API_BASE": f"http://127.0.0.1:{_closed_port()}"}])
async def test_stripe_refusing_connections_is_unavailable(lone_harness: Harness) -> None:
    error = await rpc_error(lone_harness, "CreateCheckoutSession", checkout_request("acct-r"))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Stripe unavailable" in (error.details() or "")


async def test_portal_needs_a_stripe_customer(lone_harness: Harness) -> None:
    h = lone_harness
    error = await rpc_error(
        h,
        "CreatePortalSession",
        pb.CreatePortalSessionRequest(account_id="acct-none", return_url="https://x.example/"),
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    session, _ = await subscribe(h, "acct-portal")
    answer = await h.call(
        "CreatePortalSession",
        pb.CreatePortalSessionRequest(account_id="acct-portal", return_url="https://x.example/"),
    )
    portal = next(iter(h.double.portal_sessions.values()))
    assert answer.url == portal["url"]
    assert portal["customer"] == session["customer"]


async def test_portal_with_a_bad_return_url_names_it(lone_harness: Harness) -> None:
    error = await rpc_error(
        lone_harness,
        "CreatePortalSession",
        pb.CreatePortalSessionRequest(account_id="acct-x", return_url="javascript:alert(1)"),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error)[1] == ["return_url"]


async def test_get_subscription_without_one_is_not_found(lone_harness: Harness) -> None:
    error = await rpc_error(
        lone_harness, "GetSubscription", pb.GetSubscriptionRequest(account_id="acct-nobody")
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_get_subscription_returns_the_seeds_columns(lone_harness: Harness) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-get", "business")

    got = await h.call("GetSubscription", pb.GetSubscriptionRequest(account_id="acct-get"))
    s = got.subscription

    assert (s.account_id, s.plan_id, s.interval) == ("acct-get", "business", MONTH)
    assert s.status == subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE
    assert s.payment_method == subscription_pb2.PAYMENT_METHOD_CARD
    assert (s.stripe_subscription_id, s.stripe_price_id) == (sub["id"], "price_business_monthly")
    assert s.user_id == "user-1"
    item = sub["items"]["data"][0]
    assert s.current_period_end.seconds == item["current_period_end"]
    assert s.current_period_start.seconds == item["current_period_start"]


async def test_update_changes_the_interval_with_proration(lone_harness: Harness) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-yearly", "starter")

    answer = await h.call(
        "UpdateSubscription", pb.UpdateSubscriptionRequest(account_id="acct-yearly", interval=YEAR)
    )

    assert (answer.subscription.plan_id, answer.subscription.interval) == ("starter", YEAR)
    upstream = h.double.subscriptions[sub["id"]]
    assert upstream["items"]["data"][0]["price"]["id"] == "price_starter_yearly"
    assert upstream["_last_proration"] == "create_prorations"


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"plan_id": "gold"}, grpc.StatusCode.INVALID_ARGUMENT, "plan_id"),
        ({"plan_id": "enterprise"}, grpc.StatusCode.INVALID_ARGUMENT, "plan_id"),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "plan_id"),
        ({"interval": 9}, grpc.StatusCode.INVALID_ARGUMENT, "interval"),
    ],
)
async def test_update_with_bad_input_names_the_field(
    lone_harness: Harness, request_fields: dict[str, object], code: grpc.StatusCode, field: str
) -> None:
    error = await rpc_error(
        lone_harness,
        "UpdateSubscription",
        pb.UpdateSubscriptionRequest(account_id="acct-u", **request_fields),  # type: ignore[arg-type]
    )
    assert error.code() == code
    assert details(error)[1] == [field]


async def test_update_without_a_subscription_is_not_found(lone_harness: Harness) -> None:
    error = await rpc_error(
        lone_harness,
        "UpdateSubscription",
        pb.UpdateSubscriptionRequest(account_id="acct-none", plan_id="pro"),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_at_period_end_keeps_the_plan_and_resume_undoes_it(
    lone_harness: Harness,
) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-cancel", "pro")

    canceled = await h.call(
        "CancelSubscription",
        pb.CancelSubscriptionRequest(account_id="acct-cancel", at_period_end=True),
    )
    assert canceled.subscription.cancel_at_period_end is True
    assert h.double.subscriptions[sub["id"]]["cancel_at_period_end"] is True
    assert await h.can_use("acct-cancel", "tokenGating") == (True, "pro")

    resumed = await h.call(
        "ResumeSubscription", pb.ResumeSubscriptionRequest(account_id="acct-cancel")
    )
    assert resumed.subscription.cancel_at_period_end is False
    assert h.double.subscriptions[sub["id"]]["cancel_at_period_end"] is False

    error = await rpc_error(
        h, "ResumeSubscription", pb.ResumeSubscriptionRequest(account_id="acct-cancel")
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_now_ends_the_plan_at_once(lone_harness: Harness) -> None:
    h = lone_harness
    _, sub = await subscribe(h, "acct-now", "pro")

    answer = await h.call("CancelSubscription", pb.CancelSubscriptionRequest(account_id="acct-now"))

    assert answer.subscription.status == subscription_pb2.SUBSCRIPTION_STATUS_CANCELED
    assert answer.subscription.ended_at.seconds >= int(time.time()) - 5
    assert h.double.subscriptions[sub["id"]]["status"] == "canceled"
    assert await h.can_use("acct-now", "tokenGating") == (False, "free")
    error = await rpc_error(
        h, "UpdateSubscription", pb.UpdateSubscriptionRequest(account_id="acct-now", plan_id="pro")
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_billing_needs_the_billing_write_scope(lone_harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lone_harness.stub.GetSubscription(
            pb.GetSubscriptionRequest(account_id="acct-x"), metadata=CHAT
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
