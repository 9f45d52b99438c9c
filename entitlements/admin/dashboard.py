"""The revenue dashboard as a self-contained HTML page and as a terminal table; both show the
same figures as GetRevenueMetrics (plus the MRR history)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from entitlements.admin.audit_section import mrr_other_currencies_html, mrr_other_currencies_lines
from entitlements.admin.charts import bar_chart, line_chart, money
from entitlements.admin.metrics import RevenueMetrics

__all__ = ["FAVICON_SVG", "FundsLine", "render_html", "render_text"]

#: The page's icon (a bar chart), inline in the page so the browser asks for nothing more; also
#: served at /favicon.ico for the shim's other pages.
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#0f172a"/>'
    '<rect x="3" y="8" width="2.5" height="5" fill="#38bdf8"/>'
    '<rect x="6.75" y="5" width="2.5" height="8" fill="#38bdf8"/>'
    '<rect x="10.5" y="3" width="2.5" height="10" fill="#38bdf8"/></svg>'
)
_FAVICON_LINK = f'<link rel="icon" href="data:image/svg+xml,{quote(FAVICON_SVG)}">'


@dataclass(frozen=True, slots=True)
class FundsLine:
    """One row of the "crypto money without access" panel (ListUnsettledFunds' first page)."""

    item_id: str
    kind: str
    amount: str
    currency: str
    account_id: str
    tx_hash: str


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;
color:#0f172a;background:#f8fafc}
h1{font-size:22px;margin:0 0 4px}.sub{color:#475569;margin:0 0 20px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin-bottom:20px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 14px}
.card .k{font-size:12px;color:#475569;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:24px;font-weight:600;margin-top:4px}
.row{display:grid;grid-template-columns:1fr 1fr;gap:12px;margin-bottom:20px}
.panel{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 14px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e2e8f0}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.chart text{font-size:13px;fill:#0f172a}.chart .axis{font-size:11px;fill:#475569}
.chart .chart-title{font-size:14px;font-weight:600}
.note{color:#475569;font-size:13px}
"""


def _card(key: str, label: str, value: str) -> str:
    return (
        f'<div class="card"><div class="k">{escape(label)}</div>'
        f'<div class="v" id="{key}" data-metric="{key}">{escape(value)}</div></div>'
    )


def _funds_panel(funds: Sequence[FundsLine] | None, more: bool) -> str:
    if funds is None:
        return ""
    rows = (
        "".join(
            f'<tr data-item="{escape(f.item_id)}"><td>{escape(f.item_id)}</td>'
            f"<td>{escape(f.kind.replace('_', ' '))}</td>"
            f"<td class=n>{escape(f.amount)} {escape(f.currency)}</td>"
            f"<td>{escape(f.account_id) or '&mdash;'}</td>"
            f"<td><code>{escape(f.tx_hash[:10])}&hellip;</code></td></tr>"
            for f in funds
        )
        or '<tr><td colspan="5" class="note">none: every payment received gave its access</td></tr>'
    )
    tail = '<p class="note">More on the next pages of ListUnsettledFunds.</p>' if more else ""
    return (
        '<div class="panel" id="unsettled_funds"><h3>Crypto money without access</h3>'
        "<table><tr><th>item</th><th>kind</th><th class=n>received</th><th>account</th>"
        f"<th>transaction</th></tr>{rows}</table>{tail}"
        '<p class="note">Credit or refund each with AdminService.ResolveUnsettledFunds.</p></div>'
    )


def render_html(
    m: RevenueMetrics,
    funds: Sequence[FundsLine] | None = None,
    *,
    more_funds: bool = False,
    extra: str = "",
) -> str:
    """A read-only page: figure cards, the plan distribution and MRR history charts, tables,
    (with crypto payments set up) the crypto money received without access, and `extra`: more
    sections' HTML (already escaped), at the end."""
    cards = "".join(
        (
            _card("total_revenue", "Total revenue", money(m.total_revenue_cents)),
            _card("mrr", "MRR", money(m.mrr_cents)),
            _card("arr", "ARR", money(m.arr_cents)),
            _card("active_subscriptions", "Active subscriptions", str(m.active_subscriptions)),
            _card("churn_rate", f"Churn ({m.churn_window_days} d)", f"{m.churn_rate:.1%}"),
            _card("failed_payments", "Failed payments", str(m.failed_payments.count)),
            _card("failed_amount", "Failed amount", money(m.failed_payments.amount_cents)),
            _card("upcoming_renewals", "Renewals, next 30 d", str(len(m.upcoming_renewals))),
        )
    )
    plans = bar_chart(
        [(p, n) for p, n in m.plan_distribution], title="Active subscriptions by plan"
    )
    history = line_chart(
        [(h.month, h.mrr_cents) for h in m.mrr_history], title="MRR, last 12 months"
    )
    methods = "".join(
        f"<tr><td>{escape(b.payment_method)}</td><td class=n>{money(b.revenue_cents)}</td>"
        f"<td class=n>{b.payments}</td><td class=n>{b.active_subscriptions}</td></tr>"
        for b in m.payment_methods
    )
    renewals = (
        "".join(
            f"<tr><td>{escape(r.account_id)}</td><td>{escape(r.plan_id)}</td>"
            f"<td>{escape(r.interval)}</td><td>{r.renews_at:%Y-%m-%d %H:%M}</td>"
            f"<td class=n>{money(r.amount_cents)}</td></tr>"
            for r in m.upcoming_renewals[:50]
        )
        or '<tr><td colspan="5" class="note">none</td></tr>'
    )
    others = ""
    if m.other_currencies:
        listed = ", ".join(
            f"{c.payments} in {c.currency.upper()} ({c.amount_minor:,} minor units)"
            for c in m.other_currencies
        )
        others = (
            f'<p class="note" id="other_currencies">Not in the USD figures: {escape(listed)}.</p>'
        )
    failed_others = ""
    if m.failed_other_currencies:
        listed = ", ".join(
            f"{c.payments} failed in {c.currency.upper()} ({c.amount_minor:,} minor units)"
            for c in m.failed_other_currencies
        )
        failed_others = (
            f'<p class="note" id="failed_other_currencies">Not in the USD failed payments: '
            f"{escape(listed)}.</p>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
{_FAVICON_LINK}
<title>nchat entitlements: revenue</title><style>{_CSS}</style></head>
<body>
<h1>nchat entitlements: revenue</h1>
<p class="sub">As of {m.as_of:%Y-%m-%d %H:%M} UTC. Money in USD; read-only.</p>
<div class="cards">{cards}</div>{failed_others}
<div class="row"><div class="panel" id="plan_chart">{plans}</div>
<div class="panel" id="mrr_chart">{history}</div></div>
<div class="row"><div class="panel"><h3>By payment method</h3><table id="methods">
<tr><th>method</th><th class=n>revenue</th><th class=n>payments</th><th class=n>active</th></tr>
{methods}</table>{others}{mrr_other_currencies_html(m)}</div>
<div class="panel"><h3>Upcoming renewals</h3><table id="renewals">
<tr><th>account</th><th>plan</th><th>interval</th><th>renews</th><th class=n>amount</th></tr>
{renewals}</table></div></div>
{_funds_panel(funds, more_funds)}
{extra}</body></html>
"""


def _bar(value: int, top: int, width: int = 30) -> str:
    if top <= 0:
        return ""
    filled = round(width * value / top)
    return "█" * filled if filled else ("▏" if value else "")


def render_text(m: RevenueMetrics) -> str:
    """The dashboard for a terminal: figures, a text bar chart of plans, breakdowns."""
    rows = [
        ("Total revenue", money(m.total_revenue_cents)),
        ("MRR", money(m.mrr_cents)),
        ("ARR", money(m.arr_cents)),
        ("Active subscriptions", f"{m.active_subscriptions} ({m.trialing_subscriptions} trialing)"),
        (
            f"Churn ({m.churn_window_days} days)",
            f"{m.churn_rate:.1%} ({m.churned} of {m.active_at_window_start})",
        ),
        (
            "Failed payments",
            f"{m.failed_payments.count} ({money(m.failed_payments.amount_cents)})",
        ),
        ("Renewals, next 30 days", str(len(m.upcoming_renewals))),
    ]
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"Revenue as of {m.as_of:%Y-%m-%d %H:%M} UTC (USD)", ""]
    lines += [f"{k.ljust(width)}{v}" for k, v in rows]
    lines += ["", "Active subscriptions by plan"]
    top = max((n for _, n in m.plan_distribution), default=0)
    plan_w = max((len(p) for p, _ in m.plan_distribution), default=4) + 2
    for plan, n in m.plan_distribution:
        lines.append(f"  {plan.ljust(plan_w)}{str(n).rjust(5)}  {_bar(n, top)}")
    lines += ["", "By payment method         revenue   payments   active"]
    for b in m.payment_methods:
        lines.append(
            f"  {b.payment_method.ljust(10)}{money(b.revenue_cents).rjust(18)}"
            f"{str(b.payments).rjust(11)}{str(b.active_subscriptions).rjust(9)}"
        )
    lines += ["", "MRR, last 12 months"]
    top_mrr = max((h.mrr_cents for h in m.mrr_history), default=0)
    for h in m.mrr_history:
        lines.append(f"  {h.month}  {money(h.mrr_cents).rjust(14)}  {_bar(h.mrr_cents, top_mrr)}")
    if m.upcoming_renewals:
        lines += ["", "Upcoming renewals"]
        for r in m.upcoming_renewals[:20]:
            lines.append(
                f"  {r.renews_at:%Y-%m-%d}  {r.account_id:<24} {r.plan_id:<10} "
                f"{r.interval:<6}{money(r.amount_cents).rjust(12)}"
            )
        if len(m.upcoming_renewals) > 20:
            lines.append(f"  ... and {len(m.upcoming_renewals) - 20} more")
    for c in m.other_currencies:
        lines.append(
            f"Not in the USD figures: {c.payments} payments in {c.currency.upper()} "
            f"({c.amount_minor:,} minor units)"
        )
    for c in m.failed_other_currencies:
        lines.append(
            f"Not in the USD failed payments: {c.payments} failed in {c.currency.upper()} "
            f"({c.amount_minor:,} minor units)"
        )
    lines += mrr_other_currencies_lines(m)
    return "\n".join(lines)
