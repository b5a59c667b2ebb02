"""The monitor's pages as an operator sees them, in headless Chromium: a real filtered
campaign with a control sample (real worker, real filter) beside a failed one with open
recovery recommendations. Screenshots go to test-artifacts/ for a person to look at."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_monitor_web import CHROMIUM, CHROMIUM_ARGS, chromium_playwright
from test_recovery_review import campaign, fail, failed_campaign  # noqa: F401 - fixtures

from smartbkg_prod.monitor.web import start_server
from smartbkg_prod.recovery.review import refresh_recommendations
from smartbkg_prod.spec import Campaign
from smartbkg_prod.submit import submit_campaign


@pytest.mark.slow
@pytest.mark.browser
def test_list_filter_check_and_review_pages_render_in_chromium(
    store,
    tmp_path,
    failed_campaign,  # noqa: F811 - the imported fixture
    artifacts_dir: Path,
):
    playwright_api = chromium_playwright()
    sampled = Campaign(
        name="control-sample",
        process="bbbar_generic",
        events=6000,
        events_per_job=3000,
        seed=515,
        filter={"mode": "sample", "model": "default", "control_fraction": 0.3, "p_min": 0.05},
        outputs={"directory": str(tmp_path / "sampled")},
        backend={"max_parallel": 2},
    )
    assert submit_campaign(sampled, store=store, poll_interval=0.05).complete
    assert len(refresh_recommendations(store)) == 3
    server, thread = start_server(store)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/")
            assert page.locator("tr.campaign").count() == 2
            page.screenshot(path=str(artifacts_dir / "pages-campaign-list.png"), full_page=True)

            page.click(f"a[href='/campaign/{sampled.campaign_id}']")
            page.wait_for_selector("#filter-check")
            assert page.locator("#bias tr[data-variable]").count() == 10
            for variable in ("mbc", "delta_e", "n_tracks"):
                box = page.locator(f"#bias-charts #bias-{variable}").bounding_box()
                assert box and box["width"] > 100 and box["height"] > 50, variable
            assert "speedup" in page.inner_text("#control-speedup")
            page.screenshot(path=str(artifacts_dir / "pages-filter-check.png"), full_page=True)

            page.goto(f"{base}/recovery")
            assert page.locator("#open-recommendations tr.recommendation").count() == 3
            page.screenshot(path=str(artifacts_dir / "pages-recovery-review.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        thread.join()
