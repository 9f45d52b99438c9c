"""Small inline SVG charts drawn on the server (no JavaScript, nothing fetched from a network)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "line_chart", "money"]

_PALETTE = ("#4f46e5", "#0891b2", "#16a34a", "#ca8a04", "#dc2626", "#9333ea", "#64748b")


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}${cents // 100:,}.{cents % 100:02d}"


def _nice(value: int) -> int:
    """A round number of cents at or above `value`, for the top of an axis."""
    step = 100
    while True:
        for factor in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8):
            top = int(step * factor)
            if top >= value:
                return top
        step *= 10


def bar_chart(
    items: Sequence[tuple[str, int]], *, title: str, width: int = 560, bar_height: int = 28
) -> str:
    """Horizontal bars, one per (label, value), labelled with the value."""
    label_w, pad = 110, 8
    height = pad * 2 + max(len(items), 1) * (bar_height + pad) + 24
    top = max((v for _, v in items), default=0) or 1
    room = width - label_w - 70
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" class="chart">',
        f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = 24 + pad + i * (bar_height + pad)
        w = round(room * value / top)
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_height * 0.68:.0f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{max(w, 1)}" height="{bar_height}" rx="3" '
            f'fill="{colour}" data-label="{escape(label)}" data-value="{value}"/>'
        )
        parts.append(
            f'<text x="{label_w + max(w, 1) + 6}" y="{y + bar_height * 0.68:.0f}">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    points: Sequence[tuple[str, int]], *, title: str, width: int = 560, height: int = 260
) -> str:
    """A line of money values (cents) over labelled points, with dots and a light grid."""
    left, right, top_pad, bottom = 80, 16, 32, 40
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = _nice(max((v for _, v in points), default=0))
    n = len(points)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: int) -> float:
        return top_pad + plot_h - plot_h * v / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" class="chart">',
        f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for k in range(5):
        v = round(top * k / 4)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#e2e8f0"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(money(v))}</text>"
        )
    if points:
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(points))
        parts.append(f'<polyline points="{path}" fill="none" stroke="#4f46e5" stroke-width="2.5"/>')
    for i, (label, v) in enumerate(points):
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="#4f46e5" '
            f'data-label="{escape(label)}" data-value="{v}"/>'
        )
        if n <= 12 or i % 2 == 0:
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - bottom + 18}" text-anchor="middle" '
                f'class="axis">{escape(label[2:])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
