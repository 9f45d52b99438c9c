"""The MRR rule for manual (sales-led) contracts: their contract price counts, per currency,
until the term ends; invoices of a contract are revenue, not its price."""

from __future__ import annotations

from entitlements.admin.metrics import RevenueMetrics, compute_metrics
from entitlements.policies import default_catalog
from entitlements.store.admin_repository import RevenueFact
from entitlements.store.records import SubscriptionRecord
from tests.admin import dataset as d

CATALOG = default_catalog()


def contract(account: str, **kw: object) -> SubscriptionRecord:
    values: dict[str, object] = {
        "payment_method": "manual",
        "price_cents": 1_200_001,
        "currency": "usd",
        "interval": "year",
        "current_period_start": d.days(-60),
        "current_period_end": d.days(300),
        "created_at": d.days(-60),
        "updated_at": d.days(-60),
    }
    values.update(kw)
    return d.sub(account, "enterprise", **values)


def figures(
    subscriptions: list[SubscriptionRecord], revenue: list[RevenueFact] | None = None
) -> RevenueMetrics:
    return compute_metrics(
        CATALOG,
        subscriptions,
        revenue or [],
        [],
        as_of=d.NOW,
        churn_window_days=30,
        past_due_grace=d.GRACE,
    )


def test_a_yearly_contract_counts_its_price_over_twelve_rounded_half_up() -> None:
    m = figures([contract("acme"), contract("globex", price_cents=11)])
    assert m.mrr_cents == (1_200_001 + 11 + 6) // 12


def test_the_contract_price_wins_over_the_last_invoice() -> None:
    paid = RevenueFact(
        account_id="acme",
        subscription_id="sub_acme",
        amount_cents=5,
        currency="usd",
        payment_method="manual",
        paid_at=d.days(-1),
    )
    m = figures([contract("acme", interval="month", price_cents=70_000)], [paid])
    assert m.mrr_cents == 70_000
    assert m.total_revenue_cents == 5


def test_a_contract_in_another_currency_is_listed_apart_and_a_lapsed_term_counts_nothing() -> None:
    m = figures(
        [
            contract("acme-eu", currency="eur", interval="month", price_cents=300_000),
            contract("lapsed", current_period_end=d.days(-1)),
        ]
    )
    assert m.mrr_cents == 0
    assert [(c.currency, c.payments, c.amount_minor) for c in m.mrr_other_currencies] == [
        ("eur", 1, 300_000)
    ]
    assert m.active_subscriptions == 1
