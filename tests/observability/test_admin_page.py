"""GET /admin: the dashboard behind the admin token, checked in headless Chromium.

Without /usr/bin/chromium the browser test is skipped, unless ENTITLEMENTS_REQUIRE_BROWSER=1
(as in CI), which makes it fail. ENTITLEMENTS_SCREENSHOT_DIR keeps the screenshot (admin.png).
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
from pathlib import Path
from urllib.parse import urlencode

import pytest

from entitlements.admin.charts import money
from entitlements.observability.metrics import HTTP_REQUESTS
from tests.admin import dataset as d
from tests.observability.conftest import Ops

CHROMIUM = Path(os.environ.get("ENTITLEMENTS_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()
REQUIRE_BROWSER = os.environ.get("ENTITLEMENTS_REQUIRE_BROWSER") == "1"
OPS_TOKEN = "ops-token-0000000000001"
CHAT_TOKEN = "chat-backend-token-0001"
AS_OF = {"as_of": d.NOW.isoformat()}


def page_url(ops: Ops, **query: str) -> str:
    return f"{ops.base}/admin?{urlencode({**AS_OF, **query})}"


async def test_admin_page_needs_an_admin_token(ops: Ops) -> None:
    status, _, headers = await ops.get("/admin")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await ops.get("/admin?token=wrong")
    assert status == 401
    status, _, _ = await ops.get(f"/admin?token={CHAT_TOKEN}")
    assert status == 403
    status, body, headers = await ops.get(
        "/admin", headers={"Authorization": f"Bearer {OPS_TOKEN}"}
    )
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    # Self-contained: nothing is loaded from a network, no script runs.
    assert "<svg" in body
    assert "<script" not in body and "src=" not in body
    assert re.findall(r"<link [^>]*>", body) == [
        re.search(r'<link rel="icon" href="data:[^"]*">', body)[0]
    ]


async def test_admin_page_shows_the_figures_and_two_charts(ops: Ops) -> None:
    await d.load_into(ops.running.deps.store)
    status, html, _ = await ops.get(page_url(ops, token=OPS_TOKEN).removeprefix(ops.base))
    assert status == 200
    assert f'data-metric="mrr">{money(d.EXPECTED_MRR)}<' in html
    assert f'data-metric="total_revenue">{money(d.EXPECTED_TOTAL)}<' in html
    assert f'data-metric="active_subscriptions">{d.EXPECTED_ACTIVE}<' in html
    assert 'data-metric="churn_rate">25.0%<' in html
    # Money in other currencies is listed apart: payments, and failed payments.
    assert re.search(r'id="other_currencies">Not in the USD figures: 1 in EUR \(700 ', html)
    assert re.search(
        r'id="failed_other_currencies">Not in the USD failed payments: 1 failed in EUR \(700 ', html
    )
    assert html.count("<svg") == 2
    assert re.findall(r'data-label="(\w+)" data-value="(\d+)"', html)[:5] == [
        (plan, str(n)) for plan, n in d.EXPECTED_PLANS
    ]


def _not_found() -> float:
    """HTTP requests the shim answered 404, so far (this process's servers)."""
    return sum(
        sample.value
        for metric in HTTP_REQUESTS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("status") == "404"
    )


async def test_the_favicon_is_served_and_named_by_the_page(ops: Ops) -> None:
    status, body, headers = await ops.get("/favicon.ico")
    assert status == 200 and headers["Content-Type"].startswith("image/svg+xml")
    assert body.startswith("<svg")
    status, html, _ = await ops.get(page_url(ops, token=OPS_TOKEN).removeprefix(ops.base))
    assert status == 200 and '<link rel="icon" href="data:image/svg+xml,' in html


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def _chromium(tmp_path: Path, *args: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


@pytest.mark.slow
async def test_admin_page_renders_in_headless_chromium(ops: Ops, tmp_path: Path) -> None:
    if not HAVE_CHROMIUM:
        reason = f"{CHROMIUM} is absent: install Debian's chromium to run the browser test"
        if REQUIRE_BROWSER:
            pytest.fail(f"{reason} (ENTITLEMENTS_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    await d.load_into(ops.running.deps.store)
    url = page_url(ops, token=OPS_TOKEN)
    screenshot = Path(os.environ.get("ENTITLEMENTS_SCREENSHOT_DIR", tmp_path)) / "admin.png"
    missing = _not_found()
    await _chromium(tmp_path, f"--screenshot={screenshot}", url)
    # Nothing the browser asked for was missing (a favicon 404 is a console error).
    assert _not_found() == missing
    data = screenshot.read_bytes()
    assert len(data) > 20_000, "the screenshot is nearly empty"
    assert _png_size(data) == (1280, 900)

    dom = (await _chromium(tmp_path, "--dump-dom", url)).decode()
    assert f"{money(d.EXPECTED_MRR)}</div>" in dom
    assert f"{money(12 * d.EXPECTED_MRR)}</div>" in dom
    assert f"{money(d.EXPECTED_TOTAL)}</div>" in dom
    assert 'data-metric="churn_rate">25.0%</div>' in dom
    assert dom.count("<svg") == 2
    assert f'data-label="2026-08" data-value="{d.EXPECTED_MRR_AUGUST}"' in dom


async def test_admin_page_lists_crypto_money_received_without_access(ops: Ops) -> None:
    from entitlements.store.crypto_repository import CryptoStore, UnmatchedRecord
    from entitlements.store.records import utcnow

    status, html, _ = await ops.get(page_url(ops, token=OPS_TOKEN).removeprefix(ops.base))
    assert status == 200 and 'id="unsettled_funds"' in html
    assert "every payment received gave its access" in html
    await CryptoStore(ops.running.deps.store.engine).add_unmatched(
        UnmatchedRecord(
            network="ethereum",
            chain_id=1,
            tx_hash="0x" + "ab" * 32,
            log_position=-1,
            log_index=-1,
            block_number=100,
            block_hash="0x" + "cd" * 32,
            currency="ETH",
            token_contract="",
            from_address="0x" + "11" * 20,
            to_address="0x" + "22" * 20,
            value_base_units=str(5 * 10**16),
            reason="no open payment holds the amount's slot 17",
            seen_at=utcnow(),
        )
    )
    status, html, _ = await ops.get(page_url(ops, token=OPS_TOKEN).removeprefix(ops.base))
    assert status == 200
    (row,) = re.findall(r'<tr data-item="(ut_\d+)">(.*?)</tr>', html)
    assert "unmatched" in row[1] and "0.05 ETH" in row[1]
