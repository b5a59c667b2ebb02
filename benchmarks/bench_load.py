"""Load benchmark: a 100,000-job campaign planned, stored and tracked with bounded memory,
then 50,000 job reports ingested while the monitor's web page and /metrics are polled.

Phases (one SQLite file, as in production by default):

1. plan + register 100k jobs, then ``status`` and the monitor figures of the campaign,
   under ``tracemalloc``: Python heap peak per phase, and the process's peak RSS;
2. the monitor server (``smartbkg-prod monitor serve``) runs in its own process on
   127.0.0.1; a bounded polling loop requests ``/metrics``, ``/``, the campaign page and
   its JSON while the main process ingests 50k reports (``monitor.collect.ingest_reports``
   in batches of 1,000, as a collector delivering them would);
3. the final accounting is checked (events counted once per job).

    nice python benchmarks/bench_load.py                 # full size -> benchmarks/results/load.json
    python benchmarks/bench_load.py --jobs 20000 --reports 5000 --out /tmp/load.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path

from smartbkg_prod.monitor.collect import ingest_reports
from smartbkg_prod.monitor.figures import campaign_figures
from smartbkg_prod.plan import iter_jobs
from smartbkg_prod.report import JobReport
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import Store

T0 = 1_700_000_000.0
BATCH = 1000
PAGES = ("/metrics", "/", "/campaign/{id}", "/api/campaigns/{id}")


def load_campaign_spec(n_jobs: int, directory: Path) -> Campaign:
    return Campaign(
        name="load",
        process="bbbar_generic",
        events=n_jobs * 1000,
        events_per_job=1000,
        seed=9,
        outputs={"directory": str(directory / "out")},
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measured(function, *args):
    """(result, seconds, Python heap peak in MB) of one call."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = function(*args)
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return result, seconds, peak


def track(store: Store, campaign: Campaign, directory: Path) -> dict:
    """Phase 1: plan, register, status and figures of the campaign."""
    phases = {}
    _, seconds, peak = measured(
        store.campaigns.register, campaign, iter_jobs(campaign), directory / "out"
    )
    phases["plan_and_register"] = {"seconds": seconds, "heap_peak_mb": peak}
    status, seconds, peak = measured(store.campaigns.status, campaign.campaign_id)
    phases["status"] = {"seconds": seconds, "heap_peak_mb": peak}
    assert status.jobs_total == campaign.n_jobs
    _, seconds, peak = measured(campaign_figures, store, campaign.campaign_id)
    phases["figures"] = {"seconds": seconds, "heap_peak_mb": peak}
    return phases


def make_reports(campaign: Campaign, n_reports: int):
    """Batches of reports of the first ``n_reports`` jobs (one successful attempt each);
    generated lazily so memory does not grow with the number of reports."""
    batch = []
    for job in iter_jobs(campaign):
        if job.index >= n_reports:
            break
        finished = T0 + 0.5 * job.index
        batch.append(
            JobReport.for_job(
                job,
                campaign.name,
                1,
                site=f"T2_SITE{job.index % 25:02d}",
                host=f"node{job.index % 500}",
                started_at=finished - 600,
                finished_at=finished,
                wall_seconds=600.0,
                cpu_seconds=550.0,
                stage_seconds={"generate": 80.0, "simulate": 400.0, "skim": 20.0},
                events_generated=job.n_events,
                events_kept=job.n_events,
                events_simulated=job.n_events,
                events_skimmed=30,
                sum_weights_kept=float(job.n_events),
                sum_weights_skimmed=30.0,
                peak_rss_mb=1500.0,
                exit_code=0,
                error_class="success",
                log_tail=["generated 1000 events", "skim kept 30 of 1000 events"],
            )
        )
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def start_monitor(db_url: str) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartbkg_prod.cli",
            "monitor",
            "serve",
            "--port",
            "0",
            "--db",
            db_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = server.stdout.readline()
    match = re.search(r"http://(127\.0\.0\.1):(\d+)/", line)
    if not match:
        server.kill()
        raise RuntimeError(f"monitor did not start: {line!r}")
    return server, f"http://127.0.0.1:{match.group(2)}"


