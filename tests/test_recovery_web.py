"""Recovery review on the monitor's web page: a real server on loopback, a real SQLite store
with a failed campaign, real HTTP requests and a headless browser."""

from __future__ import annotations

import http.client
import json
import logging
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner

# The failed campaign of the review tests (OOM, stage-out and walltime-hold failures).
from test_monitor_web import CHROMIUM, CHROMIUM_ARGS, chromium_playwright
from test_recovery_review import campaign, fail, failed_campaign  # noqa: F401 - fixtures

from smartbkg_prod.cli.monitor import monitor
from smartbkg_prod.monitor.operators import (
    OPERATORS_ENV,
    SESSION_COOKIE,
    Operators,
    OperatorsFileError,
    token_digest,
)
from smartbkg_prod.monitor.web import start_server
from smartbkg_prod.recovery.records import get_recommendation, live_jobs
from smartbkg_prod.recovery.review import refresh_recommendations
from smartbkg_prod.store.tables import RecommendationRow

TOKENS = {"alice": "alice-0f3c9e7d1b2a", "bob": "bob-77aa19c0de42"}


@pytest.fixture
def operators_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "operators.txt"
    lines = [f"{name}:{token_digest(token)}" for name, token in TOKENS.items()]
    path.write_text("# shift crew\n" + "\n".join(lines) + "\n")
    monkeypatch.setenv(OPERATORS_ENV, str(path))
    return path


