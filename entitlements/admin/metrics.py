"""Revenue metrics computed from stored facts (subscriptions, revenue facts, failed payments).

Pure functions: no I/O, the time is a parameter. The formulas are written down in docs/admin.md;
which plan a subscription grants at a moment is `entitlements.state`'s rule, not re-invented here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from entitlements.policies import Catalog
from entitlements.state import FIXED_TERM_METHODS, grants_plan
from entitlements.store.admin_repository import FailedPaymentFact, RevenueFact
from entitlements.store.records import ENDED_STATUSES, SubscriptionRecord

__all__ = [
    "REPORTING_CURRENCY",
    "CurrencyTotal",
    "FailedPayments",
    "MethodBreakdown",
    "MonthlyMrr",
    "RevenueMetrics",
    "UpcomingRenewal",
    "compute_metrics",
    "current_subscriptions",
    "in_force",
    "mrr_by_currency",
    "period_amount",
]

#: Money figures are in this currency's minor units; facts in other currencies are counted apart.
REPORTING_CURRENCY = "usd"
#: Renewals listed are those due within this long of `as_of`.
RENEWAL_HORIZON = timedelta(days=30)
#: Months of MRR history (the current month included).
HISTORY_MONTHS = 12
#: Statuses that never granted anything, whatever their timestamps say.
_NEVER_GRANTED = frozenset({"incomplete", "incomplete_expired"})
#: Statuses that mean the subscription has stopped.
_STOPPED = frozenset({"canceled", "unpaid", "paused", "incomplete_expired"})


@dataclass(frozen=True, slots=True)
class MethodBreakdown:
    payment_method: str
    revenue_cents: int
    payments: int
    active_subscriptions: int


@dataclass(frozen=True, slots=True)
class UpcomingRenewal:
    account_id: str
    subscription_id: str
    plan_id: str
    interval: str
    renews_at: datetime
    amount_cents: int


@dataclass(frozen=True, slots=True)
class FailedPayments:
    count: int
    amount_cents: int


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """Facts in a currency other than the reporting one: left out of every cents figure."""

    currency: str
    payments: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class MonthlyMrr:
    month: str  # "YYYY-MM"
    at: datetime
    mrr_cents: int


@dataclass(frozen=True, slots=True)
class RevenueMetrics:
    as_of: datetime
    churn_window_days: int
    total_revenue_cents: int
    mrr_cents: int
    arr_cents: int
    active_subscriptions: int
    trialing_subscriptions: int
    churn_rate: float
    churned: int
    active_at_window_start: int
    #: (plan id, active subscriptions) in the catalog's tier order, every plan listed.
    plan_distribution: list[tuple[str, int]]
    payment_methods: list[MethodBreakdown]
    failed_payments: FailedPayments
    upcoming_renewals: list[UpcomingRenewal]
    mrr_history: list[MonthlyMrr]
    other_currencies: list[CurrencyTotal] = field(default_factory=list)
    failed_other_currencies: list[CurrencyTotal] = field(default_factory=list)
    #: MRR of subscriptions priced in another currency (manual contracts), per currency:
    #: `payments` is the number of paying subscriptions, `amount_minor` their MRR.
    mrr_other_currencies: list[CurrencyTotal] = field(default_factory=list)


def _sort_key(sub: SubscriptionRecord) -> tuple[datetime, bool, datetime, str]:
    # The same order as the store's "latest subscription" of an account (an ended one loses a
    # tie on `created`, which has one-second precision).
    return (sub.created_at, sub.status not in ENDED_STATUSES, sub.updated_at, sub.id)


def current_subscriptions(
    subscriptions: Iterable[SubscriptionRecord], at: datetime
) -> list[SubscriptionRecord]:
    """Per account, the latest subscription created at or before `at`: the one the entitlement
    rules look at."""
    latest: dict[str, SubscriptionRecord] = {}
    for sub in subscriptions:
        if sub.created_at > at:
            continue
        held = latest.get(sub.account_id)
        if held is None or _sort_key(sub) > _sort_key(held):
            latest[sub.account_id] = sub
    return list(latest.values())


def end_of(sub: SubscriptionRecord, past_due_grace: timedelta) -> datetime | None:
    """When the subscription stopped (or will stop) granting its plan, from its timestamps;
    None when nothing says it ends."""
    ends: list[datetime] = []
    if sub.ended_at is not None:
        ends.append(sub.ended_at)
    if sub.status in _STOPPED:
        ends.append(sub.canceled_at or sub.ended_at or sub.updated_at)
    renews = not (sub.cancel_at_period_end or sub.payment_method in FIXED_TERM_METHODS)
    if not renews and sub.current_period_end is not None:
        ends.append(sub.current_period_end)
    if sub.status == "past_due":
        ends.append((sub.past_due_since or sub.updated_at) + past_due_grace)
    return min(ends) if ends else None


def in_force(
    catalog: Catalog, sub: SubscriptionRecord, at: datetime, past_due_grace: timedelta
) -> bool:
    """True if the subscription granted its plan at `at`.

    From the row's last change on (`updated_at`), its status is known to hold, so this is exactly
    `entitlements.state`'s rule. Before that the mirror keeps no history: the subscription counts
    from `created_at` until `end_of` (never, for incomplete ones).
    """
    if sub.created_at > at:
        return False
    if at >= sub.updated_at:
        return grants_plan(catalog, sub, now=at, past_due_grace=past_due_grace)
    if sub.status in _NEVER_GRANTED or sub.plan_id == catalog.default_plan_id:
        return False
    end = end_of(sub, past_due_grace)
    return end is None or at < end


def is_trialing(sub: SubscriptionRecord, at: datetime) -> bool:
    if at >= sub.updated_at:
        return sub.status == "trialing"
    return sub.trial_end is not None and at < sub.trial_end


def _custom_amounts(facts: Sequence[RevenueFact]) -> dict[str, int]:
    """The last amount billed in the reporting currency per subscription (custom-priced plans)."""
    last: dict[str, int] = {}
    for fact in facts:  # oldest first
        if fact.subscription_id is not None and fact.currency == REPORTING_CURRENCY:
            last[fact.subscription_id] = fact.amount_cents
    return last


def period_amount(
    catalog: Catalog, sub: SubscriptionRecord, billed: dict[str, int]
) -> tuple[str, int]:
    """What one billing period of the subscription costs: (currency, minor units). A manual
    subscription's contract price, in its currency; else the catalog's list price (USD) for its
    plan and interval; for a custom-priced plan without a contract price, the last invoice billed
    for it in USD (0 if none)."""
    if sub.price_cents is not None:
        return (sub.currency or REPORTING_CURRENCY), sub.price_cents
    plan = catalog.plan(sub.plan_id)
    if plan.custom_pricing:
        return REPORTING_CURRENCY, billed.get(sub.id, 0)
    price = plan.price_yearly_cents if sub.interval == "year" else plan.price_monthly_cents
    return REPORTING_CURRENCY, price or 0


def period_price(catalog: Catalog, sub: SubscriptionRecord, billed: dict[str, int]) -> int:
    """`period_amount` in US cents; 0 for a price in another currency (never converted)."""
    currency, amount = period_amount(catalog, sub, billed)
    return amount if currency == REPORTING_CURRENCY else 0


def mrr_by_currency(
    catalog: Catalog,
    subscriptions: Sequence[SubscriptionRecord],
    at: datetime,
    past_due_grace: timedelta,
    billed: dict[str, int],
) -> dict[str, tuple[int, int]]:
    """MRR at `at` per currency: (paying subscriptions, MRR in minor units). Monthly prices of
    the paying subscriptions in force, plus their yearly prices divided by 12 (summed first, then
    rounded half up, so no cent is lost per row)."""
    parts: dict[str, list[int]] = {}
    for sub in current_subscriptions(subscriptions, at):
        if not in_force(catalog, sub, at, past_due_grace) or is_trialing(sub, at):
            continue
        currency, price = period_amount(catalog, sub, billed)
        entry = parts.setdefault(currency, [0, 0, 0])
        entry[0] += 1
        entry[2 if sub.interval == "year" else 1] += price
    return {c: (n, monthly + (yearly + 6) // 12) for c, (n, monthly, yearly) in parts.items()}


def mrr_at(
    catalog: Catalog,
    subscriptions: Sequence[SubscriptionRecord],
    at: datetime,
    past_due_grace: timedelta,
    billed: dict[str, int],
) -> int:
    """MRR at `at` in US cents (prices in other currencies are left out: `mrr_by_currency`)."""
    parts = mrr_by_currency(catalog, subscriptions, at, past_due_grace, billed)
    return parts.get(REPORTING_CURRENCY, (0, 0))[1]


def _month_starts(as_of: datetime, months: int) -> list[datetime]:
    """The first instant of each of the `months` calendar months up to `as_of`'s, oldest first."""
    year, month = as_of.year, as_of.month
    starts = []
    for _ in range(months):
        starts.append(datetime(year, month, 1, tzinfo=UTC))
        month -= 1
        if month == 0:
            year, month = year - 1, 12
    return starts[::-1]


