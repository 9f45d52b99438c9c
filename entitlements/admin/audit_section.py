"""The sales-led parts of the dashboard: the audit log section of `/admin` (the latest admin
changes), and the MRR of contracts priced in another currency (page and text report)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html import escape
from typing import Any

from entitlements.admin.audit import AuditLog, AuditQuery
from entitlements.admin.metrics import RevenueMetrics
from entitlements.store.records import AuditRecord

__all__ = ["AUDIT_ROWS", "audit_section", "mrr_other_currencies_html", "mrr_other_currencies_lines"]

#: How many of the latest entries the page shows (the rest: ListAuditEntries).
AUDIT_ROWS = 20


def _summary(entry: AuditRecord) -> str:
    """A short line of what changed, from the entry's details."""
    d: dict[str, Any] = entry.details
    new = d.get("new") if isinstance(d.get("new"), dict) else None
    if entry.action == "record_manual_invoice":
        return f"{d.get('reference', '')}: {d.get('amount_cents', 0):,} {d.get('currency', '')}"
    if new is not None:
        price = new.get("price_cents")
        priced = (
            f" at {price:,} {new.get('currency', '')}/{new.get('interval', '')}" if price else ""
        )
        plan = f"{new.get('plan_id', '')} {new.get('status', '')}"
        return f"{d.get('subscription_id', '')} {plan}{priced}"
    if entry.action == "set_overrides" and isinstance(d.get("new"), list):
        keys = ", ".join(str(o.get("key")) for o in d["new"]) or "cleared"
        return f"overrides: {keys}"
    if entry.action == "resolve_crypto_funds":
        return f"{d.get('item_id', '')} {d.get('action', '')}: {d.get('amount', '')} " + str(
            d.get("currency", "")
        )
    return ""


def audit_section(log: AuditLog) -> Callable[[], Awaitable[str]]:
    """An /admin section (see `OpsConfig.sections`): the latest audit entries."""

    async def render() -> str:
        entries, more = await log.list(AuditQuery(), page_size=AUDIT_ROWS)
        rows = (
            "".join(
                f'<tr data-audit="{e.id}"><td>{e.created_at:%Y-%m-%d %H:%M}</td>'
                f"<td>{escape(e.actor)}</td><td>{escape(e.action.replace('_', ' '))}</td>"
                f"<td>{escape(e.account_id) or '&mdash;'}</td>"
                f"<td>{escape(_summary(e))}</td>"
                f"<td>{escape(str(e.details.get('reason') or ''))}</td></tr>"
                for e in entries
            )
            or '<tr><td colspan="6" class="note">no admin change yet</td></tr>'
        )
        tail = '<p class="note">More with AdminService.ListAuditEntries.</p>' if more else ""
        return (
            '<div class="panel" id="audit_log"><h3>Audit log</h3>'
            "<table><tr><th>when (UTC)</th><th>actor</th><th>action</th><th>account</th>"
            f"<th>change</th><th>reason</th></tr>{rows}</table>{tail}</div>"
        )

    return render


def mrr_other_currencies_lines(m: RevenueMetrics) -> list[str]:
    return [
        f"Not in the USD MRR: {c.payments} contracts in {c.currency.upper()} "
        f"(MRR {c.amount_minor:,} minor units)"
        for c in m.mrr_other_currencies
    ]


def mrr_other_currencies_html(m: RevenueMetrics) -> str:
    lines = mrr_other_currencies_lines(m)
    if not lines:
        return ""
    return f'<p class="note" id="mrr_other_currencies">{escape("; ".join(lines))}.</p>'
