"""The revenue formulas (docs/admin.md) on the hand-computed data set and on edge cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from entitlements.admin.metrics import RevenueMetrics, compute_metrics
from entitlements.policies import default_catalog
from tests.admin import dataset as d

CATALOG = default_catalog()


def metrics(
    subscriptions: object = d.SUBSCRIPTIONS,
    revenue: object = d.REVENUE,
    failed: object = d.FAILED,
    **kw: object,
) -> RevenueMetrics:
    options: dict[str, object] = {
        "as_of": d.NOW,
        "churn_window_days": 30,
        "past_due_grace": d.GRACE,
    }
    options.update(kw)
    return compute_metrics(CATALOG, subscriptions, revenue, failed, **options)  # type: ignore[arg-type]


def test_no_subscriptions_gives_zeros_and_no_churn() -> None:
    m = metrics([], [], [])
    assert (m.total_revenue_cents, m.mrr_cents, m.arr_cents, m.active_subscriptions) == (0, 0, 0, 0)
    assert m.churn_rate == 0.0 and m.active_at_window_start == 0
    assert m.plan_distribution == [(p.id, 0) for p in CATALOG.plans]
    assert m.upcoming_renewals == []
    assert [h.mrr_cents for h in m.mrr_history] == [0] * 12
    assert [(b.payment_method, b.revenue_cents, b.payments) for b in m.payment_methods] == [
        ("card", 0, 0),
        ("crypto", 0, 0),
    ]


def test_active_subscriptions_follow_the_entitlement_rules() -> None:
    m = metrics()
    assert m.active_subscriptions == d.EXPECTED_ACTIVE
    assert m.trialing_subscriptions == 1
    assert m.plan_distribution == d.EXPECTED_PLANS


def test_mrr_normalises_yearly_to_monthly_and_excludes_trials() -> None:
    m = metrics()
    assert m.mrr_cents == d.EXPECTED_MRR == 14_900 + 102_083
    assert m.arr_cents == 12 * d.EXPECTED_MRR


def test_mid_month_upgrade_counts_the_new_plan_in_mrr_and_every_invoice_in_revenue() -> None:
    only = [s for s in d.SUBSCRIPTIONS if s.account_id == "a-upgrade"]
    m = metrics(only, [f for f in d.REVENUE if f.account_id == "a-upgrade"], [])
    assert m.mrr_cents == 7500
    assert m.total_revenue_cents == 800 + 800 + 4467


def test_cancel_at_period_end_counts_until_the_period_ends_and_never_renews() -> None:
    cape = next(s for s in d.SUBSCRIPTIONS if s.account_id == "a-cape")
    before = metrics([cape], [], [])
    assert before.active_subscriptions == 1 and before.mrr_cents == 2500
    assert before.upcoming_renewals == []
    after = metrics([cape], [], [], as_of=d.days(21))
    assert after.active_subscriptions == 0 and after.mrr_cents == 0


def test_past_due_counts_only_within_the_grace_period() -> None:
    pd_in = next(s for s in d.SUBSCRIPTIONS if s.account_id == "a-pd-in")
    pd_out = next(s for s in d.SUBSCRIPTIONS if s.account_id == "a-pd-out")
    m = metrics([pd_in, pd_out], [], [])
    assert m.active_subscriptions == 1 and m.mrr_cents == 800
    assert metrics([pd_in], [], [], as_of=d.days(4) + timedelta(seconds=1)).mrr_cents == 0


def test_total_revenue_is_usd_only_and_other_currencies_are_reported_apart() -> None:
    m = metrics()
    assert m.total_revenue_cents == d.EXPECTED_TOTAL
    assert [(c.currency, c.payments, c.amount_minor) for c in m.other_currencies] == [
        ("eur", 1, 700)
    ]


def test_payment_method_breakdown() -> None:
    m = metrics()
    assert [
        (b.payment_method, b.revenue_cents, b.payments, b.active_subscriptions)
        for b in m.payment_methods
    ] == [
        ("card", d.EXPECTED_CARD_REVENUE, 16, 7),
        ("crypto", 0, 0, 1),
        ("manual", 1_200_000, 1, 1),
    ]


def test_churn_is_ended_over_active_at_window_start() -> None:
    m = metrics()
    assert (m.churned, m.active_at_window_start) == (2, 8)
    assert m.churn_rate == d.EXPECTED_CHURN


def test_a_replaced_subscription_is_not_churn() -> None:
    old = replace(
        d.SUBSCRIPTIONS[0],
        status="canceled",
        ended_at=d.days(-5),
        canceled_at=d.days(-5),
        updated_at=d.days(-5),
    )
    new = replace(d.SUBSCRIPTIONS[0], id="sub_new", created_at=d.days(-5), updated_at=d.days(-5))
    m = metrics([old, new], [], [])
    assert (m.churned, m.active_at_window_start, m.active_subscriptions) == (0, 1, 1)


def test_failed_payments_count_each_invoice_once_within_the_window() -> None:
    m = metrics()
    assert (m.failed_payments.count, m.failed_payments.amount_cents) == (2, 800 + 7500)
    assert [(c.currency, c.payments, c.amount_minor) for c in m.failed_other_currencies] == [
        ("eur", 1, 700)
    ]


def test_upcoming_renewals_skip_cancelling_crypto_and_far_renewals() -> None:
    m = metrics()
    assert [
        (r.account_id, r.plan_id, r.renews_at, r.amount_cents) for r in m.upcoming_renewals
    ] == d.EXPECTED_RENEWALS


def test_mrr_history_has_twelve_months_ending_with_the_current_figure() -> None:
    m = metrics()
    months = {h.month: h.mrr_cents for h in m.mrr_history}
    assert list(months) == ["2025-12", *(f"2026-{n:02d}" for n in range(1, 12))]
    assert months["2025-12"] == 0
    assert months["2026-08"] == d.EXPECTED_MRR_AUGUST
    assert months["2026-11"] == m.mrr_cents


def test_figures_as_of_an_earlier_time_ignore_later_facts() -> None:
    m = metrics(as_of=d.days(-150))
    # Only the yearly pro subscription existed (created day -200, paid 25000).
    assert (m.active_subscriptions, m.total_revenue_cents) == (1, 25000)
    assert m.mrr_cents == (25000 + 6) // 12
