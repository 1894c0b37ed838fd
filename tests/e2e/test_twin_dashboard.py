"""The operator dashboard in a real headless browser (Debian's chromium driven by Playwright).

Chromium is launched by path (Playwright's own browser download is not used).  A
missing chromium or playwright skips loudly locally and fails under CI=true.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.paths import REPO
from twinmpc.services.twin.dashboard import DashboardState, start_dashboard
from twinmpc.services.twin.decision_log import DecisionLog
from twinmpc.services.twin.loop import TwinConfig, TwinLoop

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _require_browser():
    reason = None
    if not os.access(CHROMIUM, os.X_OK) and shutil.which("chromium") is None:
        reason = "!!! chromium is not installed: the dashboard browser test did NOT run. Install it with `apt-get install -y chromium`. !!!"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "!!! the playwright package is missing: install the test extra (pip install -e '.[test]'). !!!"
        sync_playwright = None
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture
def twin(loop_thread, cluster2, tmp_path):
    config = TwinConfig(intersections=24, districts=2, windows=3, window_seconds=1, period_seconds=60, epsilons=(1.0, 4.0))
    decisions = DecisionLog.open(tmp_path / "twin")
    loop = TwinLoop(config, cluster2, tmp_path, decisions)
    loop_thread.run(loop.start())
    loop_thread.run(loop.step())
    server = loop_thread.run(start_dashboard(DashboardState(loop, cluster2, decisions)))
    yield loop, server
    loop_thread.run(server.stop())
    loop_thread.run(loop.close())
    decisions.close()


def test_dashboard_needs_the_controller_token(twin) -> None:
    _, server = twin
    for path in ("/", "/api/state", "/?token=wrong"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5)
        assert exc.value.code == 401


def test_dashboard_shows_collected_results_and_follows_the_loop(loop_thread, twin, tmp_path) -> None:
    sync_playwright = _require_browser()
    loop, server = twin
    ours = loop.private[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium"), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url)
            page.wait_for_selector("body[data-window='0']", timeout=15_000)
            shown = page.locator(f"[data-testid='result-0-{ours.name}-ns']").inner_text()
            assert float(shown) == pytest.approx(round(float(ours.last_totals[0, 0]), 1))
            assert "yes" in page.locator("#audit").inner_text() and "NO" not in page.locator("#audit").inner_text()
            assert page.locator("#health").inner_text().count("yes") == 2
            assert "ours eps=1" in page.locator("#budget").inner_text()
            before = shown
            loop_thread.run(loop.step())  # the next window closes and is re-planned
            page.wait_for_selector("body[data-window='1']", timeout=15_000)
            after = page.locator(f"[data-testid='result-0-{ours.name}-ns']").inner_text()
            assert float(after) == pytest.approx(round(float(ours.last_totals[0, 0]), 1)) and after != before
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            if os.environ.get("TWINMPC_DASHBOARD_SCREENSHOT"):
                page.screenshot(path=str(REPO / "docs" / "img" / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
