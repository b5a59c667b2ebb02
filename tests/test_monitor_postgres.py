"""PostgreSQL by URL, against a real server: the store's accounting and the monitor's figures.

Every test here gets a fresh database on a server the session starts
(``postgres_fixture``); they are skipped, with the reason, only when it cannot start.
"""

from __future__ import annotations

import threading

import pytest
import test_store
from monitor_reports import T0, campaign_reports, filtered_campaign, populate, register
from prometheus_client.parser import text_string_to_metric_families

from smartbkg_prod.monitor.collect import ingest_reports
from smartbkg_prod.monitor.figures import campaign_figures
from smartbkg_prod.monitor.metrics import exposition
from smartbkg_prod.store import Store

pytest_plugins = ["postgres_fixture"]  # the real-server fixtures `postgres_server`, `postgres_url`
pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_url: str) -> Store:
    """Overrides conftest's SQLite store for every test of this module."""
    store = Store(postgres_url)
    assert store.sql_engine.dialect.name == "postgresql"
    yield store
    store.sql_engine.dispose()


# The store's own accounting tests (duplicate reports, status figures, resume state) run
# here a second time, on PostgreSQL, through the `store` fixture above.
globals().update(
    {
        name: getattr(test_store, name)
        for name in dir(test_store)
        if name.startswith("test_") or name == "registered"
    }
)


@pytest.fixture
def monitored(store, tmp_path):
    return populate(store, tmp_path, pass_rate=0.3, retention_kept=0.1, retention_unfiltered=0.05)


def test_monitor_figures_on_postgres(store, monitored):
    campaign_id, _jobs = monitored
    figures = campaign_figures(store, campaign_id, now=T0 + 900, window_s=600)
    assert figures.status.events_generated == 8000
    assert figures.throughput_events_per_s == pytest.approx(10.0)
    assert figures.filter_seconds_per_event == pytest.approx(
        0.0005
    )  # JSON stage_seconds read in SQL
    assert figures.speedups[0].value == pytest.approx(0.6 * 97.08 / (0.08 + 0.5 + 97.0 * 0.3))
    assert {(c.code, c.site): c.count for c in figures.failure_matrix}[
        ("50 out_of_memory", "T2_A")
    ] == 2
    assert figures.top_failures[0].log_excerpt == ["ERROR peak memory 2700 MB"]
    assert not figures.drift.alarm


def test_duplicates_count_once_on_postgres(store, monitored):
    campaign_id, jobs = monitored
    again = ingest_reports(store, campaign_reports(jobs))
    assert (again.stored, again.duplicates) == (0, 11)
    assert store.campaigns.status(campaign_id).events_generated == 8000


def test_concurrent_collectors_store_each_report_once(store, tmp_path):
    campaign = filtered_campaign(tmp_path)
    jobs = register(store, campaign, tmp_path)
    reports = campaign_reports(jobs)
    results, barrier = [], threading.Barrier(3)

    def collector() -> None:
        barrier.wait()
        results.append(ingest_reports(Store(store.url), reports))

    threads = [threading.Thread(target=collector) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result.stored for result in results) == 11
    assert sum(result.duplicates for result in results) == 22
    assert store.campaigns.status(campaign.campaign_id).events_generated == 8000


def test_metrics_on_postgres(store, monitored):
    families = {f.name: f for f in text_string_to_metric_families(exposition(store).decode())}
    generated = [
        s.value
        for s in families["smartbkg_campaign_events"].samples
        if s.labels["stage"] == "generated"
    ]
    assert generated == [8000]
