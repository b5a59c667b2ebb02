"""Monitor benchmark: report ingestion into SQLite, and /metrics and page latency.

Builds a campaign of 10,000 reports (real JobReport objects: 9,000 jobs, 10% of attempts
failing first on 20 sites, with log tails and stage timings), then measures

- bulk ingestion of report objects into a fresh SQLite file (one transaction);
- ``collect DIR`` end to end: parse the report files and ingest them;
- the same reports delivered again (all duplicates);
- ``store.reports.record`` one report at a time, for comparison;
- HTTP latency of ``/metrics``, the campaign list, the campaign page and its JSON, served
  by the monitor with the 10k reports stored.

    nice python benchmarks/bench_monitor.py --out benchmarks/results/monitor.json

Target (issue 7): >= 5,000 reports/s into SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import sqlalchemy

from smartbkg_prod.monitor.collect import collect_directory, ingest_reports
from smartbkg_prod.monitor.figures import campaign_figures
from smartbkg_prod.monitor.web import start_server
from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.report import JobReport, Provenance
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import Store

TARGET_REPORTS_PER_S = 5000.0
T0 = 1_700_000_000.0


def bench_campaign(n_jobs: int, directory: Path) -> Campaign:
    return Campaign(
        name="bench",
        process="bbbar_generic",
        events=n_jobs * 1000,
        events_per_job=1000,
        seed=3,
        filter={"mode": "cut", "model": str(directory / "model.pt")},
        outputs={"directory": str(directory / "out")},
    )


def bench_reports(campaign: Campaign, n_reports: int) -> list[JobReport]:
    """``n_reports`` attempts: every tenth job fails once (OOM or stage-out) before succeeding."""
    jobs = plan_jobs(campaign)
    provenance = Provenance(
        campaign_id=campaign.campaign_id, spec_sha256="0" * 64, versions={"smartbkg-prod": "0.1.0"}
    )
    reports: list[JobReport] = []
    for job in jobs:
        site = f"T2_SITE{job.index % 20:02d}"
        finished = T0 + 3.0 * job.index
        attempts = [(60 if job.index % 20 == 0 else 50, site)] if job.index % 10 == 0 else []
        attempts.append((0, site))
        for attempt, (exit_code, where) in enumerate(attempts, start=1):
            ok = exit_code == 0
            reports.append(
                JobReport.for_job(
                    job,
                    campaign.name,
                    attempt,
                    backend="htcondor",
                    backend_job_id=f"{1000 + job.index}.{attempt}",
                    site=where,
                    host=f"wn{job.index % 500:03d}.{where.lower()}",
                    started_at=finished - 120 + attempt,
                    finished_at=finished + attempt,
                    wall_seconds=120.0,
                    cpu_seconds=110.0 if ok else 30.0,
                    stage_seconds={"generate": 0.1, "filter": 0.6, "simulate": 100.0, "skim": 5.0}
                    if ok
                    else {"generate": 0.1},
                    events_generated=1000 if ok else 0,
                    events_kept=310 if ok else 0,
                    events_simulated=310 if ok else 0,
                    events_skimmed=25 if ok else 0,
                    sum_weights_kept=310.0 if ok else 0.0,
                    sum_weights_skimmed=25.0 if ok else 0.0,
                    filter_mode="cut",
                    peak_rss_mb=1500.0,
                    memory_requested_mb=2000,
                    walltime_requested_s=3600,
                    exit_code=exit_code,
                    error_class="success"
                    if ok
                    else ("stage_out" if exit_code == 60 else "out_of_memory"),
                    error_message=""
                    if ok
                    else "peak memory 2600 MB after simulate exceeds 2000 MB",
                    log_tail=[f"2026-11-23 00:00:0{i} INFO stage line {i}" for i in range(8)],
                    provenance=provenance,
                )
            )
            if len(reports) == n_reports:
                return reports
    return reports


def fresh_store(directory: Path, name: str, campaign: Campaign) -> Store:
    path = directory / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store(f"sqlite:///{path}")
    store.campaigns.register(campaign, plan_jobs(campaign), directory / "out")
    return store


def latency(url: str, requests: int) -> dict[str, float]:
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        with urllib.request.urlopen(url) as response:
            size = len(response.read())
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {
        "requests": requests,
        "bytes": size,
        "first_s": samples[0] if requests == 1 else None,
        "median_s": statistics.median(samples),
        "p95_s": samples[min(len(samples) - 1, int(0.95 * len(samples)))],
        "max_s": samples[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/monitor.json"))
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument(
        "--one-by-one", type=int, default=1000, help="reports for the one-at-a-time baseline"
    )
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        directory = Path(tmp)
        n_jobs = int(args.reports / 1.1) + 1
        campaign = bench_campaign(n_jobs, directory)
        built = time.perf_counter()
        reports = bench_reports(campaign, args.reports)
        build_s = time.perf_counter() - built

        bulk = []
        for repeat in range(args.repeats):
            store = fresh_store(directory, f"bulk{repeat}", campaign)
            result = ingest_reports(store, reports)
            assert result.stored == len(reports), result
            bulk.append(result.seconds)
        store = fresh_store(directory, "bulk", campaign)
        ingest_reports(store, reports)
        again = ingest_reports(store, reports)
        assert again.duplicates == len(reports)
        status = store.campaigns.status(campaign.campaign_id)

        files_dir = directory / "out" / campaign.campaign_id
        files_dir.mkdir(parents=True)
        for report in reports:
            report.write(
                files_dir
                / f"{campaign.campaign_id}.job{report.job_index:06d}.attempt{report.attempt}.report.json"
            )
        collect = []
        for repeat in range(args.repeats):
            file_store = fresh_store(directory, f"files{repeat}", campaign)
            result = collect_directory(file_store, files_dir)
            assert result.stored == len(reports), result
            collect.append(result.seconds)

        single_store = fresh_store(directory, "single", campaign)
        start = time.perf_counter()
        for report in reports[: args.one_by_one]:
            single_store.reports.record(report)
        single_s = time.perf_counter() - start

        uncached = []
        for _ in range(5):
            start = time.perf_counter()
            campaign_figures(store, campaign.campaign_id, cached=False)
            uncached.append(time.perf_counter() - start)

        server, thread = start_server(store)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        pages = {
            "/metrics": "/metrics",
            "campaign list": "/",
            "campaign page": f"/campaign/{campaign.campaign_id}",
            "campaign JSON": f"/api/campaigns/{campaign.campaign_id}",
        }
        try:
            cold = {name: latency(base + path, 1)["first_s"] for name, path in pages.items()}
            served = {name: latency(base + path, args.requests) for name, path in pages.items()}
        finally:
            server.shutdown()
            thread.join()

    best_bulk = min(bulk)
    rate = len(reports) / best_bulk
    document = {
        "benchmark": "monitor: report ingestion into SQLite, /metrics and page latency",
        "command": "nice python benchmarks/bench_monitor.py --out benchmarks/results/monitor.json",
        "target_reports_per_s": TARGET_REPORTS_PER_S,
        "passed": rate >= TARGET_REPORTS_PER_S,
        "reports": len(reports),
        "jobs": n_jobs,
        "failed_attempts": sum(1 for r in reports if r.exit_code),
        "build_report_objects_s": build_s,
        "ingest_objects": {
            "seconds": bulk,
            "best_reports_per_s": rate,
            "median_reports_per_s": len(reports) / statistics.median(bulk),
        },
        "collect_files": {
            "seconds": collect,
            "best_reports_per_s": len(reports) / min(collect),
            "note": "parse + validate JSON files and ingest (collect_directory)",
        },
        "duplicates_again": {
            "seconds": again.seconds,
            "reports_per_s": len(reports) / again.seconds,
        },
        "record_report_one_by_one": {
            "reports": args.one_by_one,
            "seconds": single_s,
            "reports_per_s": args.one_by_one / single_s,
        },
        "stored_status": {
            "events_generated": status.events_generated,
            "failed_attempts": status.failed_attempts,
        },
        "figures_uncached_s": {
            "median": statistics.median(uncached),
            "max": max(uncached),
            "note": "campaign_figures(cached=False): the cost of every page or scrape while "
            "reports are arriving (the cache is only reused while the campaign is unchanged)",
        },
        "http_latency_with_reports_stored": {"cold_first_request_s": cold, **served},
        "machine": {
            "python": platform.python_version(),
            "sqlalchemy": sqlalchemy.__version__,
            "sqlite": __import__("sqlite3").sqlite_version,
            "cpus": os.cpu_count(),
            # The 2 cores are shared with other work: compare best-of-N, and mind the load.
            "load_average_1_5_15_min_at_start": load_at_start,
            "load_average_1_5_15_min_at_end": os.getloadavg(),
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(
        json.dumps(
            {k: document[k] for k in ("passed", "ingest_objects", "collect_files")}, indent=1
        )
    )
    for name, figures in served.items():
        print(
            f"{name:>14}: median {1000 * figures['median_s']:.1f} ms, p95 {1000 * figures['p95_s']:.1f} ms"
        )


if __name__ == "__main__":
    main()