def _next_month(start: datetime) -> datetime:
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def compute_metrics(
    catalog: Catalog,
    subscriptions: Sequence[SubscriptionRecord],
    revenue: Sequence[RevenueFact],
    failed: Sequence[FailedPaymentFact],
    *,
    as_of: datetime,
    churn_window_days: int,
    past_due_grace: timedelta,
    history_months: int = HISTORY_MONTHS,
) -> RevenueMetrics:
    """Every dashboard figure as of `as_of` (see docs/admin.md for the definitions)."""
    as_of = as_of.astimezone(UTC)
    revenue = sorted((f for f in revenue if f.paid_at <= as_of), key=lambda f: f.paid_at)
    billed = _custom_amounts(revenue)

    current = [
        s
        for s in current_subscriptions(subscriptions, as_of)
        if in_force(catalog, s, as_of, past_due_grace)
    ]
    per_plan: dict[str, int] = defaultdict(int)
    per_method_active: dict[str, int] = defaultdict(int)
    for sub in current:
        per_plan[sub.plan_id] += 1
        per_method_active[sub.payment_method] += 1

    total = 0
    per_method_revenue: dict[str, int] = defaultdict(int)
    per_method_payments: dict[str, int] = defaultdict(int)
    others: dict[str, list[int]] = {}
    for fact in revenue:
        if fact.currency != REPORTING_CURRENCY:
            entry = others.setdefault(fact.currency, [0, 0])
            entry[0] += 1
            entry[1] += fact.amount_cents
            continue
        total += fact.amount_cents
        per_method_revenue[fact.payment_method] += fact.amount_cents
        per_method_payments[fact.payment_method] += 1
    methods = ["card", "crypto"]
    if per_method_active.get("manual") or per_method_payments.get("manual"):
        methods.append("manual")

    window_start = as_of - timedelta(days=churn_window_days)
    cohort = [
        s
        for s in current_subscriptions(subscriptions, window_start)
        if in_force(catalog, s, window_start, past_due_grace)
    ]
    in_force_at_end = {
        s.account_id
        for s in current_subscriptions(subscriptions, as_of)
        if in_force(catalog, s, as_of, past_due_grace)
    }
    churned = sum(
        1
        for s in cohort
        if not in_force(catalog, s, as_of, past_due_grace) and s.account_id not in in_force_at_end
    )

    # An invoice retried three times is one failed payment: its latest attempt counts.
    latest_attempt: dict[str, FailedPaymentFact] = {}
    for f in sorted(failed, key=lambda f: f.failed_at):
        if window_start < f.failed_at <= as_of:
            latest_attempt[f.invoice_id] = f
    failed_in_window = list(latest_attempt.values())
    failed_usd = [f for f in failed_in_window if f.currency == REPORTING_CURRENCY]
    failed_others: dict[str, list[int]] = {}
    for f in failed_in_window:
        if f.currency != REPORTING_CURRENCY:
            entry = failed_others.setdefault(f.currency, [0, 0])
            entry[0] += 1
            entry[1] += f.amount_cents

    renewals = []
    for sub in current:
        if sub.cancel_at_period_end or sub.payment_method != "card":
            continue
        renews_at = sub.current_period_end
        if sub.status == "trialing" and sub.trial_end is not None:
            renews_at = sub.trial_end
        if renews_at is None or not as_of < renews_at <= as_of + RENEWAL_HORIZON:
            continue
        renewals.append(
            UpcomingRenewal(
                account_id=sub.account_id,
                subscription_id=sub.id,
                plan_id=sub.plan_id,
                interval=sub.interval,
                renews_at=renews_at,
                amount_cents=period_price(catalog, sub, billed),
            )
        )
    renewals.sort(key=lambda r: (r.renews_at, r.account_id))

    mrr_parts = mrr_by_currency(catalog, subscriptions, as_of, past_due_grace, billed)
    mrr = mrr_parts.get(REPORTING_CURRENCY, (0, 0))[1]
    history = []
    for start in _month_starts(as_of, history_months):
        end = _next_month(start)
        at = as_of if end > as_of else end - timedelta(microseconds=1)
        history.append(
            MonthlyMrr(
                month=f"{start.year:04d}-{start.month:02d}",
                at=at,
                mrr_cents=mrr_at(catalog, subscriptions, at, past_due_grace, billed),
            )
        )

    return RevenueMetrics(
        as_of=as_of,
        churn_window_days=churn_window_days,
        total_revenue_cents=total,
        mrr_cents=mrr,
        arr_cents=12 * mrr,
        active_subscriptions=len(current),
        trialing_subscriptions=sum(1 for s in current if is_trialing(s, as_of)),
        churn_rate=churned / len(cohort) if cohort else 0.0,
        churned=churned,
        active_at_window_start=len(cohort),
        plan_distribution=[(p.id, per_plan.get(p.id, 0)) for p in catalog.plans],
        payment_methods=[
            MethodBreakdown(
                payment_method=m,
                revenue_cents=per_method_revenue.get(m, 0),
                payments=per_method_payments.get(m, 0),
                active_subscriptions=per_method_active.get(m, 0),
            )
            for m in methods
        ],
        failed_payments=FailedPayments(
            count=len(failed_usd), amount_cents=sum(f.amount_cents for f in failed_usd)
        ),
        upcoming_renewals=renewals,
        mrr_history=history,
        other_currencies=[
            CurrencyTotal(currency=c, payments=n, amount_minor=a)
            for c, (n, a) in sorted(others.items())
        ],
        failed_other_currencies=[
            CurrencyTotal(currency=c, payments=n, amount_minor=a)
            for c, (n, a) in sorted(failed_others.items())
        ],
        mrr_other_currencies=[
            CurrencyTotal(currency=c, payments=n, amount_minor=a)
            for c, (n, a) in sorted(mrr_parts.items())
            if c != REPORTING_CURRENCY
        ],
    )