class Client:
    """HTTP on loopback without following redirects (the 303s are part of the contract)."""

    def __init__(self, port: int):
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"

    def request(self, method, path, body=b"", headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            # Header names are case-insensitive (uvicorn sends them in lower case).
            return response.status, response.headers, response.read().decode()
        finally:
            connection.close()

    def form(self, path, fields, cookie=None, origin="same"):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if origin:
            headers["Origin"] = self.origin if origin == "same" else origin
        if cookie:
            headers["Cookie"] = cookie
        return self.request("POST", path, urlencode(fields).encode(), headers)

    def api(self, path, document=None, token=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, _headers, body = self.request(
            "POST", path, json.dumps(document or {}).encode(), headers
        )
        return status, json.loads(body)

    def login(self, token) -> str:
        status, headers, _body = self.form("/recovery/login", {"token": token, "next": "/"})
        assert status == 303, status
        return headers["Set-Cookie"].split(";")[0]


@pytest.fixture
def recommendations(store, failed_campaign):  # noqa: F811 - the imported fixture
    return {r.job_index: r for r in refresh_recommendations(store)}


@pytest.fixture
def client(store, recommendations, operators_file):
    server, thread = start_server(store)
    yield Client(server.server_address[1])
    server.shutdown()
    thread.join()


def is_open(store, recommendation) -> bool:
    stored = get_recommendation(store, recommendation.id)
    return stored.status == "open" and stored.decision is None


def test_posts_without_credentials_are_401_and_change_nothing(store, client, recommendations):
    first = recommendations[0]
    status, _headers, page = client.form(f"/recovery/{first.id}/accept", {"next": "/recovery"})
    assert status == 401 and "log in first" in page
    status, answer = client.api(f"/api/recovery/{first.id}/override", {"action": "kill"})
    assert status == 401 and "bearer" in answer["error"]
    assert client.api("/api/recovery/apply")[0] == 401
    assert all(is_open(store, r) for r in recommendations.values())


def test_a_wrong_token_is_refused_and_never_echoed(store, client, recommendations):
    guess = "not-a-token-5ec2"
    status, answer = client.api(f"/api/recovery/{recommendations[0].id}/accept", token=guess)
    assert status == 401 and guess not in json.dumps(answer)
    status, headers, page = client.form("/recovery/login", {"token": guess, "next": "/"})
    assert status == 401 and "Set-Cookie" not in headers
    assert "unknown token" in page and guess not in page
    assert is_open(store, recommendations[0])


def test_a_bearer_token_decides_under_its_own_operator_name(store, client, recommendations):
    before = time.time()
    status, answer = client.api(
        f"/api/recovery/{recommendations[0].id}/accept",
        {"operator": "mallory", "comment": "stage-out blip"},
        token=TOKENS["alice"],
    )
    assert status == 200 and answer["status"] == "accepted"
    stored = get_recommendation(store, recommendations[0].id)
    assert stored.decision.operator == "alice" and stored.decision.kind == "accept"
    assert before <= stored.decision.decided_at <= time.time()
    assert stored.decision.comment == "stage-out blip"


def test_login_sets_a_strict_httponly_session_and_forms_record_who_and_when(
    store, client, recommendations, caplog
):
    caplog.set_level(logging.DEBUG, logger="smartbkg_prod")
    status, headers, _body = client.form(
        "/recovery/login", {"token": TOKENS["bob"], "next": "/campaign/x"}
    )
    assert status == 303 and headers["Location"] == "/campaign/x"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    # Attribute names and values are case-insensitive (RFC 6265 5.2); Starlette writes lower case.
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert TOKENS["bob"] not in cookie
    session = cookie.split(";")[0]
    target = recommendations[1]
    here = f"/campaign/{target.campaign_id}"
    status, headers, _body = client.form(
        f"/recovery/{target.id}/override",
        {"action": "split_job", "comment": "too big", "next": here},
        cookie=session,
    )
    assert status == 303 and headers["Location"] == here
    stored = get_recommendation(store, target.id)
    assert stored.status == "overridden" and stored.decision.operator == "bob"
    assert stored.decision.action.value == "split_job" and stored.decision.changes.split_into >= 2
    _status, _headers, page = client.request("GET", here)
    assert "by <b class='operator'>bob</b>" in page
    _status, _headers, overview = client.request("GET", "/recovery", headers={"Cookie": session})
    assert "Logged in as <b>bob</b>" in overview
    for text in (page, overview, caplog.text):
        assert all(token not in text for token in TOKENS.values())


def test_cookie_posts_from_another_origin_are_403_and_change_nothing(
    store, client, recommendations
):
    session = client.login(TOKENS["alice"])
    path = f"/recovery/{recommendations[0].id}/accept"
    assert client.form(path, {}, cookie=session, origin="http://evil.example")[0] == 403
    assert client.form(path, {}, cookie=session, origin=None)[0] == 403
    assert is_open(store, recommendations[0])


def test_a_forged_session_cookie_is_401(store, client, recommendations):
    name, value = client.login(TOKENS["alice"]).split("=", 1)
    payload, signature = value.rsplit(".", 1)
    path = f"/recovery/{recommendations[0].id}/accept"
    for forged in (f"{payload}.{'0' * len(signature)}", f"{payload}.é{signature}", "forged"):
        assert client.form(path, {}, cookie=f"{name}={forged}")[0] == 401, forged
    assert is_open(store, recommendations[0])


def test_override_with_an_unknown_action_is_400_and_names_the_allowed_ones(
    store, client, recommendations
):
    path = f"/api/recovery/{recommendations[1].id}/override"
    status, answer = client.api(path, {"action": "reboot"}, token=TOKENS["alice"])
    assert status == 400
    assert "unknown action 'reboot'" in answer["error"] and "split_job" in answer["error"]
    session = client.login(TOKENS["alice"])
    status, _headers, page = client.form(
        f"/recovery/{recommendations[1].id}/override", {"action": "<b>reboot</b>"}, cookie=session
    )
    assert status == 400 and "&lt;b&gt;reboot&lt;/b&gt;" in page and "<b>reboot</b>" not in page
    assert is_open(store, recommendations[1])


def test_apply_carries_out_the_campaigns_decisions_only(store, client, recommendations):
    token = TOKENS["alice"]
    campaign_id = recommendations[0].campaign_id
    assert client.api(f"/api/recovery/{recommendations[0].id}/accept", token=token)[0] == 200
    assert client.api(f"/api/recovery/{recommendations[1].id}/accept", token=token)[0] == 200
    status, results = client.api("/api/recovery/apply", {"campaign_id": "other"}, token=token)
    assert status == 200 and results == []
    session = client.login(token)
    status, headers, _body = client.form(
        "/recovery/apply",
        {"campaign_id": campaign_id, "next": f"/campaign/{campaign_id}"},
        cookie=session,
    )
    assert status == 303 and headers["Location"] == f"/campaign/{campaign_id}"
    jobs = live_jobs(store, campaign_id)
    assert {0, 1} <= set(jobs["pending"]) and jobs["failed"] == [2]
    assert store.campaigns.job_overrides(campaign_id)[1].memory_mb == 3000
    assert get_recommendation(store, recommendations[0].id).status == "applied"
    assert is_open(store, recommendations[2])


def test_without_an_operators_file_every_change_is_403(store, recommendations, monkeypatch):
    monkeypatch.delenv(OPERATORS_ENV, raising=False)
    server, thread = start_server(store)
    try:
        client = Client(server.server_address[1])
        status, answer = client.api(
            f"/api/recovery/{recommendations[0].id}/accept", token=TOKENS["alice"]
        )
        assert status == 403 and "no operators configured" in answer["error"]
        assert client.form("/recovery/login", {"token": TOKENS["alice"]})[0] == 403
    finally:
        server.shutdown()
        thread.join()
    assert is_open(store, recommendations[0])


def test_pages_and_json_list_the_recommendations_with_text_escaped(
    store,
    campaign,  # noqa: F811 - the imported fixture
    failed_campaign,  # noqa: F811
    operators_file,
):
    fail(store, campaign, 3, 60, site="<img src=x>")
    refresh_recommendations(store)
    server, thread = start_server(store)
    try:
        client = Client(server.server_address[1])
        _status, _headers, page = client.request("GET", f"/campaign/{campaign.campaign_id}")
        panel = page[page.index("id='recovery'") :]
        assert panel.count("<tr class='recommendation'") == 4
        assert "&lt;img src=x&gt;" in panel and "<img src=x>" not in page
        assert "resubmit_more_memory" in panel and "class='accept'" in panel
        _status, _headers, overview = client.request("GET", "/recovery")
        assert overview.count("<tr class='recommendation'") == 4
        assert f"href='/campaign/{campaign.campaign_id}'" in overview
        _status, _headers, body = client.request("GET", "/api/recovery")
        listed = json.loads(body)
        assert len(listed) == 4 and "features" not in listed[0]
        # A foreign worker's log line quoting a credential is redacted in the JSON.
        jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
        with store.session() as session:
            row = session.get(RecommendationRow, listed[0]["id"])
            row.record = {**row.record, "log_lines": [f"PANDA_AUTH_ID_TOKEN={jwt}"]}
        _status, _headers, body = client.request("GET", f"/api/recovery/{listed[0]['id']}")
        assert jwt not in body and json.loads(body)["record"]["log_lines"]
        status, _headers, body = client.request("GET", "/api/recovery/999")
        assert status == 404 and "no recommendation 999" in json.loads(body)["error"]
    finally:
        server.shutdown()
        thread.join()


def test_the_operators_file_holds_digests_and_never_quotes_a_plaintext_token(tmp_path):
    path = tmp_path / "operators.txt"
    path.write_text("alice:hunter2-plaintext\n")
    with pytest.raises(OperatorsFileError, match=r"operators.txt:1: .*sha256") as error:
        Operators.from_file(path)
    assert "hunter2" not in str(error.value)
    path.write_text(f"alice:{token_digest('a')}\nalice:{token_digest('b')}\n")
    with pytest.raises(OperatorsFileError, match="listed twice"):
        Operators.from_file(path)
    result = CliRunner().invoke(monitor, ["serve", "--operators-file", str(tmp_path / "none")])
    assert result.exit_code != 0 and "cannot read operators file" in str(result.exception)


@pytest.mark.browser
def test_operator_logs_in_and_accepts_in_headless_chromium(
    store, client, recommendations, artifacts_dir: Path
):
    playwright_api = chromium_playwright()
    target = recommendations[0]
    campaign_page = f"{client.origin}/campaign/{target.campaign_id}"
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(campaign_page)
            page.click("#recovery #login-link")
            page.fill("input[name='token']", TOKENS["alice"])
            page.click("#login button")
            page.wait_for_url(campaign_page)
            row = page.locator(f"#recovery tr.recommendation[data-id='{target.id}']")
            row.locator("form.accept button").click()
            page.wait_for_url(campaign_page)
            row = page.locator(f"#recovery tr.recommendation[data-id='{target.id}']")
            assert row.get_attribute("data-status") == "accepted"
            assert "accept → resubmit by alice" in row.locator("td.decision").inner_text()
            page.locator("#recovery").scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts_dir / "recovery-review.png"), full_page=True)
            assert TOKENS["alice"] not in page.content()
        finally:
            browser.close()
    assert get_recommendation(store, target.id).decision.operator == "alice"
