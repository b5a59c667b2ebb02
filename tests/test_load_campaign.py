"""Load: a 100,000-job campaign is planned, stored and tracked with bounded memory, and
reports are ingested while the monitor's page and /metrics are polled (a smaller run of
benchmarks/bench_load.py; the full-size numbers are in benchmarks/results/load.json)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from smartbkg_prod.store import Store

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_load.py"
spec = importlib.util.spec_from_file_location("bench_load", BENCH)
bench_load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_load)

# Python heap bounds (tracemalloc peaks), generous for 2 shared cores and future columns:
# registering 100k jobs builds one row dict per job (~75 MB measured); status and figures
# are aggregate SQL and must not grow with the number of jobs.
REGISTER_HEAP_MB = 200
TRACK_HEAP_MB = 20


def test_a_100k_job_campaign_is_planned_stored_and_tracked_in_bounded_memory(tmp_path):
    campaign = bench_load.load_campaign_spec(100_000, tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'load.db'}")
    phases = bench_load.track(store, campaign, tmp_path)
    assert phases["plan_and_register"]["heap_peak_mb"] < REGISTER_HEAP_MB, phases
    assert phases["status"]["heap_peak_mb"] < TRACK_HEAP_MB, phases
    assert phases["figures"]["heap_peak_mb"] < TRACK_HEAP_MB, phases
    status = store.campaigns.status(campaign.campaign_id)
    assert status.jobs_total == 100_000 and status.jobs_by_state["pending"] == 100_000


def test_reports_are_ingested_exactly_while_the_page_and_metrics_are_polled(tmp_path):
    campaign = bench_load.load_campaign_spec(10_000, tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'load.db'}")
    bench_load.track(store, campaign, tmp_path)
    result = bench_load.ingest_while_polled(store, campaign, n_reports=5_000, max_requests=400)
    assert result["stored"] == 5_000 and result["duplicates"] == 0
    assert result["http_errors"] == []
    latencies = result["latency_while_ingesting"]
    assert all(page["requests"] >= 1 for page in latencies.values()), latencies
    assert all(page["max_ms"] < 60_000 for page in latencies.values()), latencies
    status = store.campaigns.status(campaign.campaign_id)
    assert status.jobs_by_state["done"] == 5_000
    assert status.events_generated == 5_000 * campaign.events_per_job
