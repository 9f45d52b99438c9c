"""A hand-computed data set for the revenue metrics; the expected figures are worked out in
the comments next to each row (grace 7 days, churn window 30 days, as of NOW)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from entitlements.store.admin_repository import FailedPaymentFact, RevenueFact
from entitlements.store.models import Account, FailedPayment, PaidInvoice, Subscription
from entitlements.store.records import SubscriptionRecord
from entitlements.store.repository import Store

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
GRACE = timedelta(days=7)


def days(n: float) -> datetime:
    return NOW + timedelta(days=n)


def sub(account: str, plan: str, status: str = "active", **kw: Any) -> SubscriptionRecord:
    values: dict[str, Any] = {
        "id": f"sub_{account}",
        "account_id": account,
        "plan_id": plan,
        "status": status,
        "interval": "month",
        "payment_method": "card",
        "created_at": days(-30),
        "updated_at": days(-30),
    }
    values.update(kw)
    return SubscriptionRecord(**values)


SUBSCRIPTIONS = [
    # Monthly starter: active, MRR 800, renews in 10 days.
    sub(
        "a-monthly",
        "starter",
        created_at=days(-100),
        updated_at=days(-10),
        current_period_start=days(-10),
        current_period_end=days(10),
    ),
    # Yearly pro: MRR 25000 / 12; renews in 165 days (not listed).
    sub(
        "a-yearly",
        "pro",
        interval="year",
        created_at=days(-200),
        updated_at=days(-200),
        current_period_start=days(-200),
        current_period_end=days(165),
    ),
    # Mid-month upgrade starter -> business (same Stripe subscription): MRR 7500.
    sub(
        "a-upgrade",
        "business",
        created_at=days(-45),
        updated_at=days(-5),
        current_period_start=days(-15),
        current_period_end=days(15),
    ),
    # Canceled at period end: active (and in MRR) until day 20, never listed as a renewal.
    sub(
        "a-cape",
        "pro",
        cancel_at_period_end=True,
        canceled_at=days(-3),
        created_at=days(-60),
        updated_at=days(-3),
        current_period_start=days(-10),
        current_period_end=days(20),
    ),
    # Trialing: active, not in MRR (bills nothing yet); first charge at trial end (day 7).
    sub(
        "a-trial",
        "pro",
        "trialing",
        trial_end=days(7),
        created_at=days(-7),
        updated_at=days(-7),
        current_period_start=days(-7),
        current_period_end=days(7),
    ),
    # Past due within grace (since day -3, grace 7 days): active, MRR 800, renews day 27.
    sub(
        "a-pd-in",
        "starter",
        "past_due",
        past_due_since=days(-3),
        created_at=days(-40),
        updated_at=days(-3),
        current_period_start=days(-3),
        current_period_end=days(27),
    ),
    # Past due out of grace (since day -10): not active; in force at the window start: churned.
    sub(
        "a-pd-out",
        "business",
        "past_due",
        past_due_since=days(-10),
        created_at=days(-70),
        updated_at=days(-10),
        current_period_start=days(-10),
        current_period_end=days(20),
    ),
    # Pays in EUR: active, MRR at the catalog's USD price (800); its invoice is not in revenue.
    sub(
        "a-eur",
        "starter",
        created_at=days(-20),
        updated_at=days(-20),
        current_period_start=days(-20),
        current_period_end=days(10),
    ),
    # Canceled on day -12: in force at the window start, not now: churned.
    sub(
        "a-canceled",
        "pro",
        "canceled",
        canceled_at=days(-12),
        ended_at=days(-12),
        created_at=days(-90),
        updated_at=days(-12),
        current_period_start=days(-30),
        current_period_end=days(-12),
    ),
    # Paid in crypto: active, MRR 2500, never an automatic renewal.
    sub(
        "a-crypto",
        "pro",
        payment_method="crypto",
        created_at=days(-10),
        updated_at=days(-10),
        current_period_start=days(-10),
        current_period_end=days(20),
    ),
    # Never paid: not active.
    sub("a-incomplete", "starter", "incomplete", created_at=days(-2), updated_at=days(-2)),
    # Enterprise, custom price, paid yearly by invoice: MRR = its last invoice 1,200,000 / 12.
    sub(
        "a-ent",
        "enterprise",
        interval="year",
        payment_method="manual",
        created_at=days(-100),
        updated_at=days(-100),
        current_period_start=days(-100),
        current_period_end=days(265),
    ),
    # Created after as_of: invisible.
    sub(
        "a-later",
        "business",
        created_at=days(1),
        updated_at=days(1),
        current_period_start=days(1),
        current_period_end=days(31),
    ),
]


def paid(account: str, amount: int, at: float, currency: str = "usd", method: str = "card") -> Any:
    return RevenueFact(
        account_id=account,
        subscription_id=f"sub_{account}",
        amount_cents=amount,
        currency=currency,
        payment_method=method,
        paid_at=days(at),
    )


REVENUE = [
    *(paid("a-monthly", 800, d) for d in (-100, -70, -40, -10)),  # 3200, 4 payments
    paid("a-yearly", 25000, -200),  # 25000
    paid("a-upgrade", 800, -45),
    paid("a-upgrade", 800, -15),
    paid("a-upgrade", 4467, -5),  # the upgrade's proration: 6067 in all
    paid("a-cape", 2500, -40),
    paid("a-cape", 2500, -10),  # 5000
    paid("a-pd-in", 800, -33),  # 800
    paid("a-eur", 700, -20, currency="eur"),  # not in USD figures
    *(paid("a-canceled", 2500, d) for d in (-90, -60, -30)),  # 7500
    paid("a-pd-out", 7500, -70),
    paid("a-pd-out", 7500, -40),  # 15000
    paid("a-ent", 1_200_000, -100, method="manual"),
    paid("a-later", 7500, 1),  # after as_of
]

FAILED = [
    FailedPaymentFact("in_pd_in", "a-pd-in", 800, "usd", days(-3)),
    FailedPaymentFact("in_pd_out", "a-pd-out", 7500, "usd", days(-10)),
    FailedPaymentFact("in_pd_out", "a-pd-out", 7500, "usd", days(-5)),  # same invoice, again
    FailedPaymentFact("in_old", "a-canceled", 2500, "usd", days(-45)),  # before the window
    FailedPaymentFact("in_eur", "a-eur", 700, "eur", days(-2)),  # apart from the USD figures
]

# The figures, worked out by hand.
EXPECTED_ACTIVE = 9  # monthly, yearly, upgrade, cape, trial, pd-in, eur, crypto, ent
EXPECTED_MRR = (800 + 7500 + 2500 + 800 + 800 + 2500) + (25000 + 1_200_000 + 6) // 12
EXPECTED_CARD_REVENUE = 3200 + 25000 + 6067 + 5000 + 800 + 7500 + 15000
EXPECTED_TOTAL = EXPECTED_CARD_REVENUE + 1_200_000
EXPECTED_PLANS = [("free", 0), ("starter", 3), ("pro", 4), ("business", 1), ("enterprise", 1)]
# Window start: monthly, yearly, upgrade, cape, pd-in, pd-out, canceled, ent in force (8);
# pd-out and canceled are not now.
EXPECTED_CHURN = 2 / 8
EXPECTED_RENEWALS = [
    ("a-trial", "pro", days(7), 2500),
    ("a-eur", "starter", days(10), 800),
    ("a-monthly", "starter", days(10), 800),
    ("a-upgrade", "business", days(15), 7500),
    ("a-pd-in", "starter", days(27), 800),
]
# End of August 2026 (day -75.5): monthly 800, canceled 2500, yearly 25000 and ent 1,200,000.
EXPECTED_MRR_AUGUST = 800 + 2500 + (25000 + 1_200_000 + 6) // 12


async def load_into(store: Store) -> None:
    """Write the data set into a migrated database, timestamps as given."""
    async with store.engine.begin() as connection:
        accounts = sorted({s.account_id for s in SUBSCRIPTIONS})
        await connection.execute(insert(Account), [{"id": a, "revision": 1} for a in accounts])
        await connection.execute(
            insert(Subscription),
            [
                {f.name: getattr(s, f.name) for f in fields(SubscriptionRecord)}
                for s in SUBSCRIPTIONS
            ],
        )
        await connection.execute(
            insert(PaidInvoice),
            [
                {
                    "stripe_invoice_id": f"in_{i}",
                    "account_id": f.account_id,
                    "subscription_id": f.subscription_id,
                    "amount_cents": f.amount_cents,
                    "currency": f.currency,
                    "payment_method": f.payment_method,
                    "paid_at": f.paid_at,
                }
                for i, f in enumerate(REVENUE)
            ],
        )
        await connection.execute(
            insert(FailedPayment),
            [
                {
                    "stripe_invoice_id": f.invoice_id,
                    "attempt_count": i + 1,
                    "account_id": f.account_id,
                    "amount_cents": f.amount_cents,
                    "currency": f.currency,
                    "failed_at": f.failed_at,
                }
                for i, f in enumerate(FAILED)
            ],
        )
