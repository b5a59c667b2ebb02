"""The monitor web server: pages, JSON, the app's routes, and a real headless browser."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from monitor_reports import filtered_campaign, make_report, populate, register
from starlette.testclient import TestClient
from unavailable import require_module, unavailable

from smartbkg_prod.monitor import charts
from smartbkg_prod.monitor.collect import ingest_reports
from smartbkg_prod.monitor.web import create_app, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_playwright():
    """playwright's sync API, once headless Chromium is there to drive."""
    playwright_api = require_module("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} missing (bash scripts/install-system-deps.sh chromium)")
    return playwright_api


@pytest.fixture
def campaign_id(store, tmp_path):
    return populate(store, tmp_path, pass_rate=0.25, retention_kept=0.1, retention_unfiltered=0.05)[
        0
    ]


@pytest.fixture
def base_url(store, campaign_id):
    server, thread = start_server(store)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_server_binds_to_loopback_by_default(store):
    server, thread = start_server(store)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        thread.join()


def test_campaign_list_and_detail_pages_are_self_contained(base_url, campaign_id):
    status, content_type, page = _get(f"{base_url}/")
    assert status == 200 and content_type.startswith("text/html")
    assert f"/campaign/{campaign_id}" in page and "drift alarm" in page
    status, _content_type, detail = _get(f"{base_url}/campaign/{campaign_id}")
    assert status == 200
    for element in (
        "throughput-events",
        "job-states",
        "failure-matrix",
        "recent-failures",
        "drift",
        "recovery",
    ):
        assert f"id='{element}'" in detail or f'id="{element}"' in detail, element
    # No external resource: no CDN, no script, nothing fetched from another origin.
    assert "<script" not in detail and "http://" not in detail.replace(
        "http://www.w3.org/2000/svg", ""
    )
    assert "https://" not in detail


def test_json_endpoints_serve_the_figures(base_url, campaign_id):
    status, content_type, body = _get(f"{base_url}/api/campaigns/{campaign_id}")
    assert status == 200 and content_type == "application/json"
    figures = json.loads(body)
    assert figures["status"]["events_generated"] == 8000
    assert figures["drift"]["checks"][0]["alarm"] is True
    listing = json.loads(_get(f"{base_url}/api/campaigns")[2])
    assert [entry["status"]["campaign_id"] for entry in listing] == [campaign_id]


def test_campaign_pages_accept_a_name_and_say_clearly_when_missing(base_url, campaign_id):
    assert _get(f"{base_url}/campaign/monitored")[0] == 200
    status, _content_type, body = _get(f"{base_url}/campaign/nope")
    assert status == 404 and "no campaign 'nope'" in body
    assert _get(f"{base_url}/nowhere")[0] == 404


def test_page_text_is_escaped(store, tmp_path):
    campaign = filtered_campaign(tmp_path)
    jobs = register(store, campaign, tmp_path)

    ingest_reports(
        store,
        [
            make_report(
                jobs[0], 1, "<b>evil</b>", 1.0, 60, error_message="<script>alert(1)</script>"
            )
        ],
    )
    response = TestClient(create_app(store)).get(f"/campaign/{campaign.campaign_id}")
    assert "<script>" not in response.text and "&lt;script&gt;" in response.text
    assert "<b>evil</b>" not in response.text


def test_chart_labels_are_escaped_text_and_never_tex():
    """A label from a report ("$" would start matplotlib's TeX, "<" markup) is drawn as is."""
    svg = charts.bar_chart("labels", {"$\\foo{$": 1, "<script>": 2})
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "$\\foo{$" in svg


def test_the_app_includes_the_recovery_review_and_refuses_wrong_methods(store, campaign_id):
    """One factory assembles the monitor pages and the recovery review (no plugin loading)."""
    app = create_app(store)
    paths = {route.path for route in app.routes}
    assert {"/", "/campaign/{campaign_id}", "/metrics", "/recovery"} <= paths
    assert {"/recovery/{id:int}/accept", "/api/recovery/{id:int}/override"} <= paths
    client = TestClient(app)
    page = client.get(f"/campaign/{campaign_id}").text
    assert "<section id='recovery'>" in page and "id='login-link'" in page
    assert client.post("/metrics").status_code == 405


@pytest.mark.parametrize("host", ["127.0.0.1", "192.0.2.1", "no-such-host.invalid"])
def test_serve_on_a_busy_or_unbindable_address_is_one_line_and_exit_1(tmp_path, host):
    """A port another process holds, an address of no local interface (TEST-NET-1), a
    name that does not resolve: one line each, no traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "smartbkg_prod.cli", "monitor", "serve"]
            + ["--host", host, "--port", str(port), "--db", f"sqlite:///{tmp_path / 'm.db'}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: cannot serve on {host}:{port}: "), line
    if host == "127.0.0.1":
        assert line.endswith("Address already in use (choose another --port)")


def test_serve_without_the_web_stack_names_the_extra_to_install(tmp_path):
    """Fake: a uvicorn module that fails to import stands for an install without the
    [monitor] extra (the real one is installed here)."""
    (tmp_path / "uvicorn.py").write_text(
        'raise ModuleNotFoundError("No module named uvicorn", name="uvicorn")\n'
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "smartbkg_prod.cli", "monitor", "serve"]
        + ["--port", "0", "--db", f"sqlite:///{tmp_path / 'm.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: monitor serve needs the web stack (uvicorn is missing): "
        "pip install 'smartbkg-prod[monitor]'"
    )


@pytest.mark.browser
def test_campaign_page_in_headless_chromium(base_url, campaign_id, artifacts_dir: Path):
    playwright_api = chromium_playwright()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(f"{base_url}/")
            page.screenshot(path=str(artifacts_dir / "monitor-campaign-list.png"), full_page=True)
            assert page.locator("tr.campaign").count() == 1
            page.click(f"a[href='/campaign/{campaign_id}']")
            page.wait_for_selector("#failure-matrix")
            page.screenshot(path=str(artifacts_dir / "monitor-campaign-detail.png"), full_page=True)
            assert page.inner_text("#campaign-name").startswith("monitored")
            assert "Filter drift alarm" in page.inner_text("#drift")
            assert page.inner_text("#events-generated").startswith("8,000")
            assert (
                page.inner_text("#throughput").split("\n")[0] == "0.0"
            )  # nothing in the last hour of wall time
            assert page.locator("#throughput-events g[id^='throughput-events-bin-']").count() == 8
            assert page.locator("#job-states #job-states-done").count() == 1
            cell = page.locator(
                "#failure-matrix td.cell[data-code='50 out_of_memory'][data-site='T2_A']"
            )
            assert cell.get_attribute("data-count") == "2"
            assert page.locator("#recent-failures tr.failure").count() == 4
            assert "No space left on device" in page.inner_text("#recent-failures")
            assert page.locator("#failure-matrix").bounding_box()["width"] > 200
            assert all(url.startswith(base_url) for url in requests), requests
        finally:
            browser.close()
