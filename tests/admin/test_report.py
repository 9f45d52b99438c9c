"""`entitlements report`: the dashboard's figures as a table in the terminal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from entitlements.admin.charts import money
from entitlements.admin.report import report
from entitlements.cli import main
from entitlements.config import Settings
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.admin import dataset as d


async def test_report_prints_the_figures_and_a_plan_bar_chart(sqlite_store: Store) -> None:
    await d.load_into(sqlite_store)
    settings = Settings.from_env(
        {"ENTITLEMENTS_DEV_MODE": "1", "ENTITLEMENTS_DATABASE_URL": str(sqlite_store.engine.url)}
    )
    text = await report(settings, as_of=d.NOW)
    lines = text.splitlines()
    assert f"MRR                     {money(d.EXPECTED_MRR)}" in lines
    assert f"Total revenue           {money(d.EXPECTED_TOTAL)}" in lines
    assert "Churn (30 days)         25.0% (2 of 8)" in lines
    pro = next(line for line in lines if line.startswith("  pro "))
    starter = next(line for line in lines if line.startswith("  starter "))
    assert pro.count("█") == 30 and 0 < starter.count("█") < 30
    assert "Not in the USD figures: 1 payments in EUR (700 minor units)" in lines
    assert "Not in the USD failed payments: 1 failed in EUR (700 minor units)" in lines
    as_json = json.loads(await report(settings, as_of=d.NOW, as_json=True))
    assert as_json["mrr_cents"] == d.EXPECTED_MRR


def test_report_command_on_an_empty_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'report.db'}"
    asyncio.run(upgrade(url))
    monkeypatch.setenv("ENTITLEMENTS_DATABASE_URL", url)
    assert main(["report", "--as-of", "2026-11-15T12:00:00"]) == 0
    out = capsys.readouterr().out
    assert "Revenue as of 2026-11-15 12:00 UTC (USD)" in out
    assert "MRR                     $0.00" in out