class Poller(threading.Thread):
    """Requests the pages in turn until stopped or ``max_requests`` are done."""

    def __init__(self, base_url: str, campaign_id: str, max_requests: int):
        super().__init__(daemon=True)
        self.urls = [base_url + page.format(id=campaign_id) for page in PAGES]
        self.max_requests = max_requests
        self.stop = threading.Event()
        self.latencies: dict[str, list[float]] = {page: [] for page in PAGES}
        self.errors: list[str] = []

    def run(self) -> None:
        count = 0
        while not self.stop.is_set() and count < self.max_requests:
            for page, url in zip(PAGES, self.urls, strict=True):
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(url, timeout=60) as response:
                        response.read()
                        if response.status != 200:
                            self.errors.append(f"{page}: HTTP {response.status}")
                except Exception as error:  # noqa: BLE001 - recorded, the loop goes on
                    self.errors.append(f"{page}: {error}")
                self.latencies[page].append(time.perf_counter() - started)
                count += 1


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"requests": 0}
    ordered = sorted(values)
    return {
        "requests": len(values),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def ingest_while_polled(
    store: Store, campaign: Campaign, n_reports: int, max_requests: int
) -> dict:
    """Phase 2: ingest reports in batches while a separate monitor process is polled."""
    server, base_url = start_monitor(store.url)
    poller = Poller(base_url, campaign.campaign_id, max_requests)
    try:
        poller.start()
        started = time.perf_counter()
        stored = duplicates = 0
        seconds = 0.0  # in ingest_reports only (building the report objects is not counted)
        rss_before = peak_rss_mb()
        for batch in make_reports(campaign, n_reports):
            result = ingest_reports(store, batch)
            seconds += result.seconds
            stored += result.stored
            duplicates += result.duplicates
        wall = time.perf_counter() - started
        poller.stop.set()
        poller.join(timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "reports": n_reports,
        "stored": stored,
        "duplicates": duplicates,
        "batch": BATCH,
        "ingest_seconds": seconds,
        "wall_seconds": wall,
        "reports_per_s": n_reports / seconds if seconds else None,
        "peak_rss_growth_mb": peak_rss_mb() - rss_before,
        "latency_while_ingesting": {page: summary(poller.latencies[page]) for page in PAGES},
        "http_errors": poller.errors[:10],
    }


def run(n_jobs: int, n_reports: int, max_requests: int, directory: Path) -> dict:
    campaign = load_campaign_spec(n_jobs, directory)
    store = Store(f"sqlite:///{directory / 'load.db'}")
    tracking = track(store, campaign, directory)
    ingestion = ingest_while_polled(store, campaign, n_reports, max_requests)
    status, seconds, peak = measured(store.campaigns.status, campaign.campaign_id)
    tracking["status_after_ingestion"] = {"seconds": seconds, "heap_peak_mb": peak}
    _, seconds, peak = measured(campaign_figures, store, campaign.campaign_id)
    tracking["figures_after_ingestion"] = {"seconds": seconds, "heap_peak_mb": peak}
    return {
        "jobs": n_jobs,
        "tracking": tracking,
        "ingestion": ingestion,
        "accounting": {
            "jobs_done": status.jobs_by_state["done"],
            "events_generated": status.events_generated,
            "expected_events": n_reports * campaign.events_per_job,
            "exact": status.jobs_by_state["done"] == n_reports
            and status.events_generated == n_reports * campaign.events_per_job,
        },
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--reports", type=int, default=50_000)
    parser.add_argument("--max-requests", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/load.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartbkg-load-") as tmp:
        result = run(args.jobs, args.reports, args.max_requests, Path(tmp))
    document = {
        "command": "nice python benchmarks/bench_load.py",
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "note": "2 shared cores, other work running; monitor server in its own process",
        },
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
