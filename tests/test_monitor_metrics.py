"""The /metrics endpoint (parsed with prometheus_client's parser) and the monitoring/ files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from monitor_reports import populate
from prometheus_client.parser import text_string_to_metric_families
from unavailable import unavailable

from smartbkg_prod.monitor.metrics import exposed_names
from smartbkg_prod.monitor.web import start_server

MONITORING = Path(__file__).resolve().parents[1] / "monitoring"
METRIC_NAME = re.compile(r"\b(smartbkg_[a-z0-9_]+)")


@pytest.fixture
def scrape(store, tmp_path):
    """The parsed /metrics of a live server over the reference campaign."""
    campaign_id, _jobs = populate(store, tmp_path, pass_rate=0.25, retention_kept=0.1)
    server, thread = start_server(store)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        with urllib.request.urlopen(url) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
    finally:
        server.shutdown()
        thread.join()
    return campaign_id, {family.name: family for family in text_string_to_metric_families(text)}


def _samples(families, name: str, **labels) -> list[float]:
    family = families[name]
    return [s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def served_names(families) -> set[str]:
    names = set()
    for family in families.values():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_metrics_carry_the_campaign_figures(scrape):
    campaign_id, families = scrape
    assert _samples(families, "smartbkg_campaign_jobs", campaign=campaign_id, state="done") == [8]
    assert families["smartbkg_campaign_events"].type == "counter"
    assert _samples(
        families, "smartbkg_campaign_events", campaign=campaign_id, stage="generated"
    ) == [8000]
    assert _samples(
        families, "smartbkg_campaign_events", campaign=campaign_id, stage="skimmed"
    ) == [240]
    assert _samples(families, "smartbkg_campaign_attempts", site="T2_C", result="failed") == [1]
    assert _samples(
        families,
        "smartbkg_campaign_failures",
        site="T2_A",
        exit_code="50",
        error_class="out_of_memory",
    ) == [2]
    assert _samples(families, "smartbkg_campaign_filter_pass_rate") == [pytest.approx(0.3)]
    assert _samples(families, "smartbkg_campaign_cpu_efficiency") == [pytest.approx(70 / 110)]
    assert _samples(
        families, "smartbkg_campaign_filter_drift_alarm", quantity="filter_pass_rate"
    ) == [1.0]
    assert _samples(
        families, "smartbkg_campaign_filter_drift_alarm", quantity="skim_retention_kept"
    ) == [0.0]
    assert _samples(families, "smartbkg_monitor_campaigns") == [1]


def test_every_declared_metric_is_served(scrape):
    _campaign_id, families = scrape
    assert served_names(families) >= exposed_names()


def _grafana_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        queries.append((f"variable {variable['name']}", variable["definition"]))
    return queries


def test_every_grafana_query_uses_metrics_the_exporter_serves(scrape):
    served = served_names(scrape[1])
    queries = _grafana_queries()
    assert len(queries) >= 15
    for title, expr in queries:
        used = set(METRIC_NAME.findall(expr))
        assert used, f"panel {title!r} queries no smartbkg metric: {expr}"
        assert used <= served, f"panel {title!r} uses metrics not served: {sorted(used - served)}"


def test_every_grafana_panel_has_a_query_and_a_unique_id():
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel.get("targets") for panel in dashboard["panels"])


def test_alert_rules_use_served_metrics(scrape):
    served = served_names(scrape[1])
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    names = {rule["alert"] for rule in rules}
    assert {"SmartbkgFailureRateSpike", "SmartbkgCampaignStalled", "SmartbkgFilterDrift"} <= names
    for rule in rules:
        assert set(METRIC_NAME.findall(rule["expr"])) <= served, rule["alert"]


def test_prometheus_files_pass_promtool_and_alert_unit_tests():
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool not installed (Debian package `prometheus`)")
    for command in (
        [promtool, "check", "config", "prometheus.yml"],
        [promtool, "test", "rules", "alerts.test.yml"],
    ):
        result = subprocess.run(command, cwd=MONITORING, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_exposition_passes_promtool_lint(scrape, store):
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool not installed (Debian package `prometheus`)")
    from smartbkg_prod.monitor.metrics import exposition

    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition(store), capture_output=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
