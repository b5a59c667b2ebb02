"""The monitor's web server: bound to localhost unless told otherwise, no credentials on
its pages, and no state-changing action without an authenticated operator."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from smartbkg_prod.monitor.collect import ingest_reports
from smartbkg_prod.monitor.web import create_app, start_server
from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.report import JobReport
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import Store

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsInZvIjoiYmVsbGUifQ.c2lnbmF0dXJlLXBhcnQ"
DB_PASSWORD = "hunter2-db-Pa55"


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'web.db'}")


def test_the_server_binds_to_localhost_by_default(store):
    server, thread = start_server(store)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        thread.join()


def test_cli_serve_defaults_to_localhost():
    from smartbkg_prod.cli import main

    result = CliRunner().invoke(main, ["monitor", "serve", "--help"])
    assert "default: 127.0.0.1" in result.output


@pytest.fixture
def leaky_campaign(store, tmp_path) -> Campaign:
    """A failed attempt whose report (from an older or foreign worker) quotes credentials."""
    campaign = Campaign(name="leaky", process="bbbar_mixed", events=20, events_per_job=10)
    store.campaigns.register(campaign, plan_jobs(campaign), tmp_path)
    job = plan_jobs(campaign)[0]
    report = JobReport.for_job(
        job,
        campaign.name,
        1,
        started_at=1.7e9,
        finished_at=1.7e9 + 10,
        wall_seconds=10,
        cpu_seconds=1,
        exit_code=60,
        error_class="stage_out",
        error_message=f"cannot reach postgresql://prod:{DB_PASSWORD}@db/jobs",
        log_tail=[f"PANDA_AUTH_ID_TOKEN={JWT}", "using proxy /tmp/x509up_u1234"],
    )
    assert ingest_reports(store, [report]).stored == 1
    return campaign


@pytest.mark.parametrize("page", ["/campaign/{id}", "/api/campaigns/{id}", "/api/campaigns"])
def test_pages_never_show_credentials_from_reports(store, leaky_campaign, page):
    response = TestClient(create_app(store)).get(page.format(id=leaky_campaign.campaign_id))
    assert response.status_code == 200
    body = response.text
    assert JWT not in body and DB_PASSWORD not in body and "x509up_u1234" not in body


@pytest.mark.parametrize("page", ["/", "/metrics"])
def test_overview_pages_and_metrics_show_no_credentials(store, leaky_campaign, page):
    body = TestClient(create_app(store)).get(page).text
    assert JWT not in body and DB_PASSWORD not in body


# Login sets a session from a token; logout only clears the caller's own cookie.
NOT_STATE_CHANGING = {"/recovery/login", "/recovery/logout"}


def state_changing_paths(app, campaign_id: str) -> list[str]:
    paths = []
    for route in app.routes:
        if route.methods <= {"GET", "HEAD"} or route.path in NOT_STATE_CHANGING:
            continue
        path = route.path.replace("{campaign_id}", campaign_id)
        paths.append(re.sub(r"\{\w+(:\w+)?\}", "1", path))
    return paths


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer not-a-token"}, {"cookie": "smartbkg_session=forged"}],
)
def test_no_state_changing_route_is_served_without_an_operator(
    store, leaky_campaign, tmp_path, monkeypatch, headers
):
    """Every non-GET route (the recovery extension's accept/override/apply/refresh, when
    present) refuses anonymous and wrongly authenticated requests; POSTs to read-only
    pages are refused too."""
    operators_file = tmp_path / "operators.txt"
    operators_file.write_text(f"alice:{hashlib.sha256(b'alice-token').hexdigest()}\n")
    operators_file.chmod(0o600)
    monkeypatch.setenv("SMARTBKG_OPERATORS_FILE", str(operators_file))
    app = create_app(store)
    client = TestClient(app)
    paths = ["/", f"/campaign/{leaky_campaign.campaign_id}"]
    changing = state_changing_paths(app, leaky_campaign.campaign_id)
    if importlib.util.find_spec("smartbkg_prod.recovery.web"):
        assert len(changing) >= 4, changing  # accept, override, apply, refresh (form + API)
    paths += changing
    for path in paths:
        response = client.post(path, content=b"action=resubmit&comment=x", headers=headers)
        assert response.status_code in (401, 403, 404, 405), (path, response.status_code)


def test_operator_tokens_are_compared_in_constant_time():
    from smartbkg_prod.monitor import operators

    source = Path(operators.__file__).read_text()
    assert "hmac.compare_digest" in source


def test_an_accepted_recommendation_is_recorded_under_the_authenticated_operator_and_time(
    store, leaky_campaign, tmp_path, monkeypatch
):
    from smartbkg_prod.recovery.records import get_recommendation
    from smartbkg_prod.recovery.review import refresh_recommendations

    operators_file = tmp_path / "operators.txt"
    operators_file.write_text(f"alice:{hashlib.sha256(b'alice-token').hexdigest()}\n")
    operators_file.chmod(0o600)
    monkeypatch.setenv("SMARTBKG_OPERATORS_FILE", str(operators_file))
    # Job 0's only attempt becomes its last: a recommendation is made for it.
    with store.session() as session:
        from smartbkg_prod.store.tables import JobRow

        row = (
            session.query(JobRow)
            .filter_by(campaign_id=leaky_campaign.campaign_id, job_index=0)
            .one()
        )
        row.state = "failed"
    [recommendation] = refresh_recommendations(store, leaky_campaign.campaign_id)
    started = time.time()
    response = TestClient(create_app(store)).post(
        f"/api/recovery/{recommendation.id}/accept",
        content=json.dumps({"comment": "ok", "operator": "mallory"}).encode(),
        headers={"authorization": "Bearer alice-token", "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    decision = get_recommendation(store, recommendation.id).decision
    assert decision.operator == "alice"
    assert started <= decision.decided_at <= time.time()
