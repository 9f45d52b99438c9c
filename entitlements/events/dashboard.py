"""The /admin page's "Outbound events" section: queue, failures per endpoint, recent failed
deliveries (replay them with AdminService.ReplayEvent / ReplayFailedEvents)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from entitlements.events.endpoints import Endpoint
from entitlements.store.events_repository import DeliveryRow, OutboxStats

__all__ = ["render_events_section"]


def render_events_section(
    stats: OutboxStats, endpoints: tuple[Endpoint, ...], failed: list[DeliveryRow]
) -> str:
    rows = (
        "".join(
            f"<tr><td>{escape(e.name)}</td><td>{escape(e.url)}</td>"
            f"<td>{'ordered' if e.ordered else ''}</td>"
            f"<td class=n>{stats.failed.get(e.name, 0)}</td></tr>"
            for e in endpoints
        )
        or '<tr><td colspan="4" class="note">no endpoint configured'
        " (ENTITLEMENTS_EVENT_ENDPOINTS)</td></tr>"
    )
    recent = (
        "".join(
            f"<tr><td>{escape(d.event_id)}</td><td>{escape(d.event_type)}</td>"
            f"<td>{escape(d.account_id)}</td><td>{escape(d.endpoint)}</td>"
            f"<td class=n>{d.attempts}</td><td>{escape(d.last_error)}</td>"
            f"<td>{datetime.fromtimestamp(d.created_at_ms / 1000, UTC):%Y-%m-%d %H:%M}</td></tr>"
            for d in failed
        )
        or '<tr><td colspan="7" class="note">none</td></tr>'
    )
    cards = "".join(
        f'<div class="card"><div class="k">{label}</div>'
        f'<div class="v" id="{key}">{value}</div></div>'
        for key, label, value in (
            ("events_queue_depth", "Queue depth", str(stats.depth)),
            ("events_oldest_age", "Oldest undelivered", f"{stats.oldest_age_s:,.0f} s"),
            ("events_failed", "Failed deliveries", str(sum(stats.failed.values()))),
        )
    )
    heads = "".join(
        f"<th{' class=n' if h == 'attempts' else ''}>{h}</th>"
        for h in ("event", "type", "account", "endpoint", "attempts", "last error", "created")
    )
    return f"""<h2>Outbound events</h2>
<div class="cards">{cards}</div>
<div class="row"><div class="panel"><h3>Endpoints</h3><table id="event_endpoints">
<tr><th>name</th><th>url</th><th></th><th class=n>failed</th></tr>
{rows}</table></div>
<div class="panel"><h3>Failed deliveries (latest 20; replay with AdminService.ReplayEvent)</h3>
<table id="event_failures"><tr>{heads}</tr>
{recent}</table></div></div>
"""
