"""The `entitlements` command: serve, migrate, plans, report."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from entitlements.config import ConfigError, Settings
from entitlements.errors import EntitlementsError
from entitlements.observability.logs import configure_logging
from entitlements.policies import Catalog, default_catalog


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="entitlements", description="nchat entitlement service (gRPC)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser(
        "serve", help="run the gRPC server (ENTITLEMENTS_GRPC_ADDR, default 0.0.0.0:50051)"
    )
    serve_parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (one per core); default 1",
    )
    sub.add_parser("migrate", help="apply database migrations (ENTITLEMENTS_DATABASE_URL)")
    plans = sub.add_parser("plans", help="print the plan catalog")
    plans.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser(
        "webhooks",
        help="run only the HTTP webhook shim (ENTITLEMENTS_HTTP_ADDR, default 0.0.0.0:8080)",
    )
    reconcile = sub.add_parser(
        "reconcile", help="repair the local mirror of a billing provider (safe to run any time)"
    )
    reconcile.add_argument("provider", choices=["stripe"], help="the provider to reconcile")
    report = sub.add_parser(
        "report", help="print the revenue dashboard (the figures of AdminService.GetRevenueMetrics)"
    )
    report.add_argument(
        "--as-of", type=_timestamp, default=None, help="ISO 8601 time, UTC if no offset; now"
    )
    report.add_argument(
        "--churn-window-days", type=int, default=0, help="the churn window (default 30)"
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    if args.command == "plans":
        print(_plans_json(default_catalog()) if args.json else _plans_table(default_catalog()))
        return 0
    try:
        settings = Settings.from_env(require_callers=args.command == "serve")
    except ConfigError as exc:
        print(f"entitlements: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "migrate":
            from entitlements.store.migrate import current_revision, upgrade

            asyncio.run(upgrade(settings.database_url))
            revision = asyncio.run(current_revision(settings.database_url))
            print(f"database at migration {revision}")
            return 0
        if args.command in ("webhooks", "reconcile"):
            return _billing_command(args.command, settings)
        if args.command == "report":
            return _report(settings, args)
        if args.workers < 1:
            print("entitlements: --workers must be 1 or more", file=sys.stderr)
            return 2
        if args.workers == 1:
            return _serve(settings)
        return _serve_workers(settings, args.workers)
    except (EntitlementsError, OSError) as exc:
        print(f"entitlements: {exc}", file=sys.stderr)
        return 1


def _serve(settings: Settings) -> int:
    from entitlements.observability.tracing import configure_tracing
    from entitlements.server.app import serve
    from entitlements.server.schema import SchemaNotCurrent

    try:
        configure_tracing(settings)  # in each worker: the exporter's thread is not forked
        _run(serve(settings), settings.event_loop)
    except SchemaNotCurrent as exc:
        print(f"entitlements: {exc}", file=sys.stderr)
        return 2
    except (EntitlementsError, OSError) as exc:
        print(f"entitlements: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve_workers(settings: Settings, count: int) -> int:
    """`serve --workers N`: N processes sharing the port, and one /metrics for all of them."""
    from dataclasses import replace

    from entitlements.observability.multiprocess import (
        multiprocess_metrics,
        start_publisher,
        worker_exited,
    )
    from entitlements.server.workers import run_workers

    shared = replace(settings, reuse_port=True)

    def run_one(index: int) -> int:
        start_publisher()
        return _serve(shared)

    with multiprocess_metrics(settings.metrics_dir):
        return run_workers(count, run_one, on_exit=worker_exited)


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run the server on uvloop (measured: less CPU per call than asyncio's loop) unless the
    configuration asks for asyncio."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else f"{value:,}"


def _plans_table(catalog: Catalog) -> str:
    plans = catalog.plans
    width = max(len(k) for k in (*catalog.limits, *catalog.features, "price/month")) + 2
    col = 13
    lines = ["".ljust(width) + "".join(p.id.rjust(col) for p in plans)]

    def price(cents: int | None, custom: bool) -> str:
        return "custom" if custom or cents is None else f"${cents / 100:,.0f}"

    lines.append(
        "price/month".ljust(width)
        + "".join(price(p.price_monthly_cents, p.custom_pricing).rjust(col) for p in plans)
    )
    lines.append(
        "price/year".ljust(width)
        + "".join(price(p.price_yearly_cents, p.custom_pricing).rjust(col) for p in plans)
    )
    lines.append("")
    for key in catalog.limits:
        lines.append(key.ljust(width) + "".join(_limit(p.limits[key]).rjust(col) for p in plans))
    lines.append("")
    for key in catalog.features:
        lines.append(
            key.ljust(width)
            + "".join(("yes" if key in p.features else "-").rjust(col) for p in plans)
        )
    return "\n".join(lines)


def _plans_json(catalog: Catalog) -> str:
    return json.dumps(
        [
            {
                "id": p.id,
                "name": p.name,
                "tier": p.tier,
                "inherits": p.inherits,
                "custom_pricing": p.custom_pricing,
                "price_monthly_cents": p.price_monthly_cents,
                "price_yearly_cents": p.price_yearly_cents,
                "features": sorted(p.features),
                "limits": dict(p.limits),
            }
            for p in catalog.plans
        ],
        indent=2,
    )


def _timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _report(settings: Settings, args: argparse.Namespace) -> int:
    """`entitlements report`: the revenue dashboard as a table (or JSON)."""
    from entitlements.admin.report import report
    from entitlements.server.schema import SchemaNotCurrent, check_schema

    try:
        asyncio.run(check_schema(settings.database_url))
    except SchemaNotCurrent as exc:
        print(f"entitlements: {exc}", file=sys.stderr)
        return 2
    print(
        asyncio.run(
            report(
                settings,
                as_of=args.as_of,
                churn_window_days=args.churn_window_days,
                as_json=args.json,
            )
        )
    )
    return 0


def _billing_command(command: str, settings: Settings) -> int:
    """`entitlements webhooks` and `entitlements reconcile stripe`."""
    from entitlements.server.billing_setup import run_reconcile, run_webhooks
    from entitlements.server.schema import SchemaNotCurrent

    try:
        if command == "webhooks":
            from entitlements.observability.tracing import configure_tracing

            configure_tracing(settings)
            asyncio.run(run_webhooks(settings))
            return 0
        for line in asyncio.run(run_reconcile(settings)):
            print(line)
        return 0
    except (SchemaNotCurrent, ConfigError) as exc:
        print(f"entitlements: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
